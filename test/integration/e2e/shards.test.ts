import type { ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { backup, restore, initialize, verify } from '../../../src/jobs/tasks.ts';
import type { BackupResult, ShardResult } from '../../../src/snapshot/index.ts';
import { addMessages, applyChurn } from '../../../src/store/index.ts';
import {
  createChatTemplate,
  createLetheEnv,
  expectExit,
  jsonOut,
  MAPPED_TABLES,
  queryValue,
  tableContents,
  waitForAdvisoryLocksReleased,
  type LetheEnv,
  type TableContent,
  type TestDatabase,
} from '../../helpers/lethe-env.ts';
import { readTree } from '../../helpers/tree.ts';

/**
 * Must hold (past one machine): a snapshot written by three shard workers under one
 * coordinator, with a commit to the chat store while they run, equals row for row after
 * restore the store as of the coordinator's snapshot point, and is the snapshot a single
 * process takes (a single backup right after it finds nothing to read or write). A shard
 * killed midway leaves no complete snapshot, and the next backup succeeds.
 */

const SHARDS = 3;

interface Running {
  readonly child: ChildProcess;
  readonly done: Promise<{ code: number | null; signal: string | null; stdout: string; stderr: string }>;
}

function run(env: LetheEnv, args: readonly string[], extraEnv?: Record<string, string>): Running {
  const child = env.spawnCli(['backup', '--config', env.configPath, '--json', ...args], extraEnv === undefined ? {} : { env: extraEnv });
  let stdout = '';
  let stderr = '';
  child.stdout?.setEncoding('utf8').on('data', (t: string) => (stdout += t));
  child.stderr?.setEncoding('utf8').on('data', (t: string) => (stderr += t));
  const done = once(child, 'exit').then(([code, signal]) => ({ code: code as number | null, signal: signal as string | null, stdout, stderr }));
  return { child, done };
}

async function shardsOffered(env: LetheEnv): Promise<void> {
  const deadline = Date.now() + 60_000;
  for (;;) {
    const n = await queryValue<string>(env.vaultDb.url, `SELECT count(*)::text AS v FROM lethe.backup_shards b JOIN lethe.snapshots s ON s.id = b.snapshot_id WHERE s.status = 'running'`);
    if (n === String(SHARDS)) return;
    if (Date.now() > deadline) throw new Error('the coordinator never offered its shards');
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('a backup written by three shard workers', () => {
  let template: TestDatabase;
  let env: LetheEnv;
  let atPoint: Record<string, TableContent>;
  let full: BackupResult;
  let workers: ShardResult[];

  beforeAll(async () => {
    template = await createChatTemplate('e2e_shards_tpl');
    env = await createLetheEnv({ template: template.name });
    await initialize(env.rt, 'e2e');
    atPoint = await tableContents(env.chat.url);
    const coordinator = run(env, ['--coordinate', String(SHARDS)]);
    await shardsOffered(env);
    // A commit after the coordinator's snapshot point: no worker may see it.
    await addMessages(env.chat.url, { count: 25, seed: 3 });
    const started = Array.from({ length: SHARDS }, (_, i) => run(env, ['--shard', `${i}/${SHARDS}`]));
    const outs = await Promise.all(started.map((w) => w.done));
    for (const out of outs) expect(out.code, out.stderr).toBe(0);
    workers = outs.map((o) => JSON.parse(o.stdout) as ShardResult);
    const done = await coordinator.done;
    expect(done.code, done.stderr).toBe(0);
    full = JSON.parse(done.stdout) as BackupResult;
  }, 300_000);
  afterAll(async () => {
    await env.cleanup();
    await template.drop();
  });

  it('split the tenants between the workers and wrote every cell once', () => {
    expect(workers.map((w) => w.shard).sort()).toEqual([0, 1, 2]);
    expect(workers.every((w) => w.snapshotId === full.snapshotId)).toBe(true);
    expect(workers.filter((w) => w.cellsWritten > 0)).toHaveLength(SHARDS);
    expect(workers.reduce((n, w) => n + w.cellsWritten, 0)).toBe(full.cells);
    expect(full.cellsWritten).toBe(full.cells);
    expect(full.fullRead).toBe(true);
  });

  it('restores equal to the store at the coordinator\'s snapshot point, without the commit made meanwhile', async () => {
    const target = await env.database('e2e_shards_restore');
    await restore(env.rt, { snapshot: full.snapshotId, targetUrl: target.url, replace: false, blobTarget: env.blobTarget(), actor: 'e2e' });
    const got = await tableContents(target.url);
    for (const table of MAPPED_TABLES) expect(got[table], table).toEqual(atPoint[table]);
  });

  it('is the snapshot a single process takes: an incremental by three workers after churn, then a single backup that finds nothing to do', async () => {
    await applyChurn(env.chat.url, { addFraction: 0.01, editFraction: 0.002, deleteFraction: 0.001, seed: 12 });
    const source = await tableContents(env.chat.url);
    const coordinator = run(env, ['--coordinate', String(SHARDS)]);
    const started = Array.from({ length: SHARDS }, (_, i) => run(env, ['--shard', `${i}/${SHARDS}`, '--wait', '60']));
    for (const out of await Promise.all(started.map((w) => w.done))) expect(out.code, out.stderr).toBe(0);
    const done = await coordinator.done;
    expect(done.code, done.stderr).toBe(0);
    const sharded = JSON.parse(done.stdout) as BackupResult;
    expect(sharded.previousId).toBe(full.snapshotId);
    expect(sharded.cellsRead).toBeLessThan(sharded.cells / 5);
    expect(sharded.segmentsWritten).toBeGreaterThan(0);
    await waitForAdvisoryLocksReleased(env.vaultDb.name);
    const single = await backup(env.rt, { actor: 'e2e' });
    expect(single).toMatchObject({ previousId: sharded.snapshotId, segmentsRead: 0, cellsRead: 0, segmentsWritten: 0, cellsWritten: 0, cells: sharded.cells, rows: sharded.rows });
    expect((await readTree(env.storePath ?? '', single.manifest)).segments).toEqual((await readTree(env.storePath ?? '', sharded.manifest)).segments);
    const target = await env.database('e2e_shards_restore_inc');
    await restore(env.rt, { snapshot: sharded.snapshotId, targetUrl: target.url, replace: false, blobTarget: env.blobTarget(), actor: 'e2e' });
    const got = await tableContents(target.url);
    for (const table of MAPPED_TABLES) expect(got[table], table).toEqual(source[table]);
  });

  it('a shard killed midway leaves no complete snapshot, and the next backup succeeds', async () => {
    await applyChurn(env.chat.url, { addFraction: 0.01, editFraction: 0.002, deleteFraction: 0.001, seed: 13 });
    const before = (await (await env.rt.vault()).listSnapshots()).map((s) => s.id);
    const coordinator = run(env, ['--coordinate', String(SHARDS)]);
    const started = Array.from({ length: SHARDS }, (_, i) =>
      run(env, ['--shard', `${i}/${SHARDS}`, '--wait', '60'], i === 1 ? { LETHE_FAILPOINTS: 'backup.after-cells:1' } : undefined),
    );
    const outs = await Promise.all(started.map((w) => w.done));
    expect(outs[1]?.signal).toBe('SIGKILL');
    const done = await coordinator.done;
    expect(done.code).toBe(1);
    expect(`${done.stdout}${done.stderr}`).toMatch(/shard 1\/3 .*died before it finished; nothing of this snapshot was kept/);
    await waitForAdvisoryLocksReleased(env.vaultDb.name);
    const listed = await env.cli(['snapshots', '--config', env.configPath, '--json']);
    expectExit(listed, 0);
    expect((jsonOut(listed) as { snapshots: { id: string }[] }).snapshots.map((s) => s.id)).toEqual(before);
    const next = await backup(env.rt, { actor: 'e2e' });
    expect(next.previousId).toBe(before[0]);
    const checked = await verify(env.rt, { snapshot: 'latest', actor: 'e2e' });
    expect(checked.findings).toEqual([]);
    expect(checked.ok).toBe(true);
  });

  it('a file missing from the chat store is a finding of the shard that meets it, and its location is never kept in the vault', async () => {
    await waitForAdvisoryLocksReleased(env.vaultDb.name);
    const location = await queryValue<string>(env.chat.url, 'SELECT object_key AS v FROM public.files ORDER BY id LIMIT 1');
    await rm(join(env.filesDir, location));
    const coordinator = run(env, ['--coordinate', String(SHARDS), '--full-read']);
    const outs = await Promise.all(Array.from({ length: SHARDS }, (_, i) => run(env, ['--shard', `${i}/${SHARDS}`, '--wait', '60']).done));
    // Workers hand their findings to the coordinator, which judges the snapshot.
    expect(outs.map((o) => o.code)).toEqual([0, 0, 0]);
    const done = await coordinator.done;
    expect(done.code, done.stderr).toBe(3);
    const result = JSON.parse(done.stdout) as BackupResult;
    expect(result.findings.map((f) => [f.table, f.kind, f.location])).toEqual([['files', 'missing', '']]);
    const kept = await queryValue<string>(env.vaultDb.url, `SELECT string_agg(coalesce(result::text, ''), ' ') AS v FROM lethe.backup_shards`);
    expect(kept).toContain('"missing"');
    expect(kept).not.toContain(location);
    const stats = await queryValue<string>(env.vaultDb.url, `SELECT stats::text AS v FROM lethe.snapshots WHERE id = '${result.snapshotId}'`);
    expect(stats).not.toContain(location);
  });

  it('refuses a malformed shard and a worker with nothing to join, naming the fix', async () => {
    const bad = await env.cli(['backup', '--config', env.configPath, '--shard', '3/3']);
    expectExit(bad, 2);
    expect(bad.stderr).toMatch(/--shard takes I\/K/);
    const lonely = await env.cli(['backup', '--config', env.configPath, '--shard', '0/2', '--wait', '1']);
    expect(lonely.code).toBe(1);
    expect(lonely.stderr).toMatch(/start `lethe backup --coordinate 2`/);
  });
});
