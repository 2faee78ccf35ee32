import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ErrorCode } from '../../../src/errors/index.ts';
import { createTestDatabase } from '../../helpers/postgres.ts';
import { VAULT_SCHEMA_VERSION, Vault, migrateVault } from '../../../src/vault/index.ts';
import { MIGRATIONS } from '../../../src/vault/migrations.ts';
import { rawSql, rejectsWith } from './fixture.ts';

const TABLES = [
  'approvers',
  'audit_log',
  'backup_shards',
  'cell_copies',
  'cell_keys',
  'daemon_runs',
  'destructions',
  'dimension_keys',
  'encapsulation_ciphertexts',
  'encapsulations',
  'erase_requests',
  'held_cell_keys',
  'holds',
  'master_epochs',
  'meta',
  'migrations',
  'segments',
  'signing_keys',
  // A view over cell_copies and snapshots.
  'snapshot_cells',
  'snapshots',
  'store_objects',
  'verifications',
];

describe('migrateVault', () => {
  let db: Awaited<ReturnType<typeof createTestDatabase>>;
  beforeAll(async () => {
    db = await createTestDatabase('vault_migrate');
  });
  afterAll(async () => {
    await db.drop();
  });

  async function tablesIn(schema: string): Promise<string[]> {
    const { rows } = await rawSql(
      db.url,
      `SELECT table_name FROM information_schema.tables WHERE table_schema = $1 ORDER BY table_name`,
      [schema],
    );
    return rows.map((r: { table_name: string }) => r.table_name);
  }

  it('creates every table once when two inits race on a fresh database', async () => {
    const results = await Promise.all([
      migrateVault(db.url),
      migrateVault(db.url),
      migrateVault(db.url),
    ]);
    const applied = results.map((r) => r.applied).sort((a, b) => b.length - a.length);
    expect(applied).toEqual([MIGRATIONS.map((m) => m.version), [], []]);
    expect(await tablesIn('lethe')).toEqual(TABLES);
    const { rows } = await rawSql(db.url, 'SELECT version, name FROM lethe.migrations');
    expect(rows).toEqual(MIGRATIONS.map((m) => ({ version: m.version, name: m.name })));
    const meta = await rawSql(db.url, `SELECT value FROM lethe.meta WHERE key = 'format_version'`);
    expect(meta.rows).toEqual([{ value: 2 }]);
  });

  it('is idempotent', async () => {
    expect(await migrateVault(db.url)).toEqual({ applied: [] });
    expect(await migrateVault(db.url, 'lethe')).toEqual({ applied: [] });
  });

  it('keeps vaults in different schemas apart', async () => {
    expect(await migrateVault(db.url, 'lethe_staging')).toEqual({
      applied: MIGRATIONS.map((m) => m.version),
    });
    expect(VAULT_SCHEMA_VERSION).toBe(MIGRATIONS.at(-1)?.version);
    expect(await tablesIn('lethe_staging')).toEqual(TABLES);
  });

  it('refuses a schema name that is not a plain identifier, before touching the database', async () => {
    await rejectsWith(migrateVault(db.url, 'lethe"; DROP SCHEMA lethe; --'), 'CONFIG_INVALID');
    expect(await tablesIn('lethe')).toEqual(TABLES);
  });

  it('refuses a vault migrated by a newer lethe', async () => {
    await migrateVault(db.url, 'lethe_future');
    await rawSql(
      db.url,
      `INSERT INTO lethe_future.migrations (version, name) VALUES (99, 'future')`,
    );
    const err = await rejectsWith(migrateVault(db.url, 'lethe_future'), 'VAULT');
    expect(err.message).toMatch(/migration\(s\) 99.*upgrade lethe/);
    const openErr = await rejectsWith(Vault.open(db.url, 'lethe_future'), 'VAULT');
    expect(openErr.message).toMatch(/version 99, newer than this lethe.*upgrade lethe/);
  });

  it('makes the audit log append-only for ordinary statements', async () => {
    const vault = await Vault.open(db.url);
    try {
      await vault.appendAudit({ actor: 'test', action: 'vault.init', subject: 'lethe' });
    } finally {
      await vault.close();
    }
    await expect(rawSql(db.url, `UPDATE lethe.audit_log SET actor = 'mallory'`)).rejects.toThrow(
      /append-only \(UPDATE refused\)/,
    );
    await expect(rawSql(db.url, 'DELETE FROM lethe.audit_log')).rejects.toThrow(/append-only/);
    await expect(rawSql(db.url, 'TRUNCATE lethe.audit_log')).rejects.toThrow(/append-only/);
  });
  it('refuses a vault of the per-cell key format with a message that names the fix, changing nothing', async () => {
    // A vault as the previous lethe left it: migrations 1 to 4 and one snapshot recorded.
    const client = new pg.Client({ connectionString: db.url });
    await client.connect();
    try {
      await client.query('CREATE SCHEMA lethe_v1; SET search_path TO lethe_v1;');
      await client.query('CREATE TABLE migrations (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())');
      for (const m of MIGRATIONS.filter((x) => x.version <= 4)) {
        await client.query(m.sql);
        await client.query('INSERT INTO migrations (version, name) VALUES ($1, $2)', [m.version, m.name]);
      }
      await client.query(`INSERT INTO snapshots (id, run_owner) VALUES ('20260101T000000Z-aaaaaa', 'old')`);
    } finally {
      await client.end();
    }
    const err = await rejectsWith(migrateVault(db.url, 'lethe_v1'), ErrorCode.VAULT);
    expect(err.message).toMatch(/one AND-wrapped key per cell \(vault format 1\)/);
    expect(err.message).toMatch(/give this version a new vault .*then run lethe init/);
    // The refused migration rolled back: the old vault is as it was.
    const { rows } = await rawSql(db.url, 'SELECT max(version) AS v FROM lethe_v1.migrations');
    expect(rows).toEqual([{ v: 4 }]);
    expect(await tablesIn('lethe_v1')).toContain('key_files');
  });
});

describe('migration 6: snapshots as trees', () => {
  let db: Awaited<ReturnType<typeof createTestDatabase>>;
  beforeAll(async () => {
    db = await createTestDatabase('vault_migrate6');
  });
  afterAll(async () => {
    await db.drop();
  });

  it('turns the per-snapshot cell index into copies by interval: every snapshot holds exactly the cells it had', async () => {
    const client = new pg.Client({ connectionString: db.url });
    await client.connect();
    // (snapshot, cell, pack, offset) rows as a v5 vault held them, reused flags included.
    const cells: [string, string, string, number, boolean][] = [
      ['s1', 'messages/t/2026-01/u/c1', 'p1', 0, false],
      ['s1', 'messages/t/2026-01/u/c2', 'p1', 100, false],
      ['s2', 'messages/t/2026-01/u/c1', 'p1', 0, true],
      ['s2', 'messages/t/2026-01/u/c2', 'p2', 0, false],
      ['s2', 'messages/t/2026-02/u/c3', 'p2', 100, false],
      ['s3', 'messages/t/2026-02/u/c4', 'p3', 0, false],
      ['s4', 'messages/t/2026-01/u/c1', 'p1', 0, true],
      ['s4', 'messages/t/2026-02/u/c3', 'p2', 100, true],
      ['s5', 'messages/t/2026-01/u/c1', 'p9', 0, false],
    ];
    const snapshots: [string, string, string][] = [
      ['s1', 'complete', 'store-a'],
      ['s2', 'expired', 'store-a'],
      ['s3', 'abandoned', 'store-a'],
      ['s4', 'complete', 'store-a'],
      ['s5', 'complete', 'store-b'],
    ];
    try {
      await client.query('CREATE SCHEMA lethe_v5; SET search_path TO lethe_v5;');
      await client.query('CREATE TABLE migrations (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())');
      for (const m of MIGRATIONS.filter((x) => x.version <= 5)) {
        await client.query(m.sql);
        await client.query('INSERT INTO migrations (version, name) VALUES ($1, $2)', [m.version, m.name]);
      }
      await client.query(`INSERT INTO cell_keys (id, tenant, data_class, period, author, dimension_ids) VALUES ('k', 't', 'messages', '2026-01', 'u', '{tenant:t}')`);
      for (const [i, [id, status, store]] of snapshots.entries()) {
        await client.query(
          `INSERT INTO snapshots (id, status, started_at, expired_at, completed_at, manifest_key, manifest_sha256, run_owner, stats)
           VALUES ($1, $2, now() + $3 * interval '1 minute', CASE WHEN $2 = 'expired' THEN now() END, CASE WHEN $2 = 'abandoned' THEN NULL ELSE now() END,
                   CASE WHEN $2 = 'abandoned' THEN NULL ELSE 'm' END, CASE WHEN $2 = 'abandoned' THEN NULL ELSE 'h' END, 'old',
                   CASE WHEN $2 = 'abandoned' THEN NULL ELSE jsonb_build_object('store', $4::text) END)`,
          [id, status, i, store],
        );
        await client.query(`INSERT INTO encapsulations (id, purpose, snapshot_id, tenant, kem, ephemeral) VALUES ($1, 'snapshot', $2, 't', 'x25519', $3)`, [`${id}/t`, id, Buffer.alloc(32, i + 1)]);
      }
      for (const [snapshot, cell, pack, offset, reused] of cells) {
        const enc = reused ? `${cells.find((c) => c[1] === cell && c[2] === pack && !c[4])?.[0] ?? ''}/t` : `${snapshot}/t`;
        await client.query(
          `INSERT INTO snapshot_cells (snapshot_id, table_name, cell_id, tenant, data_class, period, author, key_id, pack, pack_offset,
                                       pack_length, sha256, row_count, bytes_plain, reused, encapsulation)
           VALUES ($1, 'messages', $2, 't', 'messages', '2026-01', 'u', 'k', $3, $4, 10, $5, 1, 10, $6, $7)`,
          [snapshot, cell, pack, offset, `${pack}:${offset}`, reused, enc],
        );
      }
      await client.query(`INSERT INTO cell_digests VALUES ('messages', 'messages/t/2026-02/u/c3', 'k', 'p2', 100, $1)`, ['d'.repeat(64)]);
    } finally {
      await client.end();
    }
    await migrateVault(db.url, 'lethe_v5');
    const view = await rawSql(db.url, 'SELECT snapshot_id, cell_id, pack, pack_offset::int AS o, reused FROM lethe_v5.snapshot_cells ORDER BY 1, 2');
    const expected = cells
      .filter(([id]) => id !== 's3')
      .map(([snapshot_id, cell_id, pack, o, reused]) => ({ snapshot_id, cell_id, pack, o, reused }))
      .sort((a, b) => (`${a.snapshot_id} ${a.cell_id}` < `${b.snapshot_id} ${b.cell_id}` ? -1 : 1));
    expect(view.rows).toEqual(expected);
    // One row per copy, not per snapshot; the digest kept on the copy it describes.
    const copies = await rawSql(db.url, 'SELECT count(*)::int AS n, count(digest)::int AS d FROM lethe_v5.cell_copies');
    expect(copies.rows).toEqual([{ n: 5, d: 1 }]);
    const tables = await rawSql(db.url, "SELECT table_name FROM information_schema.tables WHERE table_schema = 'lethe_v5' AND table_name = 'cell_digests'");
    expect(tables.rows).toEqual([]);
  });
});

describe('Vault.open', () => {
  let db: Awaited<ReturnType<typeof createTestDatabase>>;
  beforeAll(async () => {
    db = await createTestDatabase('vault_open');
  });
  afterAll(async () => {
    await db.drop();
  });

  it('tells the operator to run `lethe init` on a database without a vault', async () => {
    const err = await rejectsWith(Vault.open(db.url), 'VAULT');
    expect(err.message).toMatch(/^vault not initialised: run `lethe init`/);
    expect(err.message).toContain('"lethe"');
  });

  it('tells the operator to run `lethe init` when the schema exists but is not migrated', async () => {
    await rawSql(db.url, 'CREATE SCHEMA half_done');
    const err = await rejectsWith(Vault.open(db.url, 'half_done'), 'VAULT');
    expect(err.message).toMatch(/^vault not initialised: run `lethe init`/);
  });

  it('opens a migrated vault', async () => {
    await migrateVault(db.url, 'ready');
    const vault = await Vault.open(db.url, 'ready');
    try {
      expect(vault.schema).toBe('ready');
      expect(await vault.listSnapshots()).toEqual([]);
    } finally {
      await vault.close();
    }
  });

  it('never shows the connection password, even when logged', async () => {
    await migrateVault(db.url, 'ready');
    const vault = await Vault.open(db.url, 'ready');
    try {
      const password = new URL(db.url).password;
      expect(password.length).toBeGreaterThan(0);
      expect(JSON.stringify(vault)).not.toContain(password);
      const { inspect } = await import('node:util');
      expect(inspect(vault, { depth: 10 })).not.toContain(password);
    } finally {
      await vault.close();
    }
  });

});
