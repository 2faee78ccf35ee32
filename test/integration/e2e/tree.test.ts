import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { blobTableName } from '../../../src/blobs/index.ts';
import { segmentId } from '../../../src/cells/index.ts';
import { backup, initialize, restore, verify } from '../../../src/jobs/tasks.ts';
import { BUILTIN_MAPPING, buildCellQuery, checkCoverage } from '../../../src/mapping/index.ts';
import type { BackupResult } from '../../../src/snapshot/index.ts';
import { applyChurn, type ChurnResult } from '../../../src/store/index.ts';
import {
  createChatTemplate,
  createLetheEnv,
  MAPPED_TABLES,
  queryValue,
  tableContents,
  type LetheEnv,
  type TableContent,
  type TestDatabase,
} from '../../helpers/lethe-env.ts';
import { readTree, type TreeManifest } from '../../helpers/tree.ts';

/**
 * Must hold (snapshots that cost what changed): after churn as a chat service makes it (new
 * messages, edits and deletions spread over the whole history), the next snapshot rewrites
 * exactly the segments whose rows changed and references every other one of the previous
 * snapshot by hash; it restores equal to the source row for row, the edited old message
 * included and the deleted one gone. A same-length edit is seen; an update that writes a
 * value back neither loses nor duplicates a row. A snapshot with nothing changed reads and writes nothing.
 */

/**
 * Per segment (table/tenant/period), a digest of its rows' content, computed by PostgreSQL
 * with an ordered string_agg of each row as JSON: an oracle independent of the fingerprints
 * the backup uses. Only the cell query's grouping is shared (which segment a row is in).
 */
async function segmentContents(url: string): Promise<Map<string, string>> {
  const { tables } = await checkCoverage(url, BUILTIN_MAPPING);
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    const out = new Map<string, string>();
    for (const table of tables) {
      const sql = buildCellQuery(BUILTIN_MAPPING, table.name, table.copyColumns, 'month');
      const { rows } = await client.query<{ tenant: string | null; period: string; digest: string }>(
        `SELECT lethe_tenant AS tenant, lethe_period AS period,
                md5(string_agg(to_jsonb(q)::text, E'\\n' ORDER BY to_jsonb(q)::text)) AS digest
           FROM (${sql}) q GROUP BY 1, 2`,
      );
      for (const r of rows) {
        out.set(segmentId(table.name, r.tenant, r.period), r.digest);
        // A blob column's files form a companion table, segmented as their rows are; the
        // churn here never rewrites a file's bytes, so its segment changes when its rows do.
        if (BUILTIN_MAPPING.tables[table.name]?.blob !== undefined) out.set(segmentId(blobTableName(table.name), r.tenant, r.period), r.digest);
      }
    }
    return out;
  } finally {
    await client.end();
  }
}

describe('snapshots as trees, after churn', () => {
  let template: TestDatabase;
  let env: LetheEnv;
  let first: BackupResult;
  let second: BackupResult;
  let churn: ChurnResult;
  let before: Map<string, string>;
  let after: Map<string, string>;
  let sourceAfter: Record<string, TableContent>;
  let sourceBefore: Record<string, TableContent>;
  let firstTree: TreeManifest;
  let secondTree: TreeManifest;
  let sameLength: { id: string; body: string };
  let rewritten: string;

  beforeAll(async () => {
    template = await createChatTemplate('e2e_tree_tpl');
    env = await createLetheEnv({ template: template.name, backup: { fullEvery: 4 } });
    await initialize(env.rt, 'e2e');
    sourceBefore = await tableContents(env.chat.url);
    before = await segmentContents(env.chat.url);
    first = await backup(env.rt, { actor: 'e2e' });
    churn = await applyChurn(env.chat.url, { addFraction: 0.01, editFraction: 0.001, deleteFraction: 0.0005, seed: 9 });
    const client = new pg.Client({ connectionString: env.chat.url });
    await client.connect();
    try {
      // An edit that keeps the body's length, in an old month the churn may not touch.
      const old = await client.query<{ id: string; body: string }>(
        `SELECT id::text, body FROM public.messages WHERE length(body) > 3 ORDER BY created_at, id LIMIT 1 OFFSET 17`,
      );
      const row = old.rows[0];
      if (row === undefined) throw new Error('fixture: no old message');
      const body = `${row.body.startsWith('Q') ? 'R' : 'Q'}${row.body.slice(1)}`;
      await client.query('UPDATE public.messages SET body = $2 WHERE id = $1', [row.id, body]);
      sameLength = { id: row.id, body };
      // A new row version with the same content: nothing to back up.
      const same = await client.query<{ id: string }>(`UPDATE public.messages SET body = body WHERE id = (SELECT max(id) - 100 FROM public.messages) RETURNING id::text`);
      rewritten = same.rows[0]?.id ?? '';
    } finally {
      await client.end();
    }
    sourceAfter = await tableContents(env.chat.url);
    after = await segmentContents(env.chat.url);
    second = await backup(env.rt, { actor: 'e2e' });
    firstTree = await readTree(env.storePath ?? '', first.manifest);
    secondTree = await readTree(env.storePath ?? '', second.manifest);
  }, 300_000);
  afterAll(async () => {
    await env.cleanup();
    await template.drop();
  });

  it('churned the store as a chat service does', () => {
    expect(churn.added).toBeGreaterThan(0);
    expect(churn.edited).toBeGreaterThan(0);
    expect(churn.deleted).toBeGreaterThan(0);
    expect(churn.oldestEdited).not.toBeNull();
    expect(rewritten).not.toBe('');
  });

  it('rewrites exactly the segments whose rows changed and references every other one by hash', () => {
    const changed = new Set([...after].filter(([id, digest]) => before.get(id) !== digest).map(([id]) => id));
    const gone = [...before.keys()].filter((id) => !after.has(id));
    expect(changed.size).toBeGreaterThan(0);
    expect(changed.size).toBeLessThan(after.size / 4);
    const older = new Map(firstTree.segments.map((s) => [s.id, s]));
    // Every segment with rows is in the tree, and nothing else.
    expect(new Set(secondTree.segments.map((s) => s.id))).toEqual(new Set(after.keys()));
    for (const segment of secondTree.segments) {
      const previous = older.get(segment.id);
      if (changed.has(segment.id)) {
        expect(segment.snapshot, segment.id).toBe(second.snapshotId);
        expect(segment.key, segment.id).not.toBe(previous?.key);
      } else {
        expect(segment, segment.id).toEqual(previous);
      }
    }
    expect(gone.every((id) => !secondTree.segments.some((s) => s.id === id))).toBe(true);
    expect(second.segmentsWritten).toBe(changed.size);
    expect(second.segments).toBe(after.size);
    // Only the changed segments were read, and in them only the changed cells.
    expect(second.segmentsRead).toBe(changed.size);
    expect(second.cellsRead).toBeLessThan(second.cells / 10);
    expect(second.fullRead).toBe(false);
  });

  it('writes each changed cell once, under the new snapshot\'s encapsulations, and references the rest', () => {
    const written = secondTree.cells.filter((c) => c.enc.startsWith(`${second.snapshotId}/`));
    expect(written.length).toBe(second.cellsWritten);
    expect(written.every((c) => !c.reused)).toBe(true);
    const ids = secondTree.cells.map((c) => c.id);
    expect(new Set(ids).size).toBe(ids.length);
    expect(ids.length).toBe(second.cells);
    expect(second.cellsReused).toBe(second.cells - second.cellsWritten);
  });

  it('restores equal to the source row for row: the edited old messages changed, the deleted one gone', async () => {
    const target = await env.database('e2e_tree_second');
    await restore(env.rt, { snapshot: second.snapshotId, targetUrl: target.url, replace: false, blobTarget: env.blobTarget(), actor: 'e2e' });
    const got = await tableContents(target.url);
    for (const table of MAPPED_TABLES) expect(got[table], table).toEqual(sourceAfter[table]);
    const edited = churn.oldestEdited;
    if (edited === null || churn.oldestDeleted === null) throw new Error('fixture: nothing edited or deleted');
    const bodyIn = (url: string, id: string): Promise<string | null> => queryValue<string>(url, `SELECT body AS v FROM public.messages WHERE id = ${Number(id)}`);
    expect(await bodyIn(target.url, edited.id)).toBe(await bodyIn(env.chat.url, edited.id));
    expect(await bodyIn(target.url, sameLength.id)).toBe(sameLength.body);
    const countIn = (url: string, id: string): Promise<string> => queryValue<string>(url, `SELECT count(*)::text AS v FROM public.messages WHERE id = ${Number(id)}`);
    expect(await countIn(target.url, churn.oldestDeleted.id)).toBe('0');
    // The first snapshot still has the message as it was before its deletion.
    const older = await env.database('e2e_tree_first');
    await restore(env.rt, { snapshot: first.snapshotId, targetUrl: older.url, replace: false, blobTarget: env.blobTarget(), actor: 'e2e' });
    const then = await tableContents(older.url);
    for (const table of MAPPED_TABLES) expect(then[table], table).toEqual(sourceBefore[table]);
    expect(await countIn(older.url, churn.oldestDeleted.id)).toBe('1');
  });

  it('a snapshot with nothing changed reads nothing and writes nothing', async () => {
    const third = await backup(env.rt, { actor: 'e2e' });
    expect(third).toMatchObject({ segmentsRead: 0, cellsRead: 0, segmentsWritten: 0, cellsWritten: 0, packs: 0, cells: second.cells, rows: second.rows });
    const tree = await readTree(env.storePath ?? '', third.manifest);
    expect(tree.segments).toEqual(secondTree.segments);
  });

  it('a full read (backup.fullEvery) reads every row again and still rewrites nothing unchanged', async () => {
    const full = await backup(env.rt, { actor: 'e2e', fullRead: true });
    expect(full).toMatchObject({ fullRead: true, sinceFullRead: 0, cellsWritten: 0, segmentsWritten: 0, cells: second.cells });
    // Every row cell is read again, and every file (a blob cell) too: found unchanged, none written.
    expect(full.blobs).toMatchObject({ written: 0, findings: 0 });
    expect(full.cellsRead + full.blobs.reused).toBe(second.cells);
    expect((await readTree(env.storePath ?? '', full.manifest)).segments).toEqual(secondTree.segments);
    const next = await backup(env.rt, { actor: 'e2e' });
    expect(next).toMatchObject({ fullRead: false, sinceFullRead: 1, cellsRead: 0 });
    const checked = await verify(env.rt, { snapshot: 'latest', actor: 'e2e' });
    expect(checked.findings).toEqual([]);
    expect(checked.ok).toBe(true);
    // backup.fullEvery: 4 makes every 4th snapshot since the last full read a full read.
    const runs: BackupResult[] = [];
    for (let i = 0; i < 3; i++) runs.push(await backup(env.rt, { actor: 'e2e' }));
    expect(runs.map((r) => [r.sinceFullRead, r.fullRead])).toEqual([[2, false], [3, false], [0, true]]);
    expect((runs[2]?.cellsRead ?? 0) + (runs[2]?.blobs.reused ?? 0)).toBe(second.cells);
  });

  it('a full read after deletions leaves the deleted rows out, whole cells included', async () => {
    const gone = await applyChurn(env.chat.url, { addFraction: 0, editFraction: 0, deleteFraction: 0.003, seed: 21 });
    expect(gone.deleted).toBeGreaterThan(0);
    // And one whole cell: every message of the smallest cell of messages.
    const client = new pg.Client({ connectionString: env.chat.url });
    await client.connect();
    try {
      await client.query(`DELETE FROM public.message_edits WHERE message_id IN (SELECT id FROM public.messages WHERE sender_id = (SELECT sender_id FROM public.messages GROUP BY sender_id ORDER BY count(*), sender_id LIMIT 1))`);
      await client.query(`DELETE FROM public.attachments WHERE message_id IN (SELECT id FROM public.messages WHERE sender_id = (SELECT sender_id FROM public.messages GROUP BY sender_id ORDER BY count(*), sender_id LIMIT 1))`);
      await client.query(`DELETE FROM public.files WHERE message_id IN (SELECT id FROM public.messages WHERE sender_id = (SELECT sender_id FROM public.messages GROUP BY sender_id ORDER BY count(*), sender_id LIMIT 1))`);
      await client.query(`UPDATE public.messages SET thread_root_id = NULL WHERE thread_root_id IN (SELECT id FROM public.messages WHERE sender_id = (SELECT sender_id FROM public.messages GROUP BY sender_id ORDER BY count(*), sender_id LIMIT 1))`);
      await client.query(`DELETE FROM public.messages WHERE sender_id = (SELECT sender_id FROM public.messages GROUP BY sender_id ORDER BY count(*), sender_id LIMIT 1)`);
    } finally {
      await client.end();
    }
    const source = await tableContents(env.chat.url);
    const full = await backup(env.rt, { actor: 'e2e', fullRead: true });
    expect(full.fullRead).toBe(true);
    expect(full.cells).toBeLessThan(second.cells);
    const target = await env.database('e2e_tree_full_after_delete');
    await restore(env.rt, { snapshot: full.snapshotId, targetUrl: target.url, replace: false, blobTarget: env.blobTarget(), actor: 'e2e' });
    const got = await tableContents(target.url);
    for (const table of MAPPED_TABLES) expect(got[table], table).toEqual(source[table]);
    // The vault agrees with the tree: the snapshot holds exactly the cells it lists (what
    // holds, certificates and export count), not the deleted ones' old copies.
    expect(await queryValue<string>(env.vaultDb.url, `SELECT count(*)::text AS v FROM lethe.snapshot_cells WHERE snapshot_id = '${full.snapshotId}'`)).toBe(String(full.cells));
    // The next incremental agrees: nothing to read, and the same tree.
    const next = await backup(env.rt, { actor: 'e2e' });
    expect(next).toMatchObject({ cellsRead: 0, segmentsWritten: 0, cells: full.cells, rows: full.rows });
    // And edits in the same segments, listed from the vault next time, do not bring the
    // deleted cells back.
    await applyChurn(env.chat.url, { addFraction: 0, editFraction: 0.02, deleteFraction: 0, seed: 22 });
    const edited = await tableContents(env.chat.url);
    const after = await backup(env.rt, { actor: 'e2e' });
    expect(after.fullRead).toBe(false);
    const again = await env.database('e2e_tree_after_full_edits');
    await restore(env.rt, { snapshot: after.snapshotId, targetUrl: again.url, replace: false, blobTarget: env.blobTarget(), actor: 'e2e' });
    const now = await tableContents(again.url);
    for (const table of MAPPED_TABLES) expect(now[table], table).toEqual(edited[table]);
  });
});
