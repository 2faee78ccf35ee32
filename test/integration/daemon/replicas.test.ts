import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { verify } from '../../../src/jobs/tasks.ts';
import { initialisedDeployment, startDaemon, waitFor, type DaemonChild } from '../../helpers/daemon.ts';
import { expectExit, jsonOut, queryValue, type LetheEnv } from '../../helpers/lethe-env.ts';

/**
 * Must hold: two daemons on one vault with a schedule every 5 seconds for 60 seconds run
 * every slot exactly once, never overlap a job with itself, and every snapshot verifies.
 * SIGTERM during a backup exits 0 within the deadline with nothing listed complete that is
 * not, and the next run succeeds; a daemon killed with SIGKILL mid-backup has its run taken
 * over by the other after the lease.
 */

interface RunRow {
  job: string;
  slot: Date;
  state: string;
  owner: string;
  started_at: Date;
  finished_at: Date | null;
  attempts: number;
  heartbeat_at: Date;
  taken_over_at: Date | null;
  error_code: string | null;
}

async function runs(env: LetheEnv, job = 'backup'): Promise<RunRow[]> {
  const client = new pg.Client({ connectionString: env.vaultDb.url });
  await client.connect();
  try {
    const { rows } = await client.query<RunRow>(
      'SELECT job, slot, state, owner, started_at, finished_at, attempts, heartbeat_at, taken_over_at, error_code FROM lethe.daemon_runs WHERE job = $1 ORDER BY slot',
      [job],
    );
    return rows;
  } finally {
    await client.end();
  }
}

async function daemonConfig(env: LetheEnv, name: string, daemon: Record<string, unknown>): Promise<string> {
  return env.writeConfig(name, { ...env.raw, daemon: { listen: '127.0.0.1:0', ...daemon } });
}

describe('two daemons on one vault', () => {
  const deployment = initialisedDeployment('daemon');

  it('run every 5-second slot of a minute exactly once, never overlapping, and every snapshot verifies', async () => {
    const { env } = deployment;
    const config = await daemonConfig(env, 'replicas.yaml', { leaseSeconds: 20, shutdownSeconds: 60, schedules: { backup: '*/5 * * * * *' } });
    const daemons: DaemonChild[] = [startDaemon(env, config), startDaemon(env, config)];
    const owners = await Promise.all(daemons.map((d) => d.owner));
    expect(new Set(owners).size).toBe(2);
    const windowStart = Date.now();
    await new Promise((r) => setTimeout(r, 60_000));
    const stops = await Promise.all(daemons.map((d) => d.stop('SIGTERM')));
    for (const [i, s] of stops.entries()) expect(s.code, daemons[i]?.stderr()).toBe(0);

    const rows = await runs(env);
    // Slots of the window: every 5 s from the first recorded to the last, none missing.
    const first = rows[0]?.slot.getTime() ?? 0;
    const last = rows.at(-1)?.slot.getTime() ?? 0;
    expect(first).toBeGreaterThanOrEqual(windowStart - 5000);
    expect((last - first) / 5000).toBeGreaterThanOrEqual(10); // about 12 slots in a minute
    const slots = rows.map((r) => r.slot.getTime());
    for (let at = first; at <= last; at += 5000) expect(slots.filter((s) => s === at), `slot ${new Date(at).toISOString()}`).toHaveLength(1);
    expect(slots).toHaveLength((last - first) / 5000 + 1);

    const ran = rows.filter((r) => r.state !== 'skipped');
    for (const r of ran) {
      expect(r.state, `slot ${r.slot.toISOString()}: ${r.error_code ?? ''}`).toBe('ok');
      expect(r.attempts).toBe(1);
      expect(owners).toContain(r.owner);
    }
    // Never two runs of the job at once, whichever daemon ran them.
    const byStart = [...ran].sort((a, b) => a.started_at.getTime() - b.started_at.getTime());
    for (let i = 1; i < byStart.length; i++) {
      const before = byStart[i - 1] as RunRow;
      const after = byStart[i] as RunRow;
      expect(before.finished_at?.getTime() ?? Infinity).toBeLessThanOrEqual(after.started_at.getTime());
    }
    // A slot is skipped only when it came due while the job was running (or just ending),
    // never because a second daemon found the job's lock held (that would be two at once).
    for (const s of rows.filter((r) => r.state === 'skipped')) {
      expect(s.error_code).toBeNull();
      const covered = ran.some((r) => r.started_at.getTime() - 2000 <= s.slot.getTime() && s.slot.getTime() <= (r.finished_at?.getTime() ?? 0) + 2000);
      expect(covered, `skipped slot ${s.slot.toISOString()} was not covered by a run`).toBe(true);
    }
    // Each daemon reported the runs it did.
    const reported = daemons.flatMap((d) => d.events.filter((e) => e['event'] === 'job'));
    expect(reported).toHaveLength(ran.length);

    // Every snapshot the daemons wrote verifies.
    const ids = await queryValue<string[]>(env.vaultDb.url, "SELECT coalesce(array_agg(id ORDER BY seq), '{}') AS v FROM lethe.snapshots WHERE status = 'complete'");
    expect(ids.length).toBe(ran.length);
    for (const id of ids) {
      const result = await verify(env.rt, { snapshot: id, actor: 'test' });
      expect(result.ok, `${id}: ${JSON.stringify(result.findings)}`).toBe(true);
    }
  }, 240_000);
});

describe('stopping a daemon mid-backup', () => {
  const deployment = initialisedDeployment('daemon_stop');

  const completeSnapshots = (): Promise<number> =>
    queryValue<number>(deployment.env.vaultDb.url, "SELECT count(*)::int AS v FROM lethe.snapshots WHERE status = 'complete'");
  const runningRow = (): Promise<RunRow | undefined> => runs(deployment.env).then((rows) => rows.find((r) => r.state === 'running'));

  it('SIGTERM lets the running backup finish within the deadline and exits 0', async () => {
    const { env } = deployment;
    const config = await daemonConfig(env, 'finish.yaml', { shutdownSeconds: 60, schedules: { backup: '*/2 * * * * *' } });
    const daemon = startDaemon(env, config, { LETHE_PAUSEPOINTS: 'backup.after-begin:3000' });
    await daemon.url;
    const row = await waitFor('a running backup', runningRow);
    const before = await completeSnapshots();
    const stopped = await daemon.stop('SIGTERM');
    expect(stopped.code, daemon.stderr()).toBe(0);
    expect(stopped.ms).toBeLessThan(60_000);
    const after = (await runs(env)).find((r) => r.slot.getTime() === row.slot.getTime());
    expect(after?.state).toBe('ok');
    expect(await completeSnapshots()).toBe(before + 1);
    expect(daemon.events.map((e) => e['event'])).toEqual(expect.arrayContaining(['stopping', 'stopped']));
  }, 120_000);

  it('SIGTERM past the deadline aborts the backup cleanly: exit 0, nothing half-listed, the next run succeeds', async () => {
    const { env } = deployment;
    const config = await daemonConfig(env, 'abort.yaml', { shutdownSeconds: 2, schedules: { backup: '*/2 * * * * *' } });
    const daemon = startDaemon(env, config, { LETHE_PAUSEPOINTS: 'backup.after-begin:120000' });
    await daemon.url;
    const row = await waitFor('a running backup', runningRow);
    const before = await completeSnapshots();
    const stopped = await daemon.stop('SIGTERM');
    expect(stopped.code, daemon.stderr()).toBe(0);
    expect(stopped.ms).toBeLessThan(15_000);
    const after = (await runs(env)).find((r) => r.slot.getTime() === row.slot.getTime());
    expect(after?.state).toBe('failed');
    expect(after?.error_code).toBe('ABORTED');
    expect(daemon.events.find((e) => e['event'] === 'stopped')?.['aborted']).toBe(true);
    // Nothing listed as complete that is not.
    expect(await completeSnapshots()).toBe(before);
    expect(await queryValue<number>(env.vaultDb.url, "SELECT count(*)::int AS v FROM lethe.snapshots WHERE status = 'running'")).toBe(0);
    const listed = jsonOut(await env.cli(['snapshots', '--config', env.configPath, '--json'])) as { snapshots: { id: string }[] };
    expect(listed.snapshots).toHaveLength(before);
    const next = await env.cli(['backup', '--config', env.configPath, '--json']);
    expectExit(next, 0);
    expect(await completeSnapshots()).toBe(before + 1);
  }, 120_000);

  it('SIGKILL mid-backup: the other daemon takes the run over after the lease and completes it', async () => {
    const { env } = deployment;
    const lease = 6;
    const everyThree = await daemonConfig(env, 'takeover.yaml', { leaseSeconds: lease, schedules: { backup: '*/3 * * * * *' } });
    // Daemon A claims a slot, pauses mid-backup long enough for B to be up, then dies by SIGKILL.
    const a = startDaemon(env, everyThree, { LETHE_PAUSEPOINTS: 'backup.after-begin:4000', LETHE_FAILPOINTS: 'backup.after-plan' });
    const aOwner = await a.owner;
    const claimed = await waitFor('A running a backup', async () => (await runs(env)).find((r) => r.state === 'running' && r.owner === aOwner));
    const b = startDaemon(env, everyThree);
    const bOwner = await b.owner;
    const died = await a.exited;
    expect(died.signal).toBe('SIGKILL');
    // A's last heartbeat, as the vault holds it: nobody may take over until a lease after it.
    const lastBeat = (await runs(env)).find((r) => r.slot.getTime() === claimed.slot.getTime());
    expect(lastBeat?.owner).toBe(aOwner);
    const taken = await waitFor(
      'B to take the run over',
      async () => (await runs(env)).find((r) => r.slot.getTime() === claimed.slot.getTime() && r.owner === bOwner),
      lease * 1000 + 20_000,
    );
    expect(taken.attempts).toBe(2);
    const afterBeatMs = (taken.taken_over_at?.getTime() ?? 0) - (lastBeat?.heartbeat_at.getTime() ?? 0);
    expect(afterBeatMs).toBeGreaterThanOrEqual(lease * 1000);
    expect(afterBeatMs).toBeLessThanOrEqual(lease * 1000 + 4000);
    const done = await waitFor('the taken-over run to finish', async () => {
      const r = (await runs(env)).find((x) => x.slot.getTime() === claimed.slot.getTime());
      return r?.state === 'running' ? undefined : r;
    });
    expect(done.state).toBe('ok');
    const stopped = await b.stop('SIGTERM');
    expect(stopped.code, b.stderr()).toBe(0);
    // Every complete snapshot verifies; no snapshot is left running.
    expect(await queryValue<number>(env.vaultDb.url, "SELECT count(*)::int AS v FROM lethe.snapshots WHERE status = 'running'")).toBe(0);
    const latest = await verify(env.rt, { snapshot: 'latest', actor: 'test' });
    expect(latest.ok).toBe(true);
  }, 180_000);
});

describe('a daemon after downtime, and the drill of an older snapshot', () => {
  const deployment = initialisedDeployment('daemon_down');

  it('runs the slots missed while no daemon was up once, recording the others as skipped', async () => {
    const { env } = deployment;
    const config = await daemonConfig(env, 'down.yaml', { schedules: { backup: '*/2 * * * * *' } });
    const first = startDaemon(env, config);
    await waitFor('a first backup', async () => ((await runs(env)).some((r) => r.state === 'ok') ? true : undefined));
    expect((await first.stop()).code, first.stderr()).toBe(0);
    const before = await runs(env);
    const lastBefore = before.at(-1) as RunRow;
    await new Promise((r) => setTimeout(r, 9000)); // four or five slots pass with no daemon up
    const second = startDaemon(env, config);
    const owner = await second.owner;
    const catchUp = await waitFor('the catch-up run', async () => (await runs(env)).find((r) => r.owner === owner && r.state !== 'skipped' && r.state !== 'running'));
    expect((await second.stop()).code, second.stderr()).toBe(0);
    const missed = (await runs(env)).filter((r) => r.slot > lastBefore.slot && r.slot < catchUp.slot);
    expect(missed.length).toBeGreaterThanOrEqual(3);
    expect(missed.every((r) => r.state === 'skipped')).toBe(true);
    expect(catchUp.state).toBe('ok');
    // Exactly one run stood in for the whole gap: the first non-skipped slot after it is the catch-up itself.
    const afterGap = (await runs(env)).filter((r) => r.slot > lastBefore.slot && r.state !== 'skipped');
    expect(afterGap[0]?.slot.getTime()).toBe(catchUp.slot.getTime());
  }, 120_000);

  it('verifyOlder drills a complete snapshot other than the newest', async () => {
    const { env } = deployment;
    const newest = await queryValue<string>(env.vaultDb.url, "SELECT id AS v FROM lethe.snapshots WHERE status = 'complete' ORDER BY seq DESC LIMIT 1");
    const config = await daemonConfig(env, 'older.yaml', { schedules: { verifyOlder: '*/2 * * * * *' } });
    const daemon = startDaemon(env, config);
    const drilled = await waitFor('an older drill', async () => {
      const [row] = (await runs(env, 'verifyOlder')).filter((r) => r.state !== 'running' && r.state !== 'skipped');
      return row;
    });
    expect((await daemon.stop()).code, daemon.stderr()).toBe(0);
    expect(drilled.state).toBe('ok');
    const details = await queryValue<{ snapshotId: string; rtoSeconds: number; rpoSeconds: number }>(
      env.vaultDb.url,
      "SELECT details AS v FROM lethe.daemon_runs WHERE job = 'verifyOlder' AND slot = $1",
      [drilled.slot],
    );
    expect(details.snapshotId).not.toBe(newest);
    expect(await queryValue<string>(env.vaultDb.url, 'SELECT status AS v FROM lethe.snapshots WHERE id = $1', [details.snapshotId])).toBe('complete');
    expect(details.rtoSeconds).toBeGreaterThan(0);
    expect(details.rpoSeconds).toBeGreaterThanOrEqual(0);
    // The drill is recorded as a verification of that snapshot, with its duration (RTO).
    expect(await queryValue<number>(env.vaultDb.url, 'SELECT count(*)::int AS v FROM lethe.verifications WHERE snapshot_id = $1', [details.snapshotId])).toBeGreaterThanOrEqual(1);
  }, 120_000);
});
