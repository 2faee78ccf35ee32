import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase } from '../../helpers/postgres.ts';
import { isLetheError } from '../../../src/errors/index.ts';
import type { Vault } from '../../../src/vault/index.ts';
import { expectNoCheckedOutClients, migratedVault, rawSql, rejectsWith } from './fixture.ts';

/** A promise and the function that resolves it, to hold a lock until the test says so. */
function gate(): { opened: Promise<void>; open: () => void } {
  let open = (): void => undefined;
  const opened = new Promise<void>((resolve) => {
    open = resolve;
  });
  return { opened, open };
}

describe('vault job locks', () => {
  let db: Awaited<ReturnType<typeof createTestDatabase>>;
  let a: Awaited<ReturnType<typeof migratedVault>>;
  let b: Awaited<ReturnType<typeof migratedVault>>;
  let other: Awaited<ReturnType<typeof migratedVault>>;
  let vaultA: Vault;
  let vaultB: Vault;
  beforeAll(async () => {
    db = await createTestDatabase('vault_locks');
    // Two Vault instances on separate pools stand in for two lethe processes.
    a = await migratedVault(db.url);
    b = await migratedVault(db.url);
    other = await migratedVault(db.url, 'lethe_other');
    vaultA = a.vault;
    vaultB = b.vault;
  });
  afterEach(() => {
    for (const fx of [a, b, other]) expectNoCheckedOutClients(fx.pool);
  });
  afterAll(async () => {
    for (const fx of [a, b, other]) await fx.close();
    await db.drop();
  });

  it('lets one run hold a job lock and turns the other away at once', async () => {
    const release = gate();
    const entered = gate();
    const holder = vaultA.withJobLock('backup', async () => {
      entered.open();
      await release.opened;
      return 'done by A';
    });
    await entered.opened;

    const err = await rejectsWith(
      vaultB.withJobLock('backup', () => Promise.resolve('never')),
      'JOB_LOCKED',
    );
    expect(err.message).toMatch(
      /^another `lethe backup` is running \(lock held by PostgreSQL backend \d+/,
    );

    // Other jobs, and the same job in another vault schema, are independent.
    expect(await vaultB.withJobLock('verify', () => Promise.resolve('verify ran'))).toBe(
      'verify ran',
    );
    expect(await other.vault.withJobLock('backup', () => Promise.resolve('other ran'))).toBe(
      'other ran',
    );

    release.open();
    expect(await holder).toBe('done by A');
    expect(await vaultB.withJobLock('backup', () => Promise.resolve('B ran'))).toBe('B ran');
  });

  it('releases the lock when the job throws', async () => {
    await expect(
      vaultA.withJobLock('backup', () => Promise.reject(new Error('job failed'))),
    ).rejects.toThrow('job failed');
    expect(await vaultB.withJobLock('backup', () => Promise.resolve(1))).toBe(1);
  });

  it('lets only one of many simultaneous runs in', async () => {
    const release = gate();
    const runs = [vaultA, vaultB, vaultA, vaultB].map((v) =>
      v.withJobLock('lifecycle', async () => {
        await release.opened;
        return 'ran';
      }),
    );
    const settled = Promise.allSettled(runs);
    await new Promise((resolve) => setTimeout(resolve, 300));
    release.open();
    const results = await settled;
    expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
    const refused = results.filter((r) => r.status === 'rejected');
    expect(refused).toHaveLength(3);
    for (const r of refused) expect(isLetheError(r.reason, 'JOB_LOCKED')).toBe(true);
  });

  it('aborts the job when the connection holding its lock is lost', async () => {
    const entered = gate();
    let seen: AbortSignal | undefined;
    const run = vaultA.withJobLock('backup', async (signal) => {
      seen = signal;
      entered.open();
      await new Promise<void>((resolve) =>
        signal.addEventListener('abort', () => resolve(), { once: true }),
      );
      return signal.reason as unknown;
    });
    await entered.opened;
    const { rows } = await rawSql(
      db.url,
      `SELECT pg_terminate_backend(pid) AS killed FROM pg_locks
        WHERE locktype = 'advisory' AND granted AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`,
    );
    expect(rows).toEqual([{ killed: true }]);
    const reason = await run;
    expect(seen?.aborted).toBe(true);
    expect(isLetheError(reason, 'JOB_LOCKED')).toBe(true);
    expect((reason as Error).message).toMatch(
      /lost the database connection holding the backup job lock/,
    );
    // The session lock died with its connection, so another run may start.
    expect(await vaultB.withJobLock('backup', () => Promise.resolve('B ran'))).toBe('B ran');
  });

  it('passes the caller signal through to the job', async () => {
    const controller = new AbortController();
    const run = vaultA.withJobLock(
      'backup',
      (signal) =>
        new Promise<string>((resolve) => {
          signal.addEventListener('abort', () => resolve('stopped'), { once: true });
          controller.abort();
        }),
      { signal: controller.signal },
    );
    expect(await run).toBe('stopped');
  });
});
