import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../../../src/config/index.ts';
import { Runtime } from '../../../src/jobs/runtime.ts';
import { backup, initialize, verify } from '../../../src/jobs/tasks.ts';
import { createLogger } from '../../../src/log/index.ts';
import {
  createChatTemplate,
  createLetheEnv,
  type LetheEnv,
  type TestDatabase,
} from '../../helpers/lethe-env.ts';
import { startS3rver, type S3rverHandle } from '../../helpers/s3.ts';

/**
 * Must hold: a complete snapshot restores from the store it was written to. The vault
 * outlives a change of bucket, prefix or backend (a migration to S3, a new prefix per
 * environment), so the next backup must not reference packs that only exist in the old
 * store.
 */

describe('a backup after the storage config changes', () => {
  let template: TestDatabase;
  let s3: S3rverHandle;
  let env: LetheEnv;
  let moved: Runtime;

  beforeAll(async () => {
    [template, s3] = await Promise.all([createChatTemplate('e2e_switch_tpl'), startS3rver()]);
    env = await createLetheEnv({ template: template.name });
    await initialize(env.rt, 'e2e');
    await backup(env.rt, { actor: 'e2e' });
    // Same vault, chat store and master key; the objects now go to an S3 bucket.
    const raw = {
      ...env.raw,
      storage: {
        type: 's3',
        endpoint: s3.endpoint,
        bucket: s3.bucket,
        prefix: 'moved/',
        forcePathStyle: true,
        accessKeyId: s3.accessKeyId,
        secretAccessKey: s3.secretAccessKey,
      },
    };
    moved = new Runtime(parseConfig(raw, env.dir), createLogger('silent'));
  });
  afterAll(async () => {
    await moved.close();
    await env.cleanup();
    await s3.stop();
    await template.drop();
  });

  it('writes a snapshot that verifies from the new store', async () => {
    const result = await backup(moved, { actor: 'e2e' });
    const checked = await verify(moved, { snapshot: result.snapshotId, actor: 'e2e' });
    expect(checked.findings.slice(0, 3)).toEqual([]);
    expect(checked.ok).toBe(true);
    expect(checked.cellsVerified).toBe(result.cells);
  });
});
