import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { ErrorCode, isLetheError } from '../../../src/errors/index.ts';
import { createS3Store } from '../../../src/storage/index.ts';

/**
 * s3rver implements neither ListMultipartUploads nor AbortMultipartUpload, so
 * cleanupIncomplete runs here against a small model of those two S3 operations: paged
 * listing by prefix with key and upload-id markers, and abort answering NoSuchUpload for
 * an upload that is gone.
 */
interface Pending {
  key: string;
  uploadId: string;
}

const BUCKET = 'model-bucket';
let server: Server;
let endpoint: string;
let uploads: Pending[];
let aborted: string[];
let listQueries: URLSearchParams[];
/** Upload ids that complete between listing and abort. */
let vanishing: Set<string>;
/** Upload ids whose abort the model refuses. */
let refused: Set<string>;

function xmlError(code: string): string {
  return `<?xml version="1.0" encoding="UTF-8"?><Error><Code>${code}</Code><Message>${code} (model)</Message></Error>`;
}

function listPage(query: URLSearchParams): string {
  const prefix = query.get('prefix') ?? '';
  const max = Number(query.get('max-uploads') ?? '1000');
  const keyMarker = query.get('key-marker') ?? '';
  const idMarker = query.get('upload-id-marker') ?? '';
  const after = uploads.filter(
    (u) =>
      u.key.startsWith(prefix) &&
      (u.key > keyMarker || (u.key === keyMarker && u.uploadId > idMarker)),
  );
  const page = after.slice(0, max);
  const last = page.at(-1);
  const truncated = after.length > max && last !== undefined;
  return [
    '<?xml version="1.0" encoding="UTF-8"?>',
    '<ListMultipartUploadsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">',
    `<Bucket>${BUCKET}</Bucket><Prefix>${prefix}</Prefix><MaxUploads>${max}</MaxUploads>`,
    `<IsTruncated>${truncated}</IsTruncated>`,
    truncated ? `<NextKeyMarker>${last.key}</NextKeyMarker>` : '',
    truncated ? `<NextUploadIdMarker>${last.uploadId}</NextUploadIdMarker>` : '',
    ...page.map(
      (u) =>
        `<Upload><Key>${u.key}</Key><UploadId>${u.uploadId}</UploadId>` +
        '<Initiated>2026-01-01T00:00:00.000Z</Initiated></Upload>',
    ),
    '</ListMultipartUploadsResult>',
  ].join('');
}

beforeAll(async () => {
  server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://model');
    req.resume();
    if (req.method === 'GET' && url.searchParams.has('uploads')) {
      listQueries.push(url.searchParams);
      res.writeHead(200, { 'content-type': 'application/xml' }).end(listPage(url.searchParams));
      return;
    }
    const uploadId = url.searchParams.get('uploadId');
    if (req.method === 'DELETE' && uploadId !== null) {
      const key = decodeURIComponent(url.pathname.slice(`/${BUCKET}/`.length));
      if (refused.has(uploadId)) {
        res.writeHead(403, { 'content-type': 'application/xml' }).end(xmlError('AccessDenied'));
        return;
      }
      const index = uploads.findIndex((u) => u.key === key && u.uploadId === uploadId);
      if (index < 0 || vanishing.has(uploadId)) {
        res.writeHead(404, { 'content-type': 'application/xml' }).end(xmlError('NoSuchUpload'));
        return;
      }
      uploads.splice(index, 1);
      aborted.push(`${key}#${uploadId}`);
      res.writeHead(204).end();
      return;
    }
    res.writeHead(501, { 'content-type': 'application/xml' }).end(xmlError('NotImplemented'));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  await new Promise((resolve) => server.close(resolve));
});

beforeEach(() => {
  uploads = [
    { key: 'elsewhere/packs/y', uploadId: 'u-else' },
    { key: 'env/other/x', uploadId: 'u-other' },
    { key: 'env/packs/a', uploadId: 'u1' },
    { key: 'env/packs/a', uploadId: 'u2' },
    { key: 'env/packs/b', uploadId: 'u3' },
    { key: 'env/packs/c', uploadId: 'u4' },
    { key: 'env/packs/d', uploadId: 'u5' },
    { key: 'env/packs/e', uploadId: 'u6' },
  ];
  aborted = [];
  listQueries = [];
  vanishing = new Set();
  refused = new Set();
});

const open = () =>
  createS3Store({
    endpoint,
    region: 'us-east-1',
    bucket: BUCKET,
    prefix: 'env',
    forcePathStyle: true,
    accessKeyId: 'model-access-key',
    secretAccessKey: 'model-secret-key',
    listPageSize: 2,
  });

describe('S3 cleanupIncomplete against a model of the multipart API', () => {
  it('aborts every upload under the store prefix + prefix, page by page', async () => {
    const store = open();
    vanishing.add('u4');
    expect(await store.cleanupIncomplete('packs/')).toBe(5);
    await store.close();
    expect(aborted).toEqual([
      'env/packs/a#u1',
      'env/packs/a#u2',
      'env/packs/b#u3',
      'env/packs/d#u5',
      'env/packs/e#u6',
    ]);
    expect(listQueries.length).toBeGreaterThanOrEqual(3);
    for (const query of listQueries) {
      expect(query.get('prefix')).toBe('env/packs/');
      expect(query.get('max-uploads')).toBe('2');
    }
    expect(listQueries[1]?.get('key-marker')).toBe('env/packs/a');
    expect(listQueries[1]?.get('upload-id-marker')).toBe('u2');
    expect(uploads.map((u) => u.uploadId)).toEqual(['u-else', 'u-other', 'u4']);
  });

  it('finds nothing to do under an empty part of the tree', async () => {
    const store = open();
    expect(await store.cleanupIncomplete('nothing-here/')).toBe(0);
    await store.close();
    expect(aborted).toEqual([]);
  });

  it('stops with STORAGE naming the upload when an abort is refused', async () => {
    const store = open();
    refused.add('u3');
    const err: unknown = await store.cleanupIncomplete('packs/').catch((e: unknown) => e);
    await store.close();
    expect(isLetheError(err, ErrorCode.STORAGE)).toBe(true);
    expect((err as Error).message).toMatch(
      /^abort upload s3:\/\/model-bucket\/env\/packs\/b failed: AccessDenied \(HTTP 403\)/,
    );
    expect((err as Error).message).not.toContain('model-secret-key');
    expect(aborted).toEqual(['env/packs/a#u1', 'env/packs/a#u2']);
  });
});
