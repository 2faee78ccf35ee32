import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { inject } from 'vitest';

/** Superuser URL for `database` on the run's shared test server. */
export function databaseUrl(database: string): string {
  const url = new URL(inject('pgAdminUrl'));
  url.pathname = `/${database}`;
  return url.toString();
}

/** Runs `fn` with a superuser client on the `postgres` database. */
export async function withAdmin<T>(fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: inject('pgAdminUrl') });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

/**
 * A fresh database for one test file, optionally cloned from `template`; returns its URL
 * and a drop function to call in afterAll.
 */
export async function createTestDatabase(
  prefix: string,
  template?: string,
): Promise<{ name: string; url: string; drop: () => Promise<void> }> {
  const name = `${prefix}_${randomBytes(4).toString('hex')}`;
  await withAdmin(async (c) => {
    const from = template === undefined ? '' : ` TEMPLATE ${c.escapeIdentifier(template)}`;
    await c.query(`CREATE DATABASE ${c.escapeIdentifier(name)}${from}`);
  });
  return {
    name,
    url: databaseUrl(name),
    drop: () =>
      withAdmin(async (c) => {
        await c.query(`DROP DATABASE IF EXISTS ${c.escapeIdentifier(name)} WITH (FORCE)`);
      }),
  };
}
