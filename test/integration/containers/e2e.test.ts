import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MinioContainer, type StartedMinioContainer } from '@testcontainers/minio';
import { PostgreSqlContainer, type StartedPostgreSqlContainer } from '@testcontainers/postgresql';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../../../src/config/index.ts';
import { Runtime } from '../../../src/jobs/runtime.ts';
import { backup, initialize, restore, verify } from '../../../src/jobs/tasks.ts';
import { createLogger } from '../../../src/log/index.ts';
import { seedChatStore } from '../../../src/store/index.ts';
import { dockerAvailable } from '../../helpers/docker.ts';
import { tableContents } from '../../helpers/lethe-env.ts';
import { minioClient } from '../storage/s3-backend.ts';

/**
 * The whole path on production-like components: a PostgreSQL server and MinIO in
 * containers. Runs where a Docker engine exists; elsewhere it is skipped, saying so.
 */
const hasDocker = await dockerAvailable();
const REASON = 'no Docker engine found; the MinIO/PostgreSQL container suite runs where one exists';

if (!hasDocker) {
  console.warn(`container end-to-end suite skipped: ${REASON}`);
  describe('end to end on MinIO and PostgreSQL containers', () => {
    it.skip(REASON, () => undefined);
  });
} else {
  describe('end to end on MinIO and PostgreSQL containers', () => {
    let postgres: StartedPostgreSqlContainer;
    let minio: StartedMinioContainer;
    let dir: string;
    let rt: Runtime;

    async function createDatabase(name: string): Promise<string> {
      const admin = new pg.Client({ connectionString: postgres.getConnectionUri() });
      await admin.connect();
      try {
        await admin.query(`CREATE DATABASE ${admin.escapeIdentifier(name)}`);
      } finally {
        await admin.end();
      }
      const url = new URL(postgres.getConnectionUri());
      url.pathname = `/${name}`;
      return url.toString();
    }

    beforeAll(async () => {
      [postgres, minio] = await Promise.all([
        new PostgreSqlContainer('postgres:15-alpine').start(),
        new MinioContainer('minio/minio:RELEASE.2025-02-28T09-55-16Z').start(),
      ]);
      const endpoint = `http://${minio.getHost()}:${minio.getPort()}`;
      await minioClient({ endpoint, bucket: 'lethe-e2e', accessKeyId: minio.getUsername(), secretAccessKey: minio.getPassword() })
        .makeBucket('lethe-e2e', 'us-east-1', { ObjectLocking: true });
      dir = await mkdtemp(join(tmpdir(), 'lethe-containers-'));
      const config = parseConfig(
        {
          chatStore: { database: { url: await createDatabase('chat') }, blobStores: { files: { url: 'chat-files' } } },
          vault: { database: { url: await createDatabase('vault') } },
          storage: {
            type: 's3',
            endpoint,
            bucket: 'lethe-e2e',
            forcePathStyle: true,
            accessKeyId: minio.getUsername(),
            secretAccessKey: minio.getPassword(),
            objectLock: { mode: 'GOVERNANCE', retainDays: 1 },
          },
          masterKey: { file: 'master.key' },
          signingKeys: { backup: { file: 'backup-signing.key' }, lifecycle: { file: 'lifecycle-signing.key' } },
          verify: { scratchUrl: postgres.getConnectionUri() },
        },
        dir,
        {},
      );
      rt = new Runtime(config, createLogger('silent'));
      await seedChatStore(await rt.chatStoreUrl(), { scale: 'small', filesDir: join(dir, 'chat-files') });
    }, 600_000);

    afterAll(async () => {
      await rt.close();
      await Promise.all([postgres.stop(), minio.stop()]);
      await rm(dir, { recursive: true, force: true });
    });

    it('backs up into locked MinIO objects, verifies, and restores row for row', async () => {
      await initialize(rt, 'test');
      const first = await backup(rt, { actor: 'test' });
      expect(first.cells).toBeGreaterThan(0);
      const checked = await verify(rt, { snapshot: first.snapshotId, actor: 'test' });
      expect(checked.findings).toEqual([]);
      expect(checked.ok).toBe(true);
      const target = await createDatabase('restored');
      await restore(rt, { snapshot: first.snapshotId, targetUrl: target, replace: false, blobTarget: `file://${join(dir, 'restored-files')}`, actor: 'test' });
      expect(await tableContents(target)).toEqual(await tableContents(await rt.chatStoreUrl()));
      const retention = await minioClient({
        endpoint: `http://${minio.getHost()}:${minio.getPort()}`,
        bucket: 'lethe-e2e',
        accessKeyId: minio.getUsername(),
        secretAccessKey: minio.getPassword(),
      }).getObjectRetention('lethe-e2e', first.manifest);
      expect(retention?.mode).toBe('GOVERNANCE');
    }, 600_000);
  });
}
