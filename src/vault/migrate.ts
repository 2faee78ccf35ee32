import pg from 'pg';
import { ErrorCode, LetheError, wrapForeign } from '../errors/index.ts';
import { pgClientConfig } from '../tls/index.ts';
import { query } from './db.ts';
import { MIGRATIONS, VAULT_SCHEMA_VERSION, type Migration } from './migrations.ts';
import { DEFAULT_VAULT_SCHEMA, checkSchemaName, lockKeyText, vaultTables } from './schema-name.ts';

/**
 * Creates the vault schema or brings it up to {@link VAULT_SCHEMA_VERSION}; returns the
 * versions it applied (empty when already current).
 *
 * Idempotent and safe to run concurrently (two `lethe init` at once): everything happens
 * in one transaction that first takes a transaction-scoped advisory lock for this schema,
 * so a second run waits, then finds nothing left to do. Either every pending migration
 * applies or none does.
 *
 * Throws CONFIG_INVALID for a bad schema name, VAULT when the vault was migrated by a
 * newer lethe (its version is unknown here), DATABASE when PostgreSQL fails.
 */
export async function migrateVault(
  url: string,
  schema: string = DEFAULT_VAULT_SCHEMA,
): Promise<{ applied: number[] }> {
  const t = vaultTables(schema);
  const doing = `migrating the vault schema "${schema}"`;
  const client = new pg.Client(pgClientConfig(url));
  // An error on an idle client would otherwise be an unhandled 'error' event.
  client.on('error', () => undefined);
  try {
    await client.connect();
  } catch (err) {
    throw wrapForeign(ErrorCode.DATABASE, `${doing}: connecting to the vault database`, err);
  }
  try {
    await query(client, doing, 'BEGIN');
    try {
      const applied = await migrateLocked(client, schema, t.migrations, doing);
      await query(client, doing, 'COMMIT');
      return { applied };
    } catch (err) {
      await client.query('ROLLBACK').catch(() => undefined);
      throw err;
    }
  } finally {
    await client.end().catch(() => undefined);
  }
}

async function migrateLocked(
  client: pg.Client,
  schema: string,
  migrationsTable: string,
  doing: string,
): Promise<number[]> {
  await query(client, doing, 'SELECT pg_advisory_xact_lock(hashtextextended($1, 0))', [
    lockKeyText(schema, 'migrate'),
  ]);
  // CREATE SCHEMA IF NOT EXISTS needs CREATE on the database even when the schema exists;
  // the vault's owner role (lethe init --roles) has no such right, and needs none to migrate.
  const present = await query<{ found: boolean }>(
    client,
    doing,
    'SELECT EXISTS (SELECT FROM pg_catalog.pg_namespace WHERE nspname = $1) AS found',
    [checkSchemaName(schema)],
  );
  if (present.rows[0]?.found !== true) await query(client, doing, `CREATE SCHEMA IF NOT EXISTS "${schema}"`);
  await query(client, doing, `SET LOCAL search_path TO "${schema}"`);
  await query(
    client,
    doing,
    `CREATE TABLE IF NOT EXISTS ${migrationsTable} (
       version    integer PRIMARY KEY,
       name       text NOT NULL,
       applied_at timestamptz NOT NULL DEFAULT now()
     )`,
  );
  const { rows } = await query<{ version: number }>(
    client,
    doing,
    `SELECT version FROM ${migrationsTable} ORDER BY version`,
  );
  const done = new Set(rows.map((r) => r.version));
  const unknown = [...done].filter((v) => !MIGRATIONS.some((m) => m.version === v));
  if (unknown.length > 0) {
    throw new LetheError(
      ErrorCode.VAULT,
      `the vault schema "${schema}" has migration(s) ${unknown.join(', ')}, which this lethe ` +
        `does not know (it knows up to ${VAULT_SCHEMA_VERSION}): upgrade lethe`,
    );
  }
  const applied: number[] = [];
  for (const migration of pending(done)) {
    try {
      await client.query(migration.sql);
    } catch (err) {
      throw migrationRefusal(err, schema, migration.version) ?? wrapForeign(ErrorCode.DATABASE, `${doing}: migration ${migration.version} (${migration.name})`, err);
    }
    await query(client, doing, `INSERT INTO ${migrationsTable} (version, name) VALUES ($1, $2)`, [
      migration.version,
      migration.name,
    ]);
    applied.push(migration.version);
  }
  return applied;
}

function pending(done: ReadonlySet<number>): Migration[] {
  return [...MIGRATIONS].sort((a, b) => a.version - b.version).filter((m) => !done.has(m.version));
}

/**
 * A migration that refuses the vault (object_not_in_prerequisite_state) says why and what
 * to do in its message and hint: that is the operator's error (VAULT), not a crash. Any
 * other error: undefined.
 */
export function migrationRefusal(err: unknown, schema: string, version: number): LetheError | undefined {
  if (!(err instanceof pg.DatabaseError) || err.code !== '55000') return undefined;
  return new LetheError(ErrorCode.VAULT, `${err.message}: ${err.hint ?? 'see the README'}`, { details: { schema, migration: version } });
}
