import { once } from 'node:events';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { backup, initialize, verify } from '../../../src/jobs/tasks.ts';
import {
  createChatTemplate,
  createLetheEnv,
  expectExit,
  filesUnder,
  jsonOut,
  queryValue,
  waitForAdvisoryLocksReleased,
  type LetheEnv,
  type TestDatabase,
} from '../../helpers/lethe-env.ts';

/**
 * Must hold: the manifest is the commit point. A backup killed (SIGKILL, no chance to
 * clean up) after uploading packs leaves no snapshot anyone can list or restore, and the
 * next run takes a complete, verifiable snapshot and marks the dead run abandoned.
 */

async function waitFor<T>(
  what: string,
  probe: () => Promise<T | undefined>,
  timeoutMs = 60_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('a backup killed mid-run', () => {
  let template: TestDatabase;
  let env: LetheEnv;
  let killedId: string;
  let packsAtKill: string[];
  let incompleteAtKill: string[];

  beforeAll(async () => {
    template = await createChatTemplate('e2e_crash_tpl');
    env = await createLetheEnv({ template: template.name, backup: { packSizeMiB: 1 } });
    await initialize(env.rt, 'e2e');
    const storePath = env.storePath ?? '';

    // Park the run before the last table it reads (tables go in name order; `users` is last),
    // packs uploaded and one still open, and kill it there. (The backup holds an ACCESS SHARE
    // lock on every table it reads, so a lock can no longer park it: a pause point does.)
    {
      const child = env.spawnCli(['backup', '--config', env.configPath, '--json'], { env: { LETHE_PAUSEPOINTS: 'backup.table.users:120000' } });
      let output = '';
      child.stdout?.setEncoding('utf8').on('data', (t: string) => (output += t));
      child.stderr?.setEncoding('utf8').on('data', (t: string) => (output += t));
      const exited = once(child, 'exit');
      let idleBefore = false;
      await waitFor('the backup to park before the users table with a pack open', async () => {
        if (child.exitCode !== null) throw new Error(`backup exited early (${String(child.exitCode)}):\n${output}`);
        // A fresh session each time: pg_stat_activity is frozen for the length of a transaction.
        const busy = await queryValue<string>(
          env.chat.url,
          `SELECT count(*) FILTER (WHERE state <> 'idle in transaction')::text AS v FROM pg_stat_activity
            WHERE datname = current_database() AND application_name = 'lethe backup'`,
        );
        const packs = await filesUnder(join(storePath, 'packs')).catch(() => []);
        const open = (await filesUnder(join(storePath, '.incomplete')).catch(() => [] as string[])).filter((f) => f.startsWith('packs/'));
        const idle = busy === '0' && packs.length >= 1 && open.length >= 1;
        // Idle twice in a row: not a moment between two queries of a table's read.
        const parked = idle && idleBefore;
        idleBefore = idle;
        return parked ? true : undefined;
      });
      packsAtKill = (await filesUnder(join(storePath, 'packs'))).map((f) => `packs/${f}`);
      incompleteAtKill = await filesUnder(join(storePath, '.incomplete'));
      const running = await (await env.rt.vault()).listSnapshots({ includeIncomplete: true });
      expect(running.map((s) => s.status)).toEqual(['running']);
      killedId = running[0]?.id ?? '';
      child.kill('SIGKILL');
      const [code, signal] = (await exited) as [number | null, string | null];
      expect({ code, signal }).toEqual({ code: null, signal: 'SIGKILL' });
    }
  });
  afterAll(async () => {
    await env.cleanup();
    await template.drop();
  });

  it('had uploaded a pack, and was writing another, when it died', () => {
    expect(packsAtKill.length).toBeGreaterThanOrEqual(1);
    expect(incompleteAtKill.filter((f) => f.startsWith('packs/')).length).toBeGreaterThanOrEqual(1);
    expect(killedId).toMatch(/^\d{8}T\d{6}Z-[0-9a-f]{6}$/);
  });

  it('left no snapshot: none listed, no manifest object', async () => {
    const listed = await env.cli(['snapshots', '--config', env.configPath, '--json']);
    expectExit(listed, 0);
    expect((jsonOut(listed) as { snapshots: unknown[] }).snapshots).toEqual([]);
    const objects = await filesUnder(env.storePath ?? '');
    expect(objects.filter((k) => k.startsWith('snapshots/'))).toEqual([]);
    expect(objects).not.toContain(`snapshots/${killedId}.json`);
    await expect((await env.rt.vault()).getSnapshot(killedId)).rejects.toMatchObject({
      code: 'SNAPSHOT_NOT_FOUND',
    });
    await expect((await env.rt.vault()).getSnapshot('latest')).rejects.toMatchObject({
      code: 'SNAPSHOT_NOT_FOUND',
    });
  });

  it('the next backup succeeds, verifies, marks the dead run abandoned and clears its leftovers', async () => {
    await waitForAdvisoryLocksReleased(env.vaultDb.name);
    const result = await backup(env.rt, { actor: 'e2e' });
    expect(result.previousId).toBeNull();
    expect(result.cellsWritten).toBe(result.cells);
    const vault = await env.rt.vault();
    expect((await vault.findSnapshot(killedId))?.status).toBe('abandoned');
    expect((await vault.listSnapshots()).map((s) => s.id)).toEqual([result.snapshotId]);

    const checked = await verify(env.rt, { snapshot: 'latest', actor: 'e2e' });
    expect(checked.findings).toEqual([]);
    expect(checked.ok).toBe(true);
    expect(checked.snapshotId).toBe(result.snapshotId);
    expect(checked.cellsVerified).toBe(result.cells);

    // The dead run's half-written pack is gone; its finished packs stay, unreferenced, for
    // lifecycle to remove (only lifecycle deletes).
    const incomplete = await filesUnder(join(env.storePath ?? '', '.incomplete'));
    expect(incomplete.filter((f) => f.startsWith('packs/'))).toEqual([]);
    const packs = (await filesUnder(join(env.storePath ?? '', 'packs'))).map((f) => `packs/${f}`);
    for (const pack of packsAtKill) expect(packs).toContain(pack);
  });
});
