import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { backup, initialize, restore } from '../../../src/jobs/tasks.ts';
import type { BackupResult } from '../../../src/snapshot/index.ts';
import { addMessages } from '../../../src/store/index.ts';
import {
  createChatTemplate,
  createLetheEnv,
  fileDigests,
  MAPPED_TABLES,
  tableContents,
  type LetheEnv,
  type TableContent,
  type TestDatabase,
} from '../../helpers/lethe-env.ts';

/**
 * Must hold: after an append, the next snapshot references the unchanged cells and writes
 * only the changed ones, and BOTH snapshots still restore to the store as it was when each
 * was taken.
 */

const ADDED = 40;

describe('incremental backup after new messages', () => {
  let template: TestDatabase;
  let env: LetheEnv;
  let before: Record<string, TableContent>;
  let after: Record<string, TableContent>;
  let first: BackupResult;
  let second: BackupResult;

  beforeAll(async () => {
    template = await createChatTemplate('e2e_inc_tpl');
    env = await createLetheEnv({ template: template.name });
    await initialize(env.rt, 'e2e');
    before = await tableContents(env.chat.url);
    first = await backup(env.rt, { actor: 'e2e' });
    const added = await addMessages(env.chat.url, { count: ADDED, seed: 77 });
    expect(added.messages).toBe(ADDED);
    after = await tableContents(env.chat.url);
    second = await backup(env.rt, { actor: 'e2e' });
  });
  afterAll(async () => {
    await env.cleanup();
    await template.drop();
  });

  it('references the unchanged cells and writes only the few that changed', () => {
    expect(second.previousId).toBe(first.snapshotId);
    expect(second.rows).toBe(first.rows + ADDED);
    expect(second.cells).toBeGreaterThanOrEqual(first.cells);
    expect(second.cellsReused).toBeGreaterThan(0);
    expect(second.cellsWritten).toBeGreaterThan(0);
    // 40 messages from a handful of senders in the last days: a few cells, not a re-upload.
    expect(second.cellsWritten).toBeLessThanOrEqual(ADDED);
    expect(second.cellsReused + second.cellsWritten).toBe(second.cells);
    expect(second.cellsReused).toBeGreaterThan(0.9 * first.cells);
    // Changed cells are re-uploaded whole; the fixture's recent month cells are its largest
    // (see createChatTemplate), so this is a loose bound, not a ratio to expect in production.
    expect(second.bytesStored).toBeLessThan(first.bytesStored / 2);
  });

  it('uploads every file outside the database once, and none again when no file changed', () => {
    const files = before['files']?.rows ?? 0;
    expect(files).toBeGreaterThan(10);
    expect(first.blobs).toMatchObject({ written: files, reused: 0, findings: 0 });
    // Unchanged files sit in unchanged cells, which the next snapshot references unread.
    expect(second.blobs).toMatchObject({ written: 0, findings: 0 });
  });

  it('restores the second snapshot equal to the store now, its files byte for byte', async () => {
    const target = await env.database('e2e_inc_second');
    const blobTarget = env.blobTarget();
    await restore(env.rt, {
      snapshot: second.snapshotId,
      targetUrl: target.url,
      replace: false,
      blobTarget,
      actor: 'e2e',
    });
    const got = await tableContents(target.url);
    for (const table of MAPPED_TABLES) expect(got[table], table).toEqual(after[table]);
    expect(await fileDigests(fileURLToPath(blobTarget))).toEqual(await fileDigests(env.filesDir));
  });

  it('restores the first snapshot equal to the store as it was, without the new messages', async () => {
    const target = await env.database('e2e_inc_first');
    await restore(env.rt, {
      snapshot: first.snapshotId,
      targetUrl: target.url,
      replace: false,
      blobTarget: env.blobTarget(),
      actor: 'e2e',
    });
    const got = await tableContents(target.url);
    for (const table of MAPPED_TABLES) expect(got[table], table).toEqual(before[table]);
    expect((after['messages']?.rows ?? 0) - (got['messages']?.rows ?? 0)).toBe(ADDED);
    // Only messages changed between the two.
    for (const table of MAPPED_TABLES) {
      if (table === 'messages') expect(after[table]?.md5).not.toBe(before[table]?.md5);
      else expect(after[table], table).toEqual(before[table]);
    }
  });
});
