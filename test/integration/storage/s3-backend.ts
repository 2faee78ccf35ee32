import { CreateMultipartUploadCommand, S3Client, UploadPartCommand } from '@aws-sdk/client-s3';
import { randomBytes } from 'node:crypto';
import * as Minio from 'minio';
import { createS3Store, type S3StoreOptions } from '../../../src/storage/index.ts';
import type { Backend, Quirk } from './conformance.ts';

export const PART_SIZE = 5 * 1024 * 1024;

export interface S3Server {
  endpoint: string;
  bucket: string;
  accessKeyId: string;
  secretAccessKey: string;
}

/**
 * The `minio` npm client: a second S3 implementation, independent of the AWS SDK that
 * lethe uses, for reading back what lethe wrote.
 */
export function minioClient(server: S3Server): Minio.Client {
  const url = new URL(server.endpoint);
  return new Minio.Client({
    endPoint: url.hostname,
    port: Number(url.port),
    useSSL: url.protocol === 'https:',
    accessKey: server.accessKeyId,
    secretKey: server.secretAccessKey,
    region: 'us-east-1',
    pathStyle: true,
  });
}

/** The object's bytes through the minio client; null when the key is absent. */
export async function inspectWithMinio(
  client: Minio.Client,
  bucket: string,
  key: string,
): Promise<Uint8Array | null> {
  try {
    const stream = await client.getObject(bucket, key);
    const chunks: Buffer[] = [];
    for await (const chunk of stream) chunks.push(chunk as Buffer);
    return new Uint8Array(Buffer.concat(chunks));
  } catch (err) {
    if ((err as { code?: unknown }).code === 'NoSuchKey') return null;
    throw err;
  }
}

/** Store options for `server` under `prefix`, with the small test part size. */
export function storeOptions(server: S3Server, prefix: string): S3StoreOptions {
  return {
    endpoint: server.endpoint,
    region: 'us-east-1',
    bucket: server.bucket,
    prefix,
    forcePathStyle: true,
    accessKeyId: server.accessKeyId,
    secretAccessKey: server.secretAccessKey,
    partSizeBytes: PART_SIZE,
  };
}

/**
 * A conformance backend on an S3 server; every store gets its own random prefix.
 * `lockedBucket` names a bucket on the same server created with Object Lock, for the
 * suite's lock tests.
 */
export function s3Backend(
  server: S3Server,
  quirks: ReadonlySet<Quirk>,
  stop: () => Promise<void>,
  lockedBucket?: string,
): Backend {
  const minio = minioClient(server);
  // A plain SDK client to leave an unfinished multipart upload behind, as a crash would.
  const raw = new S3Client({
    endpoint: server.endpoint,
    region: 'us-east-1',
    forcePathStyle: true,
    credentials: { accessKeyId: server.accessKeyId, secretAccessKey: server.secretAccessKey },
    requestChecksumCalculation: 'WHEN_REQUIRED',
  });
  const openLocking = (bucket: string) => () => {
    const prefix = `t-${randomBytes(6).toString('hex')}`;
    const store = createS3Store(storeOptions({ ...server, bucket }, prefix));
    return Promise.resolve({
      store,
      inspect: (key: string) => inspectWithMinio(minio, bucket, `${prefix}/${key}`),
      leaveIncomplete: () => Promise.reject(new Error('not used by the lock tests')),
    });
  };
  return {
    partSize: PART_SIZE,
    quirks,
    ...(lockedBucket === undefined ? {} : { openLocking: openLocking(lockedBucket) }),
    open: (options) => {
      const prefix = `t-${randomBytes(6).toString('hex')}`;
      const store = createS3Store({
        ...storeOptions(server, prefix),
        ...(options?.listPageSize === undefined ? {} : { listPageSize: options.listPageSize }),
      });
      return Promise.resolve({
        store,
        inspect: (key) => inspectWithMinio(minio, server.bucket, `${prefix}/${key}`),
        leaveIncomplete: async (key) => {
          const Key = `${prefix}/${key}`;
          const { UploadId } = await raw.send(
            new CreateMultipartUploadCommand({ Bucket: server.bucket, Key }),
          );
          await raw.send(
            new UploadPartCommand({
              Bucket: server.bucket,
              Key,
              UploadId,
              PartNumber: 1,
              Body: randomBytes(1024),
            }),
          );
        },
      });
    },
    teardown: async () => {
      raw.destroy();
      await stop();
    },
  };
}
