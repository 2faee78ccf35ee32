// vacuumKeyTables waits for the transactions that could still see a destroyed key's old row
// version, and only for those: PostgreSQL's horizon for the vault's tables counts the vault
// database's sessions, not those of other databases on the same server (the chat store's
// backups hold long snapshots there).
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Vault } from '../../../src/vault/index.ts';
import { createTestDatabase } from '../../helpers/postgres.ts';
import { migratedVault } from './fixture.ts';

describe('vacuumKeyTables: the transaction horizon it waits for', () => {
  let vaultDb: Awaited<ReturnType<typeof createTestDatabase>>;
  let otherDb: Awaited<ReturnType<typeof createTestDatabase>>;
  let fx: Awaited<ReturnType<typeof migratedVault>>;
  let vault: Vault;

  beforeAll(async () => {
    [vaultDb, otherDb] = await Promise.all([createTestDatabase('vac_vault'), createTestDatabase('vac_other')]);
    fx = await migratedVault(vaultDb.url, 'lethe', 5);
    vault = fx.vault;
  });
  afterAll(async () => {
    await fx.close();
    await Promise.all([vaultDb.drop(), otherDb.drop()]);
  });

  /**
   * A client of `url` inside a transaction that has an xid and a snapshot, and then a
   * committed transaction in the vault database after it (as a destruction is): the open
   * one is older than the destruction.
   */
  const openTransaction = async (url: string): Promise<pg.Client> => {
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ');
    await client.query('SELECT pg_current_xact_id()');
    const later = new pg.Client({ connectionString: vaultDb.url });
    await later.connect();
    await later.query('SELECT pg_current_xact_id()');
    await later.end();
    return client;
  };

  it('does not wait for a transaction in another database of the server', async () => {
    const other = await openTransaction(otherDb.url);
    try {
      const started = Date.now();
      const { clean } = await vault.vacuumKeyTables({ waitMs: 5_000 });
      expect(clean).toBe(true);
      expect(Date.now() - started).toBeLessThan(2_500);
    } finally {
      await other.end();
    }
  });

  it('waits for an older transaction in the vault database, and is clean once it ends', async () => {
    const same = await openTransaction(vaultDb.url);
    try {
      expect((await vault.vacuumKeyTables({ waitMs: 300 })).clean).toBe(false);
    } finally {
      await same.query('COMMIT');
      await same.end();
    }
    expect((await vault.vacuumKeyTables({ waitMs: 5_000 })).clean).toBe(true);
  });
});
