#!/usr/bin/env node
// The container's health probe: GET one URL of `lethe daemon`'s HTTP server, exit 0 on a 2xx
// answer and 1 on anything else (no answer within the timeout, a refused connection, 503
// from /readyz). The image has no curl, and `lethe` itself would load the config and the
// whole CLI every few seconds; this loads only node:http.
//
//   node bin/lethe-probe.js [URL]        default http://127.0.0.1:9187/healthz
//
// /healthz needs no token. For /readyz, /metrics and the status page the daemon wants
// `Authorization: Bearer <token>` when `daemon.token` is set: the probe sends the value of
// LETHE_DAEMON_TOKEN, or the content of the file named by LETHE_DAEMON_TOKEN_FILE, never
// an argument (arguments are visible to every user of the host). It prints one line to
// stderr when it fails, naming the URL and what went wrong, never the token.
// LETHE_PROBE_TIMEOUT_MS (default 5000) bounds the whole request.
import { readFileSync } from 'node:fs';
import { request } from 'node:http';

const target = process.argv[2] ?? 'http://127.0.0.1:9187/healthz';
const fail = (why) => {
  process.stderr.write(`lethe-probe: ${target}: ${why}\n`);
  process.exit(1);
};

let url;
try {
  url = new URL(target);
} catch {
  fail('not a URL; give one like http://127.0.0.1:9187/healthz');
}
if (url.protocol !== 'http:') fail('only http:// is probed (the daemon serves plain HTTP)');

let token = process.env.LETHE_DAEMON_TOKEN ?? '';
const tokenFile = process.env.LETHE_DAEMON_TOKEN_FILE ?? '';
if (token === '' && tokenFile !== '') {
  try {
    token = readFileSync(tokenFile, 'utf8').trim();
  } catch (err) {
    fail(`cannot read LETHE_DAEMON_TOKEN_FILE ${tokenFile} (${err.code ?? 'error'})`);
  }
}
const timeoutMs = Number(process.env.LETHE_PROBE_TIMEOUT_MS ?? 5000);

const req = request(url, {
  method: 'GET',
  headers: token === '' ? {} : { authorization: `Bearer ${token}` },
  timeout: timeoutMs,
});
req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
req.on('error', (err) => fail(err.code ?? err.message));
req.on('response', (res) => {
  res.resume();
  const status = res.statusCode ?? 0;
  if (status >= 200 && status < 300) process.exit(0);
  fail(`HTTP ${status}${status === 401 ? ' (set LETHE_DAEMON_TOKEN or LETHE_DAEMON_TOKEN_FILE to the daemon token)' : ''}`);
});
req.end();
