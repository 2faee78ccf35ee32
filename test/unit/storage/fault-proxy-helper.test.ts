import { createServer, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFaultProxy, type FaultKind, type FaultProxy } from '../../helpers/fault-proxy.ts';

/**
 * The storage fault sweep's proxy (test/helpers/fault-proxy.ts) counts a retry "on 404" only
 * when the client received that 404 whole: a 404 cut short in its body is no answer, and the
 * SDK rightly asks again. And a fault that cuts a request mid-upload ends that connection
 * without an unhandled rejection in the proxy.
 */

const NOT_FOUND = '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>NoSuchKey</Code><Message>The specified key does not exist.</Message></Error>';

interface Answer {
  status: number;
  body: string;
}

function send(endpoint: string, method: string, path: string, attempt: number, body?: Buffer): Promise<Answer> {
  const url = new URL(endpoint);
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = { 'amz-sdk-request': `attempt=${attempt}; max=8` };
    if (body !== undefined) headers['content-length'] = String(body.byteLength);
    const out = request({ host: url.hostname, port: url.port, method, path, headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('error', reject);
      res.on('aborted', () => reject(new Error('aborted')));
      res.on('end', () => (res.complete ? resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString() }) : reject(new Error('incomplete'))));
    });
    out.on('error', reject);
    out.end(body);
  });
}

describe('fault proxy accounting', () => {
  let upstream: Server;
  let endpoint: string;
  const proxies: FaultProxy[] = [];

  beforeAll(async () => {
    upstream = createServer((req, res) => {
      req.resume();
      req.on('end', () => {
        res.writeHead(404, { 'content-type': 'application/xml', 'content-length': String(Buffer.byteLength(NOT_FOUND)) });
        res.end(NOT_FOUND);
      });
    });
    await new Promise<void>((resolve) => upstream.listen(0, '127.0.0.1', resolve));
    endpoint = `http://127.0.0.1:${(upstream.address() as AddressInfo).port}`;
  });

  afterAll(async () => {
    for (const p of proxies) await p.stop();
    await new Promise<void>((resolve) => upstream.close(() => resolve()));
  });

  async function proxyWith(kind: FaultKind): Promise<FaultProxy> {
    const proxy = await startFaultProxy({ target: endpoint, random: () => 0, rate: 0, stallMs: 200, kinds: [kind] });
    proxies.push(proxy);
    return proxy;
  }

  it('a retry after a 404 cut mid-body (honest or by a reset) is a retry, not a retry on 404', async () => {
    for (const kind of ['truncateHonest', 'resetResponse'] as const) {
      const proxy = await proxyWith(kind);
      proxy.setRate(1);
      await expect(send(proxy.endpoint, 'GET', '/bucket/missing', 1)).rejects.toThrow();
      proxy.setRate(0);
      expect(await send(proxy.endpoint, 'GET', '/bucket/missing', 2)).toEqual({ status: 404, body: NOT_FOUND });
      expect(proxy.stats()).toMatchObject({ retries: 1, retriesOn404: 0 });
    }
  });

  it('a retry after a 404 the client received whole counts as a retry on 404', async () => {
    const proxy = await proxyWith('truncateDishonest');
    proxy.setRate(1);
    // Cut short with a Content-Length to match: the client has a complete (if garbled) 404.
    expect((await send(proxy.endpoint, 'GET', '/bucket/missing', 1)).status).toBe(404);
    proxy.setRate(0);
    await send(proxy.endpoint, 'GET', '/bucket/missing', 2);
    expect((await send(proxy.endpoint, 'GET', '/bucket/missing', 3)).status).toBe(404);
    expect(proxy.stats()).toMatchObject({ retries: 2, retriesOn404: 2 });
  });

  it('a reset mid-upload ends the connection, and the re-sent upload goes through', async () => {
    const proxy = await proxyWith('resetRequest');
    const body = Buffer.alloc(256 * 1024, 7);
    proxy.setRate(1);
    await expect(send(proxy.endpoint, 'PUT', '/bucket/object', 1, body)).rejects.toThrow();
    proxy.setRate(0);
    expect((await send(proxy.endpoint, 'PUT', '/bucket/object', 2, body)).status).toBe(404);
    expect(proxy.stats().faults.resetRequest).toBe(1);
    expect(proxy.stats()).toMatchObject({ retries: 1, retriesOn404: 0 });
  }, 10_000);
});
