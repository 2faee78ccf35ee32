import { PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { createHash, randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { setImmediate as tick } from 'node:timers/promises';
import { inspect as nodeInspect } from 'node:util';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { ErrorCode } from '../../../src/errors/index.ts';
import { createS3Store, openStore, type ObjectStore } from '../../../src/storage/index.ts';
import { startS3rver, type S3rverHandle } from '../../helpers/s3.ts';
import { expectLetheError, runConformance } from './conformance.ts';
import { startRecordingProxy, type RecordingProxy } from './recording-proxy.ts';
import { inspectWithMinio, minioClient, PART_SIZE, s3Backend, storeOptions } from './s3-backend.ts';

const text = (value: string) => new Uint8Array(Buffer.from(value));
const sha256base64 = (data: Uint8Array) => createHash('sha256').update(data).digest('base64');

runConformance('s3rver', async () => {
  const server = await startS3rver();
  const quirks = new Set([
    'lists-in-walk-order',
    'no-multipart-cleanup',
    'empty-range-resets',
  ] as const);
  return s3Backend(server, quirks, server.stop);
});

describe('S3 store against s3rver', () => {
  let server: S3rverHandle;
  let proxy: RecordingProxy;
  const stores: ObjectStore[] = [];
  const prefix = `only-${randomBytes(4).toString('hex')}`;
  const open = (overrides: Partial<Parameters<typeof createS3Store>[0]> = {}) => {
    const store = createS3Store({ ...storeOptions(server, prefix), ...overrides });
    stores.push(store);
    return store;
  };
  const inspect = (key: string) =>
    inspectWithMinio(minioClient(server), server.bucket, `${prefix}/${key}`);

  beforeAll(async () => {
    server = await startS3rver();
    proxy = await startRecordingProxy(server.endpoint);
  });
  beforeEach(() => {
    proxy.requests.length = 0;
    proxy.addResponseHeaders = () => undefined;
  });
  afterAll(async () => {
    await Promise.all(stores.map((store) => store.close()));
    await proxy.stop();
    await server.stop();
  });

  it('describes itself without credentials', async () => {
    const store = await openStore({ type: 's3', ...storeOptions(server, 'env/prod/') });
    stores.push(store);
    expect(store.kind).toBe('s3');
    expect(store.description).toBe(`s3://${server.bucket}/env/prod/ at ${server.endpoint}`);
    const withUserInfo = open({ endpoint: server.endpoint.replace('//', '//user:pw@') });
    expect(withUserInfo.description).not.toMatch(/user|pw|S3RVER/);
  });

  it('keeps credentials out of errors, their details and their causes', async () => {
    const accessKeyId = 'AKIALETHETESTKEY0001';
    const secretAccessKey = 'lethe/Test+Secret/Value/0123456789abcdef';
    const store = open({ accessKeyId, secretAccessKey, sessionToken: 'lethe-session-token-xyz' });
    const err = await expectLetheError(store.getBytes('some/key'), ErrorCode.STORAGE);
    expect(err.message).toMatch(/^get s3:\/\/lethe-test\/only-[0-9a-f]+\/some\/key failed: /);
    expect(err.details).toMatchObject({ operation: 'get', bucket: 'lethe-test' });
    const everything = [err.message, JSON.stringify(err.details), nodeInspect(err, { depth: 10 })];
    for (const secret of [accessKeyId, secretAccessKey, 'lethe-session-token-xyz']) {
      for (const shown of everything) expect(shown).not.toContain(secret);
    }
  });

  it('reports a missing bucket as STORAGE, not as a missing object', async () => {
    const store = open({ bucket: 'no-such-bucket' });
    await expectLetheError(
      store.getBytes('k'),
      ErrorCode.STORAGE,
      /NoSuchBucket.*check the bucket/,
    );
  });

  it('names the multipart upload s3rver cannot abort when a put fails', async () => {
    const store = open();
    const body = (async function* () {
      yield new Uint8Array(randomBytes(PART_SIZE + 1));
      await tick();
      throw new Error('source broke');
    })();
    await expectLetheError(
      store.put('quirk/fail', body),
      ErrorCode.STORAGE,
      /source broke.*could not be aborted.*MethodNotAllowed/,
    );
    expect(await inspect('quirk/fail')).toBeNull();
  });

  it("shows why lethe turns off the SDK's streaming checksums: s3rver stores the chunk framing", async () => {
    const client = new S3Client({
      endpoint: server.endpoint,
      region: 'us-east-1',
      forcePathStyle: true,
      credentials: { accessKeyId: server.accessKeyId, secretAccessKey: server.secretAccessKey },
    });
    try {
      await client.send(
        new PutObjectCommand({
          Bucket: server.bucket,
          Key: `${prefix}/quirk/chunked`,
          Body: Readable.from([Buffer.from('hello')]),
          ContentLength: 5,
        }),
      );
    } finally {
      client.destroy();
    }
    const stored = Buffer.from((await inspect('quirk/chunked')) ?? []).toString();
    expect(stored).not.toBe('hello');
    expect(stored).toContain('x-amz-checksum-crc32');
    // The same body through lethe's store arrives intact.
    await open().put('quirk/plain', Readable.from([Buffer.from('hello')]));
    expect(Buffer.from((await inspect('quirk/plain')) ?? []).toString()).toBe('hello');
  });

  describe('object lock on the wire', () => {
    const retainUntil = new Date('2031-02-03T04:05:06.000Z');
    const lockHeaders = (headers: Record<string, unknown>) =>
      Object.keys(headers).filter((name) => name.startsWith('x-amz-object-lock'));
    const proxied = () => open({ endpoint: proxy.endpoint });

    it('sends mode, date and a SHA-256 checksum on a single PUT', async () => {
      const data = text('locked pack');
      await proxied().put('lk/small', data, { lock: { mode: 'COMPLIANCE', retainUntil } });
      const puts = proxy.requests.filter((r) => r.method === 'PUT');
      expect(puts).toHaveLength(1);
      const headers = puts[0]?.headers ?? {};
      expect(headers['x-amz-object-lock-mode']).toBe('COMPLIANCE');
      expect(new Date(String(headers['x-amz-object-lock-retain-until-date'])).toISOString()).toBe(
        retainUntil.toISOString(),
      );
      expect(headers['x-amz-checksum-sha256']).toBe(sha256base64(data));
      expect(await inspect('lk/small')).toEqual(data);
    });

    it('sends mode and date when starting a multipart upload, and a checksum with every part', async () => {
      const data = new Uint8Array(randomBytes(PART_SIZE * 2 + 100));
      await proxied().put('lk/big', data, { lock: { mode: 'GOVERNANCE', retainUntil } });
      const create = proxy.requests.filter((r) => r.method === 'POST' && r.url.includes('uploads'));
      expect(create).toHaveLength(1);
      expect(create[0]?.headers['x-amz-object-lock-mode']).toBe('GOVERNANCE');
      expect(
        new Date(String(create[0]?.headers['x-amz-object-lock-retain-until-date'])).toISOString(),
      ).toBe(retainUntil.toISOString());
      const parts = proxy.requests
        .filter((r) => r.method === 'PUT' && r.url.includes('partNumber='))
        .map((r) => ({
          number: Number(new URL(r.url, 'http://x').searchParams.get('partNumber')),
          checksum: r.headers['x-amz-checksum-sha256'],
        }))
        .sort((a, b) => a.number - b.number);
      expect(parts).toEqual(
        [0, 1, 2].map((i) => ({
          number: i + 1,
          checksum: sha256base64(data.subarray(i * PART_SIZE, (i + 1) * PART_SIZE)),
        })),
      );
      const stored = await inspect('lk/big');
      expect(stored && sha256base64(stored)).toBe(sha256base64(data));
    });

    it('sends no lock headers without a lock', async () => {
      await proxied().put('lk/none', new Uint8Array(randomBytes(PART_SIZE + 1)));
      expect(proxy.requests.length).toBeGreaterThan(2);
      for (const r of proxy.requests) expect(lockHeaders(r.headers)).toEqual([]);
    });

    it('refuses to delete while the server reports a lock in force, and deletes after', async () => {
      const store = proxied();
      await store.put('lk/held', text('held'));
      let until = new Date(Date.now() + 3_600_000);
      proxy.addResponseHeaders = (r) =>
        r.method === 'HEAD' && r.url.includes('lk/held')
          ? {
              'x-amz-object-lock-mode': 'COMPLIANCE',
              'x-amz-object-lock-retain-until-date': until.toISOString(),
            }
          : undefined;
      await expectLetheError(
        store.delete('lk/held'),
        ErrorCode.STORAGE,
        new RegExp(`COMPLIANCE lock until ${until.toISOString().replace(/\./g, '\\.')}`),
      );
      expect(proxy.requests.filter((r) => r.method === 'DELETE')).toEqual([]);
      expect(await inspect('lk/held')).toEqual(text('held'));

      until = new Date(Date.now() - 1000);
      await store.delete('lk/held');
      expect(proxy.requests.filter((r) => r.method === 'DELETE')).toHaveLength(1);
      expect(await inspect('lk/held')).toBeNull();
    });
  });
});
