import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { lockKeyText } from '../../../src/vault/schema-name.ts';
import { initialisedDeployment, startDaemon, waitFor } from '../../helpers/daemon.ts';
import { expectExit, queryValue } from '../../helpers/lethe-env.ts';

/**
 * The daemon when the vault misbehaves under a run: a heartbeat that hangs (the row is
 * locked, as a network cut would leave it) stops the run within half a lease, before any
 * other daemon could take it over; a job whose lock another run holds gives its slot back
 * and runs it once the lock is free, instead of losing it.
 */

describe('a daemon under vault faults', () => {
  const deployment = initialisedDeployment('daemon_faults');
  let admin: pg.Client;

  beforeAll(async () => {
    admin = new pg.Client({ connectionString: deployment.env.vaultDb.url });
    await admin.connect();
  });
  afterAll(async () => {
    await admin.end();
  });

  /** The first column of the first row, or null when there is none. */
  const state = async (sql: string, params: unknown[] = []): Promise<string | null> => {
    const client = new pg.Client({ connectionString: deployment.env.vaultDb.url });
    await client.connect();
    try {
      const { rows } = await client.query<{ v: string | null }>(sql, params);
      return rows[0]?.v ?? null;
    } finally {
      await client.end();
    }
  };

  it('a heartbeat that hangs stops the run within half a lease', async () => {
    const { env } = deployment;
    const lease = 8;
    const config = await env.writeConfig('hang.yaml', { ...env.raw, daemon: { listen: '127.0.0.1:0', leaseSeconds: lease, schedules: { backup: '*/2 * * * * *' } } });
    const daemon = startDaemon(env, config, { LETHE_PAUSEPOINTS: 'backup.after-begin:120000' });
    await daemon.url;
    const snapshot = await waitFor('a running backup', async () =>
      (await state("SELECT id AS v FROM lethe.snapshots WHERE status = 'running' LIMIT 1")) ?? undefined,
    );
    // Every heartbeat (an UPDATE of the run's row) now waits on this lock: a hang, not an error.
    await admin.query('BEGIN');
    await admin.query("SELECT 1 FROM lethe.daemon_runs WHERE job = 'backup' AND state = 'running' FOR UPDATE");
    const locked = Date.now();
    await waitFor('the run to stop', async () =>
      (await state('SELECT status AS v FROM lethe.snapshots WHERE id = $1', [snapshot])) === 'abandoned' ? true : undefined,
    );
    const stoppedAfter = Date.now() - locked;
    expect(stoppedAfter).toBeLessThan((lease / 2 + lease / 4) * 1000 + 3000);
    await admin.query('ROLLBACK');
    const row = await waitFor('the run to be recorded', async () => {
      const code = await state("SELECT coalesce(error_code, state) AS v FROM lethe.daemon_runs WHERE job = 'backup' ORDER BY slot LIMIT 1");
      return code === 'running' ? undefined : code;
    });
    expect(row).toBe('VAULT');
    expect((await daemon.stop()).code, daemon.stderr()).toBe(0);
  }, 120_000);

  it('a job whose lock another run holds gives its slot back and runs once the lock is free', async () => {
    const { env } = deployment;
    await admin.query("DELETE FROM lethe.daemon_runs");
    const holder = new pg.Client({ connectionString: env.vaultDb.url });
    await holder.connect();
    try {
      await holder.query('SELECT pg_advisory_lock(hashtextextended($1, 0))', [lockKeyText('lethe', 'job:backup')]);
      const config = await env.writeConfig('locked.yaml', { ...env.raw, daemon: { listen: '127.0.0.1:0', schedules: { backup: '*/2 * * * * *' } } });
      const daemon = startDaemon(env, config);
      await daemon.url;
      await new Promise((r) => setTimeout(r, 5000));
      // Nothing recorded as run, failed or skipped while the lock was held elsewhere.
      expect(await queryValue<number>(env.vaultDb.url, "SELECT count(*)::int AS v FROM lethe.daemon_runs WHERE state <> 'running'")).toBe(0);
      await holder.query('SELECT pg_advisory_unlock_all()');
      await waitFor(
        'the backup to run once the lock is free',
        async () => ((await queryValue<number>(env.vaultDb.url, "SELECT count(*)::int AS v FROM lethe.daemon_runs WHERE job = 'backup' AND state = 'ok'")) > 0 ? true : undefined),
        40_000,
      );
      expect(await queryValue<number>(env.vaultDb.url, "SELECT count(*)::int AS v FROM lethe.daemon_runs WHERE error_code = 'JOB_LOCKED'")).toBe(0);
      expect((await daemon.stop()).code, daemon.stderr()).toBe(0);
    } finally {
      await holder.end();
    }
  }, 120_000);

  it('refuses at start to schedule drills or lifecycle without the master key, naming the field', async () => {
    const { env } = deployment;
    const { masterKey: _unused, ...withoutKey } = env.raw;
    const config = await env.writeConfig('nokey.yaml', { ...withoutKey, daemon: { listen: '127.0.0.1:0', schedules: { backup: '0 * * * *', verify: '0 3 * * *' } } });
    const run = await env.cli(['daemon', '--config', config]);
    expectExit(run, 2);
    expect(run.stderr).toMatch(/daemon\.schedules runs verify, which need the master key.*masterKey\.file/);
  });
});
