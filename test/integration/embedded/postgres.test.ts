import { afterAll, describe, expect, it } from 'vitest';
import pg from 'pg';
import { createTestDatabase } from '../../helpers/postgres.ts';

describe('shared test PostgreSQL', () => {
  const dbs: { drop: () => Promise<void> }[] = [];
  afterAll(async () => {
    for (const db of dbs) await db.drop();
  });

  it('creates an isolated database that accepts queries', async () => {
    const db = await createTestDatabase('smoke');
    dbs.push(db);
    const client = new pg.Client({ connectionString: db.url });
    await client.connect();
    try {
      const { rows } = await client.query<{ db: string; v: string }>(
        'select current_database() as db, current_setting($1) as v',
        ['server_version_num'],
      );
      expect(rows[0]?.db).toBe(db.name);
      expect(Number(rows[0]?.v)).toBeGreaterThanOrEqual(150000);
    } finally {
      await client.end();
    }
  });
});
