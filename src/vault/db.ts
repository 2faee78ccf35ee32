import pg from 'pg';
import { ErrorCode, LetheError, wrapForeign } from '../errors/index.ts';
import { vaultTables, type VaultTables } from './schema-name.ts';

/** Anything that runs a query: the pool, or a client inside a transaction. */
export type Queryable = pg.Pool | pg.PoolClient | pg.Client;

/** What every vault operation needs: where to query and the qualified table names. */
export interface VaultContext {
  readonly pool: pg.Pool;
  readonly schema: string;
  readonly t: VaultTables;
}

/**
 * Makes `pool` safe against connections the server drops (a restart, a killed backend, an
 * embedded server stopped under us): pg reports that as an 'error' event on the pool when
 * the client is idle, and on the client itself while it is checked out (a job lock's
 * session, a transaction between statements), and an 'error' event nobody listens to ends
 * the process with a stack. With these listeners the next query on that client fails
 * instead, and becomes a DATABASE error saying what was being done. Returns `pool`.
 */
export function guardPool(pool: pg.Pool): pg.Pool {
  pool.on('error', () => undefined);
  pool.on('connect', (client) => {
    client.on('error', () => undefined);
  });
  return pool;
}

/** Builds the context for `schema` (checked) on `pool`. */
export function vaultContext(pool: pg.Pool, schema: string): VaultContext {
  return { pool, schema, t: vaultTables(schema) };
}

/**
 * Rows per multi-row statement. Large enough that a backup's thousands of cells take a
 * handful of round trips; small enough that one statement's parameters stay a few MB.
 */
export const BATCH_ROWS = 2000;

/**
 * Runs one statement; a pg error becomes a DATABASE LetheError saying what we were
 * `doing`. Callers bind every value as a parameter, so no value (and no secret) is ever
 * part of the SQL text a pg error might echo.
 */
export async function query<R extends pg.QueryResultRow>(
  db: Queryable,
  doing: string,
  text: string,
  values: readonly unknown[] = [],
): Promise<pg.QueryResult<R>> {
  try {
    return await db.query<R>(text, values as unknown[]);
  } catch (err) {
    throw wrapForeign(ErrorCode.DATABASE, withPrivilegeHint(doing, err), redactFailingRow(err));
  }
}

/**
 * `doing`, plus the fix when PostgreSQL refused for want of a privilege (SQLSTATE 42501):
 * with per-job vault roles that means this job runs as another job's role, or the roles
 * predate a migration.
 */
export function withPrivilegeHint(doing: string, err: unknown): string {
  if (!(err instanceof pg.DatabaseError) || err.code !== '42501') return doing;
  return (
    `${doing} (refused to this vault role: check that vault.database.url names this job's role, ` +
    'and run `lethe init --roles` again after upgrading lethe; see docs/operations.md, "Vault roles")'
  );
}

/**
 * A constraint violation's `detail` ("Failing row contains (...)") prints the whole row,
 * which for digest and signing keys is key material; the error kept as `cause` would
 * carry it into logs. The message and constraint name are enough to diagnose.
 */
export function redactFailingRow(err: unknown): unknown {
  if (err instanceof pg.DatabaseError && err.detail?.startsWith('Failing row contains') === true) {
    err.detail = 'Failing row contains [redacted: vault rows may hold key material]';
  }
  return err;
}

/**
 * Runs `fn` in a READ COMMITTED transaction on one pooled client: commits when it
 * resolves, rolls back when it throws. A client whose rollback failed is destroyed rather
 * than returned to the pool in an unknown state.
 */
export async function inTransaction<T>(
  pool: pg.Pool,
  doing: string,
  fn: (client: pg.PoolClient) => Promise<T>,
): Promise<T> {
  let client: pg.PoolClient;
  try {
    client = await pool.connect();
  } catch (err) {
    throw wrapForeign(ErrorCode.DATABASE, `${doing}: connecting to the vault`, err);
  }
  let broken: Error | undefined;
  try {
    await query(client, doing, 'BEGIN');
    const result = await fn(client);
    await query(client, doing, 'COMMIT');
    return result;
  } catch (err) {
    try {
      await client.query('ROLLBACK');
    } catch (rollbackErr) {
      broken = rollbackErr instanceof Error ? rollbackErr : new Error(String(rollbackErr));
    }
    throw wrapForeign(ErrorCode.DATABASE, doing, err);
  } finally {
    client.release(broken);
  }
}

/**
 * Converts an int8 (which pg returns as a string, to avoid precision loss) to a number,
 * refusing values beyond 2^53 rather than silently rounding an offset or a count.
 */
export function toSafeInt(value: string | number, what: string): number {
  const n = typeof value === 'number' ? value : Number(value);
  if (!Number.isSafeInteger(n)) {
    throw new LetheError(
      ErrorCode.VAULT,
      `the vault holds ${what} = ${String(value)}, which is not an integer lethe can represent exactly`,
    );
  }
  return n;
}

/** Splits `items` into consecutive slices of at most `size`. */
export function* chunks<T>(items: readonly T[], size: number = BATCH_ROWS): Generator<T[]> {
  for (let i = 0; i < items.length; i += size) yield items.slice(i, i + size);
}

/** The distinct values of `ids`, in first-seen order. */
export function distinct(ids: Iterable<string>): string[] {
  return [...new Set(ids)];
}
