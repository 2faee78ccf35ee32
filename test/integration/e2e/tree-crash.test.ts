import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { backup, initialize, restore, verify } from '../../../src/jobs/tasks.ts';
import type { BackupResult } from '../../../src/snapshot/index.ts';
import { applyChurn } from '../../../src/store/index.ts';
import {
  createChatTemplate,
  createLetheEnv,
  expectExit,
  jsonOut,
  MAPPED_TABLES,
  tableContents,
  waitForAdvisoryLocksReleased,
  type LetheEnv,
  type TestDatabase,
} from '../../helpers/lethe-env.ts';

/**
 * Must hold: a tree-writing backup killed (SIGKILL) at any point, from the fingerprint plan
 * to the moment after its manifest is stored and before the vault marks it complete, leaves
 * nothing listed as complete; the next backup succeeds, follows the last complete snapshot,
 * verifies, and restores equal to the source.
 */

/** Where the backup kills itself (src/util/failpoint.ts), in the order a run reaches them. */
const POINTS = [
  'backup.after-plan:1',
  'backup.after-cells:1',
  'backup.after-segment:1',
  'backup.after-segment:3',
  'backup.after-segments',
  'backup.after-manifest',
];

describe('a tree-writing backup killed at any point', () => {
  let template: TestDatabase;
  let env: LetheEnv;
  let first: BackupResult;
  const killed: string[] = [];

  beforeAll(async () => {
    template = await createChatTemplate('e2e_tree_crash_tpl');
    env = await createLetheEnv({ template: template.name });
    await initialize(env.rt, 'e2e');
    first = await backup(env.rt, { actor: 'e2e' });
    await applyChurn(env.chat.url, { addFraction: 0.01, editFraction: 0.002, deleteFraction: 0.001, seed: 4 });
  }, 300_000);
  afterAll(async () => {
    await env.cleanup();
    await template.drop();
  });

  it('dies at each point and leaves only the complete snapshot listed', async () => {
    for (const point of POINTS) {
      const run = await env.cli(['backup', '--config', env.configPath, '--json'], { env: { LETHE_FAILPOINTS: point }, timeoutMs: 180_000 });
      expect(run.signal, `${point}: ${run.stderr}`).toBe('SIGKILL');
      killed.push(point);
      await waitForAdvisoryLocksReleased(env.vaultDb.name);
      const listed = await env.cli(['snapshots', '--config', env.configPath, '--json']);
      expectExit(listed, 0);
      const snapshots = (jsonOut(listed) as { snapshots: { id: string; status: string }[] }).snapshots;
      expect(snapshots.map((s) => s.id), point).toEqual([first.snapshotId]);
      const vault = await env.rt.vault();
      expect((await vault.latestCompleteSnapshot())?.id, point).toBe(first.snapshotId);
    }
    expect(killed).toEqual(POINTS);
  }, 600_000);

  it('the next backup follows the last complete snapshot, verifies and restores equal to the source', async () => {
    const result = await backup(env.rt, { actor: 'e2e' });
    expect(result.previousId).toBe(first.snapshotId);
    expect(result.segmentsWritten).toBeGreaterThan(0);
    expect(result.cellsRead).toBeLessThan(result.cells);
    const vault = await env.rt.vault();
    const runs = await vault.listSnapshots({ includeIncomplete: true });
    expect(runs.filter((s) => s.status === 'abandoned')).toHaveLength(POINTS.length);
    expect(runs.filter((s) => s.status === 'complete').map((s) => s.id).sort()).toEqual([first.snapshotId, result.snapshotId].sort());

    const checked = await verify(env.rt, { snapshot: 'latest', actor: 'e2e' });
    expect(checked.findings).toEqual([]);
    expect(checked.ok).toBe(true);
    const target = await env.database('e2e_tree_crash_restore');
    await restore(env.rt, { snapshot: result.snapshotId, targetUrl: target.url, replace: false, blobTarget: env.blobTarget(), actor: 'e2e' });
    const got = await tableContents(target.url);
    const source = await tableContents(env.chat.url);
    for (const table of MAPPED_TABLES) expect(got[table], table).toEqual(source[table]);
    // And the first snapshot is untouched by everything the dead runs marked.
    const again = await verify(env.rt, { snapshot: first.snapshotId, actor: 'e2e' });
    expect(again.ok, JSON.stringify(again.findings)).toBe(true);
    expect(again.cells).toBe(first.cells);
  }, 300_000);
});
