import { createHash } from 'node:crypto';
import { GetObjectCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { backup, initialize, restore, verify } from '../../../src/jobs/tasks.ts';
import { createLetheEnv, type LetheEnv, type TestDatabase } from '../../helpers/lethe-env.ts';
import { createTestDatabase } from '../../helpers/postgres.ts';
import { startS3rver, type S3rverHandle } from '../../helpers/s3.ts';

/**
 * Issue 12, item 2, with the chat service's files in an S3 bucket (s3rver): lethe reads
 * them with GetObject only, a missing object is a finding with the row's key, and a
 * restore writes each file back under another prefix of a bucket, byte for byte.
 */

const DDL = `
CREATE TABLE public.uploads (id text PRIMARY KEY, tenant_id bigint NOT NULL, owner_id bigint NOT NULL, location varchar(300));
INSERT INTO public.uploads VALUES ('a-1', 1, 10, 'x/one.bin'), ('a-2', 1, 11, 'x/two.bin'), ('a-3', 2, 20, 'x/gone.bin');
`;

describe('files outside the database (S3 blob store)', () => {
  let s3: S3rverHandle;
  let client: S3Client;
  let template: TestDatabase;
  let chat: TestDatabase;
  let env: LetheEnv;
  const bodies: Record<string, Buffer> = {
    'x/one.bin': Buffer.from('first file'),
    'x/two.bin': createHash('sha512').update('second').digest(),
  };

  beforeAll(async () => {
    s3 = await startS3rver();
    client = new S3Client({
      endpoint: s3.endpoint,
      region: 'us-east-1',
      forcePathStyle: true,
      credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey },
    });
    for (const [key, body] of Object.entries(bodies)) {
      await client.send(new PutObjectCommand({ Bucket: s3.bucket, Key: `chat-media/${key}`, Body: body }));
    }
    template = await createTestDatabase('blob_s3_tpl');
    const c = new pg.Client({ connectionString: template.url });
    await c.connect();
    await c.query(DDL);
    await c.end();
    chat = await createTestDatabase('blob_s3', template.name);
    const media = {
      url: `s3://${s3.bucket}/chat-media`,
      endpoint: s3.endpoint,
      forcePathStyle: true,
      accessKeyId: s3.accessKeyId,
      secretAccessKey: s3.secretAccessKey,
    };
    env = await createLetheEnv({
      template: template.name,
      config: {
        chatStore: {
          database: { url: chat.url },
          mapping: { tables: { uploads: { class: 'attachments', primaryKey: ['id'], tenant: 'tenant_id', author: 'owner_id', blob: { column: 'location', store: 'media' } } } },
          blobStores: { media },
        },
      },
    });
    await initialize(env.rt, 'test');
  }, 120_000);

  afterAll(async () => {
    client.destroy();
    await env.cleanup();
    await chat.drop();
    await template.drop();
    await s3.stop();
  });

  it('backs up from the bucket, reports the missing object with its row key, and restores into the bucket', async () => {
    const result = await backup(env.rt, { actor: 'test' });
    expect(result.blobs).toMatchObject({ written: 2, findings: 1 });
    expect(result.findings).toEqual([
      expect.objectContaining({ table: 'uploads', primaryKey: { id: 'a-3' }, location: 'x/gone.bin', kind: 'missing', store: 'media' }),
    ]);
    expect((await verify(env.rt, { snapshot: result.snapshotId, actor: 'test' })).blobsByTable).toEqual({ uploads: 2 });
    const db = await env.database('blob_s3_rs');
    const restored = await restore(env.rt, { snapshot: result.snapshotId, targetUrl: db.url, replace: false, actor: 'test', blobTarget: `s3://${s3.bucket}/restored` });
    expect(restored.blobs).toBe(2);
    for (const [key, body] of Object.entries(bodies)) {
      const got = await client.send(new GetObjectCommand({ Bucket: s3.bucket, Key: `restored/${key}` }));
      expect(Buffer.from(await got.Body?.transformToByteArray() ?? [])).toEqual(body);
    }
  }, 120_000);

  it('refuses an s3:// blob target on a bucket no blob store names', async () => {
    const db = await env.database('blob_s3_rs2');
    await expect(
      restore(env.rt, { snapshot: 'latest', targetUrl: db.url, replace: false, actor: 'test', blobTarget: 's3://another-bucket/x' }),
    ).rejects.toThrow(/no entry under chatStore.blobStores names bucket another-bucket/);
  }, 60_000);
});
