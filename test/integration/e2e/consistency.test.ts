import { execFileSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { backup, initialize, restore } from '../../../src/jobs/tasks.ts';
import {
  createChatTemplate,
  createLetheEnv,
  MAPPED_TABLES,
  tableContents,
  type LetheEnv,
  type TableContent,
  type TestDatabase,
} from '../../helpers/lethe-env.ts';

/**
 * Must hold: the backup reads its tables on two connections (one sorts the next table while
 * the other's rows are sealed), and every table is read as of one snapshot point. Rows
 * committed after the backup started, before the later tables are read, are in none of them.
 */

const INSERTED = 25;

describe('one snapshot point across both readers', () => {
  let template: TestDatabase;
  let env: LetheEnv;
  let before: Record<string, TableContent>;
  let inserted = false;

  beforeAll(async () => {
    template = await createChatTemplate('e2e_consistency_tpl');
    env = await createLetheEnv({ template: template.name });
    await initialize(env.rt, 'e2e');
    before = await tableContents(env.chat.url);
  });
  afterAll(async () => {
    await env.cleanup();
    await template.drop();
  });

  it('leaves out rows committed while the backup runs', async () => {
    // Both tables are read after the first two, whose reading the insert waits for, and one
    // on each reader (tables alternate between the two connections).
    const edits = MAPPED_TABLES.indexOf('message_edits');
    const messages = MAPPED_TABLES.indexOf('messages');
    expect(Math.min(edits, messages)).toBeGreaterThanOrEqual(2);
    expect(edits % 2).not.toBe(messages % 2);
    const result = await backup(env.rt, {
      actor: 'e2e',
      onProgress: (p) => {
        if (inserted || p.tablesDone !== 1) return;
        inserted = true;
        // Synchronous on purpose: the backup goes on only once these rows are committed.
        execFileSync('psql', [
          env.chat.url,
          '-v',
          'ON_ERROR_STOP=1',
          '-qc',
          `INSERT INTO messages (id, conversation_id, sender_id, body, created_at)
           SELECT id + 1000000000, conversation_id, sender_id, 'written during the backup', now()
             FROM messages ORDER BY id LIMIT ${INSERTED};
           INSERT INTO message_edits (message_id, editor_id, previous_body, edited_at_ms)
           SELECT message_id, editor_id, 'written during the backup', edited_at_ms + 1
             FROM message_edits ORDER BY id LIMIT ${INSERTED}`,
        ]);
      },
    });
    expect(inserted).toBe(true);
    const now = await tableContents(env.chat.url);
    expect(now['messages']?.rows).toBe((before['messages']?.rows ?? 0) + INSERTED);
    expect(now['message_edits']?.rows).toBe((before['message_edits']?.rows ?? 0) + INSERTED);

    const target = await env.database('e2e_consistency_restore');
    await restore(env.rt, { snapshot: result.snapshotId, targetUrl: target.url, replace: false, blobTarget: env.blobTarget(), actor: 'e2e' });
    expect(await tableContents(target.url)).toEqual(before);
  });
});
