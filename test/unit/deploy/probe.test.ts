import { execFile } from 'node:child_process';
import { once } from 'node:events';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ROOT } from './support.ts';

const PROBE = fileURLToPath(new URL('bin/lethe-probe.js', ROOT));
const TOKEN = 'probe-test-token-5f1c';

/** Runs the probe as the HEALTHCHECK and the readiness probe do; resolves with its exit code and stderr. */
function probe(url: string | undefined, env: Record<string, string> = {}): Promise<{ code: number; stderr: string; stdout: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, url === undefined ? [PROBE] : [PROBE, url], { env: { PATH: process.env['PATH'] ?? '', ...env } }, (err, stdout, stderr) => {
      resolve({ code: err === null ? 0 : typeof err.code === 'number' ? err.code : -1, stdout, stderr });
    });
  });
}

/**
 * bin/lethe-probe.js, the container's health probe: exit 0 only on a 2xx answer, the token
 * from the environment or a file (never an argument), one line naming the URL and the
 * cause on failure, never the token.
 */
describe('bin/lethe-probe.js', () => {
  let server: Server;
  let base: string;
  let dir: string;
  const stalled: import('node:http').ServerResponse[] = [];

  beforeAll(async () => {
    server = createServer((req, res) => {
      const authorized = req.headers.authorization === `Bearer ${TOKEN}`;
      if (req.url === '/healthz') res.writeHead(200).end('ok');
      else if (req.url === '/readyz') res.writeHead(authorized ? 200 : 401).end();
      else if (req.url === '/notready') res.writeHead(503).end('vault unreachable');
      else if (req.url === '/stall') stalled.push(res);
      else res.writeHead(404).end();
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    dir = await mkdtemp(join(tmpdir(), 'lethe-probe-'));
  });
  afterAll(async () => {
    for (const res of stalled) res.destroy();
    server.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('exits 0 on /healthz without a token', async () => {
    expect(await probe(`${base}/healthz`)).toEqual({ code: 0, stdout: '', stderr: '' });
  });

  it('probes http://127.0.0.1:9187/healthz when given no URL', async () => {
    const result = await probe(undefined);
    // Nothing of ours listens there in the test; the point is which URL it names.
    expect(result.stderr).toMatch(/^lethe-probe: http:\/\/127\.0\.0\.1:9187\/healthz: /);
  });

  it('sends the token from LETHE_DAEMON_TOKEN, or from the file LETHE_DAEMON_TOKEN_FILE names', async () => {
    const refused = await probe(`${base}/readyz`);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain('HTTP 401 (set LETHE_DAEMON_TOKEN or LETHE_DAEMON_TOKEN_FILE');
    expect((await probe(`${base}/readyz`, { LETHE_DAEMON_TOKEN: TOKEN })).code).toBe(0);
    await writeFile(join(dir, 'token'), `${TOKEN}\n`);
    await chmod(join(dir, 'token'), 0o600);
    expect((await probe(`${base}/readyz`, { LETHE_DAEMON_TOKEN_FILE: join(dir, 'token') })).code).toBe(0);
    const missing = await probe(`${base}/readyz`, { LETHE_DAEMON_TOKEN_FILE: join(dir, 'nope') });
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain('cannot read LETHE_DAEMON_TOKEN_FILE');
  });

  it('never prints the token', async () => {
    const wrong = await probe(`${base}/notready`, { LETHE_DAEMON_TOKEN: TOKEN });
    expect(wrong).toEqual({ code: 1, stdout: '', stderr: `lethe-probe: ${base}/notready: HTTP 503\n` });
    expect(wrong.stderr).not.toContain(TOKEN);
  });

  it('fails on a refused connection, a hung server and a bad URL, with one line each', async () => {
    const closed = createServer();
    closed.listen(0, '127.0.0.1');
    await once(closed, 'listening');
    const port = (closed.address() as AddressInfo).port;
    closed.close();
    await once(closed, 'close');
    expect(await probe(`http://127.0.0.1:${port}/healthz`)).toMatchObject({ code: 1, stderr: `lethe-probe: http://127.0.0.1:${port}/healthz: ECONNREFUSED\n` });

    const started = Date.now();
    const hung = await probe(`${base}/stall`, { LETHE_PROBE_TIMEOUT_MS: '300' });
    expect(hung).toMatchObject({ code: 1, stderr: `lethe-probe: ${base}/stall: no answer within 300 ms\n` });
    expect(Date.now() - started).toBeLessThan(5000);

    expect((await probe('not a url')).stderr).toContain('not a URL');
    expect((await probe('https://127.0.0.1:1/healthz')).stderr).toContain('only http://');
  });
});
