import { createHmac, timingSafeEqual } from 'node:crypto';
import { chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer, type IncomingHttpHeaders, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Writable } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { parseConfig } from '../../../src/config/index.ts';
import { AlertsSchema, type AlertsConfig } from '../../../src/config/schema.ts';
import { isLetheError } from '../../../src/errors/index.ts';
import {
  AlertSender,
  drillFailedAlert,
  encodeAlert,
  erasePendingAlerts,
  jobFailedAlert,
  MAX_BODY_BYTES,
  parseRetryAfter,
  redactUrl,
  retryDelayMs,
  rpoBreachedAlert,
  verifyAlertSignature,
  type Alert,
} from '../../../src/daemon/alerts.ts';
import type { EraseRequest } from '../../../src/lifecycle/types.ts';
import { createLogger, type Logger } from '../../../src/log/index.ts';

const SECRET = 'whsec-test-0123456789abcdef';
const FAST = { baseMs: 10, capMs: 40 } as const;

/** What the receiver does with one request. */
type Behaviour =
  | { readonly status: number; readonly headers?: Record<string, string> }
  | 'reset'
  | 'stall'
  /** Waits until the test opens the gate, then answers 200. */
  | 'gate';

interface Received {
  readonly headers: IncomingHttpHeaders;
  readonly body: Buffer;
  readonly at: number;
  readonly url: string;
  /** The status sent back; undefined when the connection was reset or stalled. */
  status: number | undefined;
}

/**
 * A real HTTP receiver on 127.0.0.1 that answers the n-th request as `script[n]` says (the
 * last entry repeats), and records every request with its raw body.
 */
class Receiver {
  readonly requests: Received[] = [];
  readonly #server: Server;
  readonly #stalled = new Set<ServerResponse>();
  readonly #gated: (() => void)[] = [];
  url = '';

  private constructor(script: readonly Behaviour[]) {
    this.#server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (chunk: Buffer) => chunks.push(chunk));
      req.on('end', () => {
        const record: Received = { headers: req.headers, body: Buffer.concat(chunks), at: Date.now(), url: req.url ?? '', status: undefined };
        const behaviour = script[Math.min(this.requests.length, script.length - 1)] ?? { status: 200 };
        this.requests.push(record);
        if (behaviour === 'reset') {
          req.socket.destroy();
        } else if (behaviour === 'stall') {
          this.#stalled.add(res);
        } else if (behaviour === 'gate') {
          this.#gated.push(() => {
            record.status = 200;
            res.end('ok');
          });
        } else {
          record.status = behaviour.status;
          res.writeHead(behaviour.status, behaviour.headers).end('answer');
        }
      });
    });
  }

  static async start(script: readonly Behaviour[]): Promise<Receiver> {
    const receiver = new Receiver(script);
    await new Promise<void>((resolve) => receiver.#server.listen(0, '127.0.0.1', resolve));
    const { port } = receiver.#server.address() as AddressInfo;
    receiver.url = `http://127.0.0.1:${port}/hooks/lethe`;
    return receiver;
  }

  /** Requests the receiver answered with a 2xx. */
  accepted(): Received[] {
    return this.requests.filter((r) => r.status !== undefined && r.status >= 200 && r.status < 300);
  }

  openGate(): void {
    for (const release of this.#gated.splice(0)) release();
  }

  async close(): Promise<void> {
    for (const res of this.#stalled) res.destroy();
    this.openGate();
    this.#server.closeAllConnections();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }
}

function capture(): { log: Logger; text: () => string; lines: () => Record<string, unknown>[] } {
  const chunks: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, done) {
      chunks.push(chunk.toString('utf8'));
      done();
    },
  });
  const text = (): string => chunks.join('');
  return {
    log: createLogger('debug', stream),
    text,
    lines: () =>
      text()
        .split('\n')
        .filter((l) => l !== '')
        .map((l) => JSON.parse(l) as Record<string, unknown>),
  };
}

function alertsConfig(hooks: readonly Record<string, unknown>[]): AlertsConfig {
  return AlertsSchema.parse({ webhooks: hooks });
}

function hook(url: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { url, secret: { value: SECRET }, events: ['job_failed', 'drill_failed'], ...extra };
}

function failure(n = 0): Alert {
  return jobFailedAlert(
    { job: 'backup', slot: new Date(Date.UTC(2026, 2, 14, 6, n)), code: 'STORAGE', message: `bucket refused (${n})`, fix: 'check the credentials' },
    new Date(Date.UTC(2026, 2, 14, 6, n, 5)),
  );
}

/** An independent check of the signature, as a receiver would write it with node:crypto. */
function signatureValid(secret: string, header: string, body: Buffer): boolean {
  const match = /^t=(\d+),v1=([0-9a-f]{64})$/.exec(header);
  if (match === null) return false;
  const [, t = '', v1 = ''] = match;
  const expected = createHmac('sha256', secret).update(`${t}.`).update(body).digest();
  return timingSafeEqual(expected, Buffer.from(v1, 'hex'));
}

const cleanup: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const step of cleanup.splice(0).reverse()) await step();
});

async function receiver(script: readonly Behaviour[]): Promise<Receiver> {
  const r = await Receiver.start(script);
  cleanup.push(() => r.close());
  return r;
}

function sender(config: AlertsConfig, log: Logger, extra: { maxQueue?: number; backoff?: { baseMs: number; capMs: number } } = {}): AlertSender {
  const s = new AlertSender(config, { log, backoff: extra.backoff ?? FAST, instance: 'test-host', ...(extra.maxQueue === undefined ? {} : { maxQueue: extra.maxQueue }) });
  cleanup.push(() => s.flush(0));
  return s;
}

describe('AlertSender against a real receiver', () => {
  it('retries a 503 and a reset connection, then delivers exactly once, signed, with one delivery id', async () => {
    const r = await receiver([{ status: 503 }, 'reset', { status: 200 }]);
    const out = capture();
    const s = sender(alertsConfig([hook(r.url)]), out.log);
    const alert = failure();
    s.send(alert);
    await s.flush(10_000);

    expect(r.requests).toHaveLength(3);
    expect(r.accepted()).toHaveLength(1);
    expect(s.stats()).toEqual({ sent: 1, failed: 0, retries: 2, pending: 0, dropped: 0 });

    const ids = new Set(r.requests.map((q) => q.headers['x-lethe-delivery']));
    expect(ids.size).toBe(1);
    const bodies = new Set(r.requests.map((q) => q.body.toString('hex')));
    expect(bodies.size).toBe(1);

    const last = r.requests[2];
    if (last === undefined) throw new Error('no third request');
    const body = JSON.parse(last.body.toString('utf8')) as Record<string, unknown>;
    expect(body).toEqual({
      id: last.headers['x-lethe-delivery'],
      event: 'job_failed',
      key: 'job_failed:backup:2026-03-14T06:00:00.000Z',
      at: '2026-03-14T06:00:05.000Z',
      summary: alert.summary,
      details: { job: 'backup', slot: '2026-03-14T06:00:00.000Z', code: 'STORAGE', message: 'bucket refused (0)', fix: 'check the credentials' },
      source: { service: 'lethe', instance: 'test-host' },
    });
    expect(body['id']).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect(last.headers['x-lethe-event']).toBe('job_failed');
    expect(last.headers['content-type']).toBe('application/json');

    for (const request of r.requests) {
      const header = String(request.headers['x-lethe-signature']);
      expect(header).toMatch(/^t=\d+,v1=[0-9a-f]{64}$/);
      expect(signatureValid(SECRET, header, request.body)).toBe(true);
      expect(signatureValid('another-secret', header, request.body)).toBe(false);
      expect(verifyAlertSignature(SECRET, header, request.body, 300)).toBe(true);
      expect(verifyAlertSignature('another-secret', header, request.body, 300)).toBe(false);
      const tampered = Buffer.from(request.body.toString('utf8').replace('"backup"', '"restore"'));
      expect(verifyAlertSignature(SECRET, header, tampered, 300)).toBe(false);
    }
    // Two retries logged, the secret nowhere.
    expect(out.lines().filter((l) => l['msg'] === 'alert delivery failed; will retry')).toHaveLength(2);
    expect(out.text()).not.toContain(SECRET);
  });

  it('does not retry a 400, and logs the refusal once at warn', async () => {
    const r = await receiver([{ status: 400 }, { status: 200 }]);
    const out = capture();
    const s = sender(alertsConfig([hook(r.url)]), out.log);
    s.send(failure());
    await s.flush(5_000);
    expect(r.requests).toHaveLength(1);
    expect(s.stats()).toEqual({ sent: 0, failed: 1, retries: 0, pending: 0, dropped: 0 });
    const warnings = out.lines().filter((l) => l['level'] === 40);
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatchObject({ status: 400, webhook: r.url, event: 'job_failed' });
  });

  it('does not follow a redirect with the signed body', async () => {
    const target = await receiver([{ status: 200 }]);
    const r = await receiver([{ status: 307, headers: { location: target.url } }]);
    const s = sender(alertsConfig([hook(r.url)]), capture().log);
    s.send(failure());
    await s.flush(5_000);
    expect(target.requests).toHaveLength(0);
    expect(s.stats()).toMatchObject({ sent: 0, failed: 1, retries: 0 });
  });

  it('gives up after maxAttempts and counts the delivery failed', async () => {
    const r = await receiver([{ status: 500 }]);
    const out = capture();
    const s = sender(alertsConfig([hook(r.url, { maxAttempts: 3 })]), out.log);
    s.send(failure());
    await s.flush(5_000);
    expect(r.requests).toHaveLength(3);
    expect(s.stats()).toEqual({ sent: 0, failed: 1, retries: 2, pending: 0, dropped: 0 });
    expect(out.lines().filter((l) => l['level'] === 50)).toHaveLength(1);
  });

  it('honours a 429 Retry-After up to the cap', async () => {
    const r = await receiver([{ status: 429, headers: { 'retry-after': '1' } }, { status: 200 }]);
    const s = sender(alertsConfig([hook(r.url)]), capture().log, { backoff: { baseMs: 1, capMs: 5_000 } });
    s.send(failure());
    await s.flush(10_000);
    const [first, second] = r.requests;
    if (first === undefined || second === undefined) throw new Error('expected two requests');
    expect(second.at - first.at).toBeGreaterThanOrEqual(950);
    expect(s.stats()).toMatchObject({ sent: 1, retries: 1 });

    // With a 40 ms cap, a Retry-After of an hour waits 40 ms.
    const r2 = await receiver([{ status: 429, headers: { 'retry-after': '3600' } }, { status: 200 }]);
    const s2 = sender(alertsConfig([hook(r2.url)]), capture().log);
    const started = Date.now();
    s2.send(failure());
    await s2.flush(10_000);
    expect(r2.accepted()).toHaveLength(1);
    expect(Date.now() - started).toBeLessThan(2_000);
  });

  it('retries an attempt that gets no answer within timeoutSeconds', async () => {
    const r = await receiver(['stall', { status: 200 }]);
    const s = sender(alertsConfig([hook(r.url, { timeoutSeconds: 1 })]), capture().log);
    const started = Date.now();
    s.send(failure());
    await s.flush(10_000);
    expect(Date.now() - started).toBeGreaterThanOrEqual(950);
    expect(r.requests).toHaveLength(2);
    expect(r.accepted()).toHaveLength(1);
    expect(new Set(r.requests.map((q) => q.headers['x-lethe-delivery'])).size).toBe(1);
    expect(s.stats()).toMatchObject({ sent: 1, retries: 1, failed: 0 });
  });

  it('send() returns at once while the receiver stalls; flush stops at its deadline and counts the rest dropped', async () => {
    const r = await receiver(['stall']);
    const out = capture();
    const s = sender(alertsConfig([hook(r.url, { timeoutSeconds: 60 })]), out.log);
    const started = performance.now();
    for (let n = 0; n < 50; n += 1) s.send(failure(n));
    expect(performance.now() - started).toBeLessThan(100);
    expect(s.stats()).toMatchObject({ pending: 50, sent: 0 });

    await waitFor(() => r.requests.length === 1);
    const flushStarted = Date.now();
    await s.flush(300);
    const took = Date.now() - flushStarted;
    expect(took).toBeGreaterThanOrEqual(290);
    expect(took).toBeLessThan(2_000);
    expect(s.stats()).toEqual({ sent: 0, failed: 0, retries: 0, pending: 0, dropped: 50 });
    expect(out.lines().some((l) => l['dropped'] === 50 && l['level'] === 40)).toBe(true);

    // After flush, alerts are not sent.
    s.send(failure(99));
    expect(s.stats()).toMatchObject({ pending: 0, dropped: 51 });
  });

  it('flush cuts a backoff wait short at the deadline', async () => {
    const r = await receiver([{ status: 503 }]);
    const s = sender(alertsConfig([hook(r.url)]), capture().log, { backoff: { baseMs: 60_000, capMs: 60_000 } });
    s.send(failure());
    await waitFor(() => s.stats().retries === 1);
    const started = Date.now();
    await s.flush(200);
    expect(Date.now() - started).toBeLessThan(1_500);
    expect(r.requests).toHaveLength(1);
    expect(s.stats()).toMatchObject({ pending: 0, dropped: 1, sent: 0 });
  });

  it('holds a webhook queue to maxQueue, dropping the oldest waiting alert', async () => {
    const r = await receiver(['gate', { status: 200 }]);
    const out = capture();
    const s = sender(alertsConfig([hook(r.url)]), out.log, { maxQueue: 5 });
    for (let n = 0; n < 20; n += 1) s.send(failure(n));
    // One in flight (held at the gate) and five waiting.
    expect(s.stats()).toMatchObject({ pending: 6, dropped: 14 });
    await waitFor(() => r.requests.length === 1);
    r.openGate();
    await s.flush(10_000);
    const keys = r.requests.map((q) => (JSON.parse(q.body.toString('utf8')) as { details: { message: string } }).details.message);
    expect(keys).toEqual([0, 15, 16, 17, 18, 19].map((n) => `bucket refused (${n})`));
    expect(s.stats()).toEqual({ sent: 6, failed: 0, retries: 0, pending: 0, dropped: 14 });
    expect(out.lines().filter((l) => l['msg'] === 'alert queue full (the receiver is down or slow): dropped the oldest alert')).toHaveLength(14);
  });

  it('sends each event only to the webhooks subscribed to it', async () => {
    const drills = await receiver([{ status: 204 }]);
    const all = await receiver([{ status: 200 }]);
    const config = alertsConfig([
      hook(drills.url, { events: ['drill_failed'] }),
      hook(all.url, { events: ['job_failed', 'drill_failed', 'rpo_breached'] }),
    ]);
    const s = sender(config, capture().log);
    s.send(failure());
    s.send(drillFailedAlert({ snapshot: 'snap-1', findings: [{ code: 'DIGEST' }], rtoSeconds: 12 }));
    s.send({ ...failure(), event: 'audit_chain_broken', key: 'audit_chain_broken:4' });
    await s.flush(5_000);
    expect(drills.requests.map((q) => q.headers['x-lethe-event'])).toEqual(['drill_failed']);
    expect(all.requests.map((q) => q.headers['x-lethe-event'])).toEqual(['job_failed', 'drill_failed']);
    expect(s.stats()).toMatchObject({ sent: 3, failed: 0 });
  });

  it('never logs the secret, credentials in the URL or its query', async () => {
    const r = await receiver([{ status: 503 }, { status: 401 }]);
    const out = capture();
    const url = r.url.replace('http://', 'http://hookuser:url-password@') + '?token=query-token';
    const s = sender(alertsConfig([hook(url)]), out.log);
    s.send(failure());
    await s.flush(5_000);
    expect(r.requests).toHaveLength(2);
    // The credentials do reach the receiver, as HTTP basic auth; only logs leave them out.
    expect(r.requests[0]?.headers.authorization).toBe(`Basic ${Buffer.from('hookuser:url-password').toString('base64')}`);
    expect(r.requests[0]?.url).toBe('/hooks/lethe?token=query-token');
    const text = out.text();
    expect(text).toContain(`http://[redacted]@${new URL(r.url).host}/hooks/lethe?[redacted]`);
    for (const secret of [SECRET, 'url-password', 'hookuser', 'query-token']) expect(text).not.toContain(secret);
  });
});

describe('webhook secrets', () => {
  it('reads a 0600 secret file, and refuses a file others can read, naming the field and the fix', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'lethe-alerts-'));
    cleanup.push(() => rm(dir, { recursive: true, force: true }));
    const file = join(dir, 'hook.secret');
    await writeFile(file, `${SECRET}\n`, { mode: 0o600 });
    const r = await receiver([{ status: 200 }]);
    const config = alertsConfig([{ url: r.url, secret: { file }, events: ['job_failed'] }]);

    const good = await AlertSender.open(config, { log: capture().log, backoff: FAST });
    good.send(failure());
    await good.flush(5_000);
    const request = r.requests[0];
    if (request === undefined) throw new Error('nothing received');
    expect(verifyAlertSignature(SECRET, String(request.headers['x-lethe-signature']), request.body, 60)).toBe(true);

    await chmod(file, 0o644);
    await expect(AlertSender.open(config, { log: capture().log })).rejects.toMatchObject({
      code: 'CONFIG_INVALID',
      message: expect.stringMatching(/alerts\.webhooks\.0\.secret\.file.*chmod 600/) as unknown,
    });

    // Constructed without open(), the unreadable secret fails the delivery, not send().
    const out = capture();
    const lazy = sender(config, out.log);
    lazy.send(failure());
    await lazy.flush(5_000);
    expect(r.requests).toHaveLength(1);
    expect(lazy.stats()).toMatchObject({ sent: 0, failed: 1 });
    expect(out.text()).toContain('chmod 600');
  });
});

describe("docs/operations.md's receiver example", () => {
  it('verifies a real delivery and refuses a wrong secret or a changed body', async () => {
    const doc = await readFile(new URL('../../../docs/operations.md', import.meta.url), 'utf8');
    const code = /<!-- verify-example -->\n```js\n([\s\S]*?)```/.exec(doc)?.[1];
    if (code === undefined) throw new Error('docs/operations.md has no verify-example block');
    expect(code.trim().split('\n').length).toBeLessThanOrEqual(10);
    const dir = await mkdtemp(join(tmpdir(), 'lethe-alerts-doc-'));
    cleanup.push(() => rm(dir, { recursive: true, force: true }));
    const file = join(dir, 'verify.mjs');
    await writeFile(file, code);
    const { verifyLethe } = (await import(pathToFileURL(file).href)) as {
      verifyLethe: (secret: string, header: string, body: Buffer) => boolean;
    };

    const r = await receiver([{ status: 200 }]);
    const s = sender(alertsConfig([hook(r.url)]), capture().log);
    s.send(failure());
    await s.flush(5_000);
    const request = r.requests[0];
    if (request === undefined) throw new Error('nothing received');
    const header = String(request.headers['x-lethe-signature']);
    expect(verifyLethe(SECRET, header, request.body)).toBe(true);
    expect(verifyLethe('another-secret', header, request.body)).toBe(false);
    expect(verifyLethe(SECRET, header, Buffer.concat([request.body, Buffer.from(' ')]))).toBe(false);
    expect(verifyLethe(SECRET, header.replace(/t=\d+/, 't=1000'), request.body)).toBe(false);
  });
});

describe('verifyAlertSignature', () => {
  const body = Buffer.from('{"id":"x"}');
  const t = 1_773_000_000;
  const v1 = createHmac('sha256', SECRET).update(`${t}.{"id":"x"}`).digest('hex');

  it('accepts a fresh, correct signature, also among several v1 values (a secret rotation)', () => {
    expect(verifyAlertSignature(SECRET, `t=${t},v1=${v1}`, body, 300, t + 10)).toBe(true);
    expect(verifyAlertSignature(SECRET, `t=${t},v1=${'0'.repeat(64)},v1=${v1}`, body, 300, t)).toBe(true);
    expect(verifyAlertSignature(SECRET, `t=${t}, v1=${v1}`, body.toString('utf8'), 300, t)).toBe(true);
  });

  it('refuses a stale or future timestamp, a wrong secret, a changed body and malformed headers', () => {
    expect(verifyAlertSignature(SECRET, `t=${t},v1=${v1}`, body, 300, t + 301)).toBe(false);
    expect(verifyAlertSignature(SECRET, `t=${t},v1=${v1}`, body, 300, t - 301)).toBe(false);
    expect(verifyAlertSignature('wrong', `t=${t},v1=${v1}`, body, 300, t)).toBe(false);
    expect(verifyAlertSignature(SECRET, `t=${t},v1=${v1}`, Buffer.from('{"id":"y"}'), 300, t)).toBe(false);
    expect(verifyAlertSignature(SECRET, `t=${t + 1},v1=${v1}`, body, 300, t)).toBe(false);
    for (const header of [undefined, '', `v1=${v1}`, `t=${t}`, `t=abc,v1=${v1}`, `t=${t},v1=${v1.slice(2)}`, `t=${t},v1`, `t=${t},v1=${v1}zz`]) {
      expect(verifyAlertSignature(SECRET, header, body, 300, t)).toBe(false);
    }
    expect(verifyAlertSignature('', `t=${t},v1=${v1}`, body, 300, t)).toBe(false);
  });
});

describe('alert helpers', () => {
  it('backs off with full jitter below an exponential bound and the cap', () => {
    const backoff = { baseMs: 1_000, capMs: 300_000 };
    expect(retryDelayMs(1, undefined, backoff, () => 0.999)).toBeCloseTo(999, 0);
    expect(retryDelayMs(4, undefined, backoff, () => 0.5)).toBe(4_000);
    expect(retryDelayMs(30, undefined, backoff, () => 0.999)).toBeCloseTo(299_700, 0);
    expect(retryDelayMs(3, undefined, backoff, () => 0)).toBe(0);
    expect(retryDelayMs(3, 7_000, backoff, () => 0)).toBe(7_000);
    expect(retryDelayMs(3, 3_600_000, backoff, () => 0)).toBe(300_000);
  });

  it('parses Retry-After as seconds or an HTTP date', () => {
    const now = Date.UTC(2026, 2, 14, 12, 0, 0);
    expect(parseRetryAfter('120', now)).toBe(120_000);
    expect(parseRetryAfter('Sat, 14 Mar 2026 12:00:30 GMT', now)).toBe(30_000);
    expect(parseRetryAfter('Sat, 14 Mar 2026 11:00:00 GMT', now)).toBe(0);
    expect(parseRetryAfter('soon', now)).toBeUndefined();
    expect(parseRetryAfter('-5', now)).toBeUndefined();
    expect(parseRetryAfter(undefined, now)).toBeUndefined();
  });

  it('redacts userinfo and query from URLs for logs', () => {
    expect(redactUrl(new URL('https://a:b@hooks.example.com:8443/x/y?sig=1#f'))).toBe('https://[redacted]@hooks.example.com:8443/x/y?[redacted]');
    expect(redactUrl(new URL('https://hooks.example.com/x'))).toBe('https://hooks.example.com/x');
  });

  it('scrubs secrets from strings in the body and truncates oversized details', () => {
    const alert = jobFailedAlert({ job: 'backup', slot: new Date(0), code: 'DATABASE', message: 'connect postgres://lethe:hunter2@db/vault failed' });
    const body = encodeAlert(alert, 'id-1', 'h').toString('utf8');
    expect(body).not.toContain('hunter2');
    expect(body).toContain('postgres://lethe:[redacted]@db/vault');

    const huge = { ...alert, details: { blob: 'x'.repeat(MAX_BODY_BYTES) } };
    const encoded = encodeAlert(huge, 'id-2', 'h');
    expect(encoded.length).toBeLessThanOrEqual(MAX_BODY_BYTES);
    expect((JSON.parse(encoded.toString('utf8')) as { details: unknown }).details).toEqual({ truncated: true, detailBytes: MAX_BODY_BYTES + 11 });
  });

  it('counts an alert that cannot be encoded as failed, without throwing from send()', async () => {
    const r = await receiver([{ status: 200 }]);
    const s = sender(alertsConfig([hook(r.url)]), capture().log);
    expect(() => s.send({ ...failure(), at: new Date(Number.NaN) })).not.toThrow();
    expect(() => s.send({ ...failure(), details: { n: 1n } })).not.toThrow();
    await s.flush(1_000);
    expect(r.requests).toHaveLength(0);
    expect(s.stats()).toMatchObject({ failed: 2, sent: 0, pending: 0 });
  });

  it('builds RPO and drill alerts whose keys stay stable while the condition lasts', () => {
    const a = rpoBreachedAlert({ rpoSeconds: 90_000, objectiveSeconds: 86_400, newestSnapshot: 's-1' });
    const b = rpoBreachedAlert({ rpoSeconds: 99_000, objectiveSeconds: 86_400, newestSnapshot: 's-1' });
    expect(a.key).toBe(b.key);
    expect(a.summary).toContain('25 hours old');
    expect(rpoBreachedAlert({ rpoSeconds: 0, objectiveSeconds: 60, newestSnapshot: null }).key).toBe('rpo_breached:none');
    const findings = [
      { code: 'DIGEST', subject: 'cell t1/messages/2026-03/u%2F7' },
      { code: 'DIGEST', subject: 'x' },
      { code: 'ROWS', subject: 'y' },
    ];
    const drill = drillFailedAlert({ snapshot: 's-2', findings, rtoSeconds: 41 });
    expect(drill.details).toEqual({ snapshot: 's-2', findings: 3, findingCodes: { DIGEST: 2, ROWS: 1 }, rtoSeconds: 41 });
    expect(JSON.stringify(drill)).not.toContain('u%2F7');
  });

  it('selects deletion requests waiting at least erasePendingDays, leaving out their subject', () => {
    const now = new Date('2026-03-20T00:00:00Z');
    const request = (id: string, status: EraseRequest['status'], requestedAt: string): EraseRequest => ({
      id,
      tenant: 't1',
      scope: 'user',
      subject: 'user-secret-id',
      reason: 'art. 17',
      requestedBy: 'dpo',
      requestedAt: new Date(requestedAt),
      status,
      approvedBy: null,
      approvedAt: null,
      executedAt: null,
    });
    const alerts = erasePendingAlerts(
      [
        request('er-old', 'pending', '2026-03-12T00:00:00Z'),
        request('er-edge', 'approved', '2026-03-13T00:00:00Z'),
        request('er-new', 'pending', '2026-03-13T00:00:01Z'),
        request('er-done', 'executed', '2026-01-01T00:00:00Z'),
      ],
      now,
      7,
    );
    expect(alerts.map((a) => [a.key, a.details['ageDays'], a.details['status']])).toEqual([
      ['erase_request_pending:er-old', 8, 'pending'],
      ['erase_request_pending:er-edge', 7, 'approved'],
    ]);
    expect(alerts[0]?.details).toEqual({ requestId: 'er-old', tenant: 't1', scope: 'user', status: 'pending', requestedAt: '2026-03-12T00:00:00.000Z', ageDays: 8 });
    expect(JSON.stringify(alerts)).not.toContain('user-secret-id');
  });
});

describe('alerts config', () => {
  const base = {
    // Loopback databases: the config refuses a remote one without TLS.
    chatStore: { database: { url: 'postgres://reader@127.0.0.1/chat' } },
    vault: { database: { url: 'postgres://lethe@127.0.0.1/vault' } },
    storage: { type: 'filesystem', path: './objects' },
    masterKey: { file: './master.key' },
  };
  const refusal = (alerts: unknown): string => {
    try {
      parseConfig({ ...base, alerts }, '/etc/lethe', { HOOK_SECRET: 's' });
    } catch (err) {
      if (isLetheError(err, 'CONFIG_INVALID')) return err.message;
      throw err;
    }
    throw new Error('expected the alerts section to be refused');
  };

  it('is optional, fills defaults and resolves a relative secret file against the config directory', () => {
    expect(parseConfig(base, '/etc/lethe', {}).alerts).toBeUndefined();
    const config = parseConfig(
      { ...base, alerts: { webhooks: [{ url: 'https://hooks.example.com/lethe', secret: { file: 'hook.secret' }, events: ['rpo_breached'] }, { url: 'http://127.0.0.1:9/x', secret: { value: '${HOOK_SECRET}' }, events: ['job_failed'] }] } },
      '/etc/lethe',
      { HOOK_SECRET: 'from-env' },
    );
    expect(config.alerts).toEqual({
      erasePendingDays: 7,
      webhooks: [
        { url: 'https://hooks.example.com/lethe', secret: { file: '/etc/lethe/hook.secret' }, events: ['rpo_breached'], timeoutSeconds: 10, maxAttempts: 6, allowInsecure: false },
        { url: 'http://127.0.0.1:9/x', secret: { value: 'from-env' }, events: ['job_failed'], timeoutSeconds: 10, maxAttempts: 6, allowInsecure: false },
      ],
    });
  });

  it('config/lethe.example.yaml has an alerts section that parses to the documented settings', async () => {
    const { parse } = await import('yaml');
    const raw = parse(await readFile(new URL('../../../config/lethe.example.yaml', import.meta.url), 'utf8')) as Record<string, unknown>;
    const env = {
      CHAT_STORE_PASSWORD: 'x',
      VAULT_PASSWORD: 'x',
      LETHE_S3_ACCESS_KEY_ID: 'x',
      LETHE_S3_SECRET_ACCESS_KEY: 'x',
      CHAT_FILES_ACCESS_KEY_ID: 'x',
      CHAT_FILES_SECRET_ACCESS_KEY: 'x',
    };
    expect(parseConfig(raw, '/etc/lethe', env).alerts).toEqual({
      erasePendingDays: 7,
      webhooks: [
        {
          url: 'https://alerts.example.com/lethe',
          secret: { file: '/etc/lethe/alert-webhook.secret' },
          events: ['job_failed', 'rpo_breached', 'drill_failed', 'audit_chain_broken', 'erase_request_pending'],
          timeoutSeconds: 10,
          maxAttempts: 6,
          allowInsecure: false,
        },
      ],
    });
  });

  it('refuses plain http to another host unless allowInsecure, and says so', () => {
    const hookOf = (url: string, extra: Record<string, unknown> = {}): unknown => ({ webhooks: [{ url, secret: { value: 'x' }, events: ['job_failed'], ...extra }] });
    expect(refusal(hookOf('http://alerts.example.com/lethe'))).toMatch(/`alerts\.webhooks\.0\.url`: .*https.*allowInsecure: true/);
    for (const ok of ['http://localhost:8080/x', 'http://127.0.0.2/x', 'http://[::1]:81/x', 'https://alerts.example.com/x']) {
      expect(parseConfig({ ...base, alerts: hookOf(ok) }, '/', {}).alerts?.webhooks[0]?.url).toBe(ok);
    }
    expect(parseConfig({ ...base, alerts: hookOf('http://10.0.0.5/x', { allowInsecure: true }) }, '/', {}).alerts?.webhooks[0]?.allowInsecure).toBe(true);
    expect(refusal(hookOf('ftp://alerts.example.com/x'))).toContain('`alerts.webhooks.0.url`');
  });

  it('refuses unknown events, an empty event list, unknown keys and out-of-range numbers', () => {
    const one = (extra: Record<string, unknown>): unknown => ({ webhooks: [{ url: 'https://h.example/x', secret: { value: 'x' }, events: ['job_failed'], ...extra }] });
    expect(refusal(one({ events: ['backup_failed'] }))).toContain('`alerts.webhooks.0.events.0`: use one of job_failed, rpo_breached');
    expect(refusal(one({ events: [] }))).toContain('`alerts.webhooks.0.events`: list at least one event');
    expect(refusal(one({ retries: 3 }))).toContain('`retries`');
    expect(refusal(one({ timeoutSeconds: 0 }))).toContain('`alerts.webhooks.0.timeoutSeconds`');
    expect(refusal(one({ maxAttempts: 100 }))).toContain('`alerts.webhooks.0.maxAttempts`');
    expect(refusal(one({ secret: 'plain' }))).toContain('`alerts.webhooks.0.secret`');
    expect(refusal({ erasePendingDays: 0 })).toContain('`alerts.erasePendingDays`');
  });
});

async function waitFor(condition: () => boolean, timeoutMs = 5_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > until) throw new Error('condition not reached in time');
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}
