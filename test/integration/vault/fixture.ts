import pg from 'pg';
import { expect } from 'vitest';
import { isLetheError, type ErrorCode } from '../../../src/errors/index.ts';
import { Vault, migrateVault } from '../../../src/vault/index.ts';

/**
 * A migrated vault in `schema` on its own pool, so tests can check the pool for leaks.
 * Pools stay small: every test file shares one server (max_connections = 60).
 */
export async function migratedVault(
  url: string,
  schema = 'lethe',
  maxConnections = 5,
): Promise<{ vault: Vault; pool: pg.Pool; close: () => Promise<void> }> {
  await migrateVault(url, schema);
  const pool = new pg.Pool({ connectionString: url, max: maxConnections });
  const vault = new Vault(pool, schema);
  return {
    vault,
    pool,
    close: async () => {
      await vault.close();
      await pool.end();
    },
  };
}

/** Fails unless every client the pool handed out has come back. */
export function expectNoCheckedOutClients(pool: pg.Pool): void {
  expect(pool.totalCount - pool.idleCount).toBe(0);
  expect(pool.waitingCount).toBe(0);
}

/** Awaits `promise`, expecting it to reject with a LetheError of `code`; returns the error. */
export async function rejectsWith(promise: Promise<unknown>, code: ErrorCode): Promise<Error> {
  try {
    await promise;
  } catch (err) {
    if (!isLetheError(err, code)) {
      throw new Error(`expected a LetheError ${code}, got ${String(err)}`, { cause: err });
    }
    return err;
  }
  throw new Error(`expected a LetheError ${code}, but the promise resolved`);
}

/** Runs one statement as the test superuser, outside the vault API (for tampering). */
export async function rawSql(
  url: string,
  text: string,
  values: unknown[] = [],
): Promise<pg.QueryResult> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return await client.query(text, values);
  } finally {
    await client.end();
  }
}
