import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { blobCellId, blobHeader, isBlobTable, locationProblem, rowTableOf, splitBlobPlaintext } from '../../../src/blobs/index.ts';
import { cellId, segmentId } from '../../../src/cells/index.ts';
import { parseBlobStoreUrl, parseConfig } from '../../../src/config/index.ts';
import { checkBlobStores, parseMapping } from '../../../src/mapping/index.ts';

function* chunked(bytes: Buffer, size: number): Generator<Uint8Array> {
  for (let i = 0; i < bytes.length; i += size) yield bytes.subarray(i, i + size);
}

async function collect(body: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const parts: Uint8Array[] = [];
  for await (const chunk of body) parts.push(chunk);
  return Buffer.concat(parts);
}

describe('blob locations', () => {
  it('accepts relative keys and refuses what could leave the store', () => {
    for (const ok of ['a.bin', 'ben/c.bin', 'dan/e f.bin', '2026/01/ab-12.png', 'x/..y/z', 'ünï/cødé']) expect(locationProblem(ok)).toBeNull();
    for (const bad of ['', '/etc/passwd', '../x', 'a/../../x', 'a/./b', 'a//b', 'a/', 'a\\b', 'a\u0000b', 'a\nb', '..', '.']) {
      expect(locationProblem(bad), bad).not.toBeNull();
    }
    expect(locationProblem('x'.repeat(1025))).toMatch(/longer than 1024/);
  });
});

describe('blob cell ids', () => {
  const tuple = { tenant: '1', class: 'attachments' as const, period: '2026-01', author: '10', conversation: null };

  it('extend the row tuple\'s cell id in the companion table with the primary key', () => {
    expect(blobCellId('uploads', tuple, ['100'])).toBe(`${cellId('uploads.blob', tuple)}/100`);
    expect(blobCellId('uploads', tuple, ['a-1', 'x,y/z'])).toBe('uploads.blob/1/2026-01/10/-/a%2D1,x%2Cy%2Fz');
    expect(blobCellId('uploads', tuple, ['1']).startsWith(`${segmentId('uploads.blob', '1', '2026-01')}/`)).toBe(true);
    expect(isBlobTable('uploads.blob')).toBe(true);
    expect(isBlobTable('uploads')).toBe(false);
    expect(rowTableOf('uploads.blob')).toBe('uploads');
  });

  it('never give two primary keys the same id, nor a quote, backslash, tab or newline', () => {
    fc.assert(
      fc.property(fc.array(fc.string(), { minLength: 1, maxLength: 3 }), fc.array(fc.string(), { minLength: 1, maxLength: 3 }), (a, b) => {
        const ia = blobCellId('t', tuple, a);
        const ib = blobCellId('t', tuple, b);
        expect(/["\\\t\n]/.test(ia)).toBe(false);
        if (a.length === b.length && a.every((v, i) => v === b[i])) expect(ia).toBe(ib);
        else expect(ia).not.toBe(ib);
      }),
    );
  });
});

describe('blob plaintext', () => {
  it('round-trips any location and bytes, however the stream is cut', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.string({ minLength: 1, maxLength: 60 }).filter((s) => locationProblem(s) === null),
        fc.uint8Array({ maxLength: 500 }),
        fc.integer({ min: 1, max: 64 }),
        async (location, body, cut) => {
          const plaintext = Buffer.concat([blobHeader(location), body]);
          const split = await splitBlobPlaintext(chunked(plaintext, cut));
          expect(split.location).toBe(location);
          expect(await collect(split.body)).toEqual(Buffer.from(body));
        },
      ),
    );
  });

  it('refuses a header that is not one, or a location that leaves the target', async () => {
    await expect(splitBlobPlaintext([Buffer.from('not a blob\nx\n')])).rejects.toThrow(/header/);
    await expect(splitBlobPlaintext([Buffer.from('lethe.blob.v1\n..%2Fetc%2Fpasswd\nroot')])).rejects.toThrow(/'\.\.' segment/);
    await expect(splitBlobPlaintext([Buffer.from('lethe.blob.v1\nno-newline')])).rejects.toThrow(/ends inside its header/);
    await expect(splitBlobPlaintext([Buffer.alloc(10_000, 0x61)])).rejects.toThrow(/header/);
  });
});

describe('blob store config', () => {
  const base = {
    chatStore: { database: { url: 'postgres://u@127.0.0.1/chat' } },
    vault: { database: { url: 'postgres://u@127.0.0.1/vault' } },
    storage: { type: 'filesystem', path: 'store' },
  };

  it('parses file and s3 URLs, and resolves a bare path against the config directory', () => {
    expect(parseBlobStoreUrl('file:///srv/chat/files/')).toEqual({ kind: 'file', dir: '/srv/chat/files' });
    expect(parseBlobStoreUrl('s3://chat-media/prod/x')).toEqual({ kind: 's3', bucket: 'chat-media', prefix: 'prod/x/' });
    expect(parseBlobStoreUrl('s3://chat-media')).toEqual({ kind: 's3', bucket: 'chat-media', prefix: '' });
    for (const bad of ['http://x/y', 'file://host/x', 's3://Bad_Bucket/x', 's3://b-ok/a%2F..%2Fx', 'relative/dir', 's3://u:p@bucket/x']) {
      expect(parseBlobStoreUrl(bad), bad).toHaveProperty('problem');
    }
    const config = parseConfig({ ...base, chatStore: { ...base.chatStore, blobStores: { files: { url: 'chat-files' } } } }, '/etc/lethe');
    expect(config.chatStore.blobStores['files']?.url).toBe('/etc/lethe/chat-files');
  });

  it('requires credentials for s3 stores and refuses S3 settings on a directory', () => {
    const s3 = { ...base, chatStore: { ...base.chatStore, blobStores: { media: { url: 's3://chat-media/p' } } } };
    expect(() => parseConfig(s3, '/etc/lethe')).toThrow(/blobStores\.media\.accessKeyId.*needs/s);
    const dir = { ...base, chatStore: { ...base.chatStore, blobStores: { files: { url: 'file:///x', accessKeyId: 'k' } } } };
    expect(() => parseConfig(dir, '/etc/lethe')).toThrow(/accessKeyId.*s3:\/\/ stores only/s);
  });

  it('refuses a mapping whose blob store is not configured, naming the key to add', () => {
    const mapping = parseMapping({
      tables: { uploads: { class: 'attachments', primaryKey: ['id'], tenant: 'tenant_id', blob: { column: 'location', store: 'media' } } },
    });
    expect(() => checkBlobStores(mapping, ['files'])).toThrow(/tables\.uploads\.blob\.store: blob store "media" is not configured.*chatStore\.blobStores/s);
    expect(() => checkBlobStores(mapping, ['media'])).not.toThrow();
    expect(() => parseMapping({ tables: { uploads: { class: 'attachments', primaryKey: ['id'], tenant: 't', blob: { column: 'Bad Col', store: 'x' } } } })).toThrow(/blob column/);
  });
});
