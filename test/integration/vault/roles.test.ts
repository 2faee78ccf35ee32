import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { chmod, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { userKeyId } from '../../../src/cells/ids.ts';
import { parseConfig } from '../../../src/config/index.ts';
import { ErrorCode } from '../../../src/errors/index.ts';
import { Runtime } from '../../../src/jobs/runtime.ts';
import { backup, initialize, lifecycleApply, restore, vaultBackup, verify } from '../../../src/jobs/tasks.ts';
import { createLogger } from '../../../src/log/index.ts';
import { demoSample } from '../../../src/store/demo-sample.ts';
import {
  VAULT_GRANTS,
  VAULT_ROLES,
  Vault,
  applyVaultRoles,
  migrateVault,
  vaultRoleNames,
  type VaultRole,
} from '../../../src/vault/index.ts';
import { MIGRATIONS } from '../../../src/vault/migrations.ts';
import {
  createChatTemplate,
  createLetheEnv,
  expectExit,
  jsonOut,
  tableContents,
  type LetheEnv,
  type RawConfig,
  type TestDatabase,
} from '../../helpers/lethe-env.ts';
import { createTestDatabase, withAdmin } from '../../helpers/postgres.ts';
import { rawSql, rejectsWith } from './fixture.ts';

/**
 * Must hold (issue 10, least privilege in the vault): `lethe init --roles` creates per-job
 * roles from the grant table; each job runs as its own role, and each role is refused
 * (SQLSTATE 42501) what it must not do: the backup reads no wrapped identity, verify and
 * restore destroy no key and change no hold or deletion request, only lifecycle destroys keys.
 * Idempotent, and a re-run after a migration grants the new table. Real PostgreSQL, real jobs.
 */

const NOW = new Date('2027-05-15T00:00:00Z');
const JOBS = ['backup', 'verify', 'lifecycle'] as const;
type Job = (typeof JOBS)[number];

/** Every role this file creates (cluster-wide), dropped in afterAll. */
const createdRoles = new Set<string>();

function password(): string {
  return randomBytes(18).toString('base64url');
}

/** `url` with another user and password. */
function asUser(url: string, user: string, pass: string): string {
  const u = new URL(url);
  u.username = user;
  u.password = pass;
  return u.toString();
}

/** Runs `sql` as the role behind `url`; resolves with the SQLSTATE it failed with, or 'ok'. */
async function attempt(url: string, sql: string, values: unknown[] = []): Promise<string> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    await client.query(sql, values);
    return 'ok';
  } catch (err) {
    return (err as { code?: string }).code ?? String(err);
  } finally {
    await client.end();
  }
}

/** Privileges, owners, policies and memberships as the catalogs show them, for comparing runs. */
async function catalogState(url: string, roles: readonly string[]): Promise<string[]> {
  const { rows } = await rawSql(
    url,
    `SELECT format('%s %s owner=%s rls=%s acl=%s', c.relname, c.relkind, c.relowner::regrole, c.relrowsecurity,
                   ARRAY(SELECT unnest(c.relacl)::text ORDER BY 1)) AS x
       FROM pg_class c WHERE c.relnamespace = 'lethe'::regnamespace AND c.relkind IN ('r', 'v', 'S')
     UNION ALL
     SELECT format('%s.%s %s', c.relname, a.attname, a.attacl) FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
      WHERE c.relnamespace = 'lethe'::regnamespace AND a.attacl IS NOT NULL
     UNION ALL
     SELECT format('policy %s %s %s %s %s', policyname, cmd, roles, qual, with_check) FROM pg_policies WHERE schemaname = 'lethe'
     UNION ALL
     SELECT format('role %s login=%s', rolname, rolcanlogin) FROM pg_roles WHERE rolname = ANY($1)
     UNION ALL
     SELECT format('member %s of %s', member::regrole, roleid::regrole) FROM pg_auth_members
      WHERE member::regrole::text = ANY($1) OR roleid::regrole::text = ANY($1)
     UNION ALL
     SELECT format('schema %s %s', nspowner::regrole, nspacl) FROM pg_namespace WHERE nspname = 'lethe'
     ORDER BY 1`,
    [roles],
  );
  return rows.map((r: { x: string }) => r.x);
}

/** `psql` (the real client) running `script` against `url` as the superuser; password via PGPASSWORD, never argv. */
async function psql(url: string, script: string): Promise<{ code: number | null; stderr: string }> {
  const u = new URL(url);
  const pass = decodeURIComponent(u.password);
  u.password = '';
  const child = spawn('psql', ['-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', u.toString(), '-f', '-'], {
    env: { PATH: process.env['PATH'] ?? '/usr/bin:/bin', PGPASSWORD: pass },
    stdio: ['pipe', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (t: string) => (stderr += t));
  child.stdin.end(script);
  const [code] = (await once(child, 'close')) as [number | null];
  return { code, stderr };
}

describe('vault roles: lethe init --roles', () => {
  let template: TestDatabase;
  let env: LetheEnv;
  const prefix = `rt_${randomBytes(3).toString('hex')}`;
  const names = vaultRoleNames({ schema: 'lethe', prefix });
  const passwords = new Map<VaultRole, string>([...JOBS, 'owner' as const].map((j) => [j, password()]));
  const urls = {} as Record<Job, string>;
  const configs = {} as Record<Job, string>;
  const runtimes = {} as Record<Job, Runtime>;
  let tenant: string;
  let erasedUser: string;
  let heldUser: string;
  const snapshots: string[] = [];

  beforeAll(async () => {
    for (const role of VAULT_ROLES) createdRoles.add(names[role]);
    template = await createChatTemplate('roles_tpl');
    env = await createLetheEnv({ template: template.name, config: { retention: { classes: { messages: '365d' } } } });
    await initialize(env.rt, 'test');
    ({ tenant, user: erasedUser } = await demoSample(env.chat.url));
    const { rows } = await rawSql(
      env.chat.url,
      `SELECT sender_id::text AS id FROM public.messages m JOIN public.conversations c ON c.id = m.conversation_id
        WHERE c.tenant_id = $1 AND m.sender_id <> $2 GROUP BY sender_id ORDER BY count(*) DESC, sender_id LIMIT 1`,
      [tenant, erasedUser],
    );
    heldUser = (rows[0] as { id: string }).id;
    const dir = join(env.dir, 'role-passwords');
    await mkdir(dir, { mode: 0o700 });
    for (const [role, pass] of passwords) await writeFile(join(dir, role), `${pass}\n`, { mode: 0o600 });
    const sink = new Writable({ write: (_c, _e, cb) => cb() });
    for (const job of JOBS) {
      urls[job] = asUser(env.vaultDb.url, names[job], passwords.get(job) ?? '');
      const raw: RawConfig = { ...env.raw, vault: { database: { url: urls[job] }, schema: 'lethe' } };
      configs[job] = await env.writeConfig(`${job}.yaml`, raw);
      runtimes[job] = new Runtime(parseConfig(raw, env.dir), createLogger('warn', sink));
    }
  }, 240_000);

  afterAll(async () => {
    for (const rt of Object.values(runtimes)) await rt.close();
    await env.cleanup();
    await template.drop();
    await withAdmin(async (c) => {
      for (const role of createdRoles) await c.query(`DROP ROLE IF EXISTS ${c.escapeIdentifier(role)}`);
    });
  });

  it('creates the roles, LOGIN with the passwords from --password-dir, and says what it did', async () => {
    const out = await env.cli([
      'init', '--roles', '--login', '--role-prefix', prefix, '--password-dir', join(env.dir, 'role-passwords'),
      '--config', env.configPath, '--json',
    ]);
    expectExit(out, 0);
    const result = jsonOut(out) as { changed: boolean; roles: { role: string; name: string; created: boolean; login: boolean; password: string }[]; unknown: string[]; absent: string[] };
    expect(result.changed).toBe(true);
    expect(result.unknown).toEqual([]);
    expect(result.absent).toEqual([]);
    expect(result.roles.map((r) => [r.name, r.created, r.login])).toEqual(VAULT_ROLES.map((r) => [names[r], true, true]));
    expect(Object.fromEntries(result.roles.map((r) => [r.role, r.password]))).toEqual({
      owner: 'set', backup: 'set', verify: 'set', lifecycle: 'set', daemon: 'none',
    });
    // No password on argv or in the output: only its verifier reached the server.
    for (const pass of passwords.values()) expect(out.stdout + out.stderr).not.toContain(pass);
    const stored = await rawSql(env.vaultDb.url, 'SELECT rolpassword FROM pg_authid WHERE rolname = $1', [names.backup]);
    expect((stored.rows[0] as { rolpassword: string }).rolpassword).toMatch(/^SCRAM-SHA-256\$4096:/);
    // Each job role logs in with its password and is who it says.
    for (const job of JOBS) {
      const { rows } = await rawSql(urls[job], 'SELECT current_user AS u');
      expect((rows[0] as { u: string }).u).toBe(names[job]);
    }
    // The change is in the audit log.
    const audit = await rawSql(env.vaultDb.url, "SELECT details FROM lethe.audit_log WHERE action = 'vault.roles'");
    expect(audit.rowCount).toBe(1);
  });

  it('changes nothing when run again', async () => {
    const before = await catalogState(env.vaultDb.url, Object.values(names));
    const out = await env.cli([
      'init', '--roles', '--login', '--role-prefix', prefix, '--password-dir', join(env.dir, 'role-passwords'),
      '--config', env.configPath, '--json',
    ]);
    expectExit(out, 0);
    const result = jsonOut(out) as { changed: boolean; roles: { created: boolean; password: string }[] };
    expect(result.changed).toBe(false);
    expect(result.roles.every((r) => !r.created && r.password !== 'set')).toBe(true);
    expect(await catalogState(env.vaultDb.url, Object.values(names))).toEqual(before);
    const audit = await rawSql(env.vaultDb.url, "SELECT count(*)::int AS n FROM lethe.audit_log WHERE action = 'vault.roles'");
    expect((audit.rows[0] as { n: number }).n).toBe(1);
  });

  it('runs lethe init as the owner role, which needs no right on the database itself', async () => {
    const raw: RawConfig = { ...env.raw, vault: { database: { url: asUser(env.vaultDb.url, names.owner, passwords.get('owner') ?? '') }, schema: 'lethe' } };
    const out = await env.cli(['init', '--config', await env.writeConfig('owner.yaml', raw), '--json']);
    expectExit(out, 0);
    expect((jsonOut(out) as { migrationsApplied: number[] }).migrationsApplied).toEqual([]);
    const plain = await env.cli(['init', '--config', configs.backup]);
    expectExit(plain, 1);
    expect(plain.stderr).toMatch(/permission denied/);
  });

  it('runs a backup as the backup role', async () => {
    const result = await backup(runtimes.backup, { actor: 'test' });
    expect(result.cellsWritten).toBeGreaterThan(0);
    snapshots.push(result.snapshotId);
    const { rows } = await rawSql(env.vaultDb.url, 'SELECT status, run_owner FROM lethe.snapshots WHERE id = $1', [result.snapshotId]);
    expect((rows[0] as { status: string }).status).toBe('complete');
    // The audit export position moved (the one meta row the backup may write).
    const mark = await rawSql(env.vaultDb.url, "SELECT value FROM lethe.meta WHERE key = 'audit_exported_seq'");
    expect(mark.rowCount).toBe(1);
  }, 120_000);

  it('runs a backup written by a coordinator and two shard workers as the backup role', async () => {
    const args = (extra: string[]): string[] => ['backup', '--config', configs.backup, '--json', ...extra];
    const [coordinator, ...workers] = await Promise.all([
      env.cli(args(['--coordinate', '2']), { timeoutMs: 120_000 }),
      env.cli(args(['--shard', '0/2', '--wait', '60']), { timeoutMs: 120_000 }),
      env.cli(args(['--shard', '1/2', '--wait', '60']), { timeoutMs: 120_000 }),
    ]);
    for (const out of [coordinator, ...workers]) expectExit(out, 0);
    const { snapshotId } = jsonOut(coordinator) as { snapshotId: string };
    const shards = await rawSql(env.vaultDb.url, "SELECT count(*)::int AS n FROM lethe.backup_shards WHERE snapshot_id = $1 AND status = 'done'", [snapshotId]);
    expect((shards.rows[0] as { n: number }).n).toBe(2);
  }, 180_000);

  it('refuses the backup role any wrapped identity, any key destruction and any decision', async () => {
    const u = urls.backup;
    expect(await attempt(u, 'SELECT id, recipient, destroyed_at FROM lethe.dimension_keys LIMIT 1')).toBe('ok');
    expect(await attempt(u, 'SELECT wrapped_identity FROM lethe.dimension_keys LIMIT 1')).toBe('42501');
    expect(await attempt(u, 'SELECT * FROM lethe.dimension_keys LIMIT 1')).toBe('42501');
    expect(await attempt(u, 'SELECT id FROM lethe.dimension_keys WHERE wrapped_identity IS NULL')).toBe('42501');
    expect(await attempt(u, 'SELECT wrapped FROM lethe.held_cell_keys')).toBe('42501');
    expect(await attempt(u, 'SELECT key_id FROM lethe.held_cell_keys')).toBe('42501');
    expect(await attempt(u, 'UPDATE lethe.dimension_keys SET wrapped_identity = NULL, destroyed_at = now()')).toBe('42501');
    expect(await attempt(u, 'DELETE FROM lethe.dimension_keys')).toBe('42501');
    expect(await attempt(u, 'UPDATE lethe.dimension_keys SET recipient = recipient')).toBe('42501');
    expect(await attempt(u, "INSERT INTO lethe.holds (case_id, tenant, reason, placed_by) VALUES ('X', '1', 'r', 'p')")).toBe('42501');
    expect(await attempt(u, 'UPDATE lethe.erase_requests SET status = status')).toBe('42501');
    expect(await attempt(u, 'SELECT * FROM lethe.erase_requests')).toBe('42501');
    expect(await attempt(u, 'UPDATE lethe.signing_keys SET retired_at = now()')).toBe('42501');
    // The master recipient is out of reach: the row policy hides it from UPDATE and refuses an upsert.
    const recipient = await rawSql(env.vaultDb.url, "SELECT value FROM lethe.meta WHERE key = 'master_recipient'");
    const client = new pg.Client({ connectionString: u });
    await client.connect();
    try {
      const updated = await client.query(`UPDATE lethe.meta SET value = '"age1evil"' WHERE key = 'master_recipient'`);
      expect(updated.rowCount).toBe(0);
    } finally {
      await client.end();
    }
    expect(
      await attempt(u, `INSERT INTO lethe.meta (key, value) VALUES ('master_recipient', '"age1evil"') ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value`),
    ).toBe('42501');
    expect((await rawSql(env.vaultDb.url, "SELECT value FROM lethe.meta WHERE key = 'master_recipient'")).rows).toEqual(recipient.rows);
    // Through lethe's own API: the escrow export of wrapped keys fails, naming the fix.
    const vault = await Vault.open(u, 'lethe');
    try {
      const err = await rejectsWith(vault.iterateWrappedDimensionKeys().next(), ErrorCode.DATABASE);
      expect(err.message).toMatch(/lethe init --roles/);
      await rejectsWith(vault.checkKeyTablesVacuumable(), ErrorCode.VAULT);
    } finally {
      await vault.close();
    }
  });

  it('runs verify and a restore as the verify role', async () => {
    const result = await verify(runtimes.verify, { snapshot: 'latest', actor: 'test' });
    expect(result.ok, JSON.stringify(result.findings)).toBe(true);
    expect(result.cellsVerified).toBeGreaterThan(0);
    const target = await env.database('roles_restore');
    await restore(runtimes.verify, { snapshot: 'latest', targetUrl: target.url, replace: false, blobTarget: env.blobTarget(), actor: 'test' });
    expect(await tableContents(target.url)).toEqual(await tableContents(env.chat.url));
  }, 180_000);

  it('refuses the verify role every key destruction and every change to holds and deletion requests', async () => {
    const u = urls.verify;
    const key = userKeyId(tenant, erasedUser);
    expect(await attempt(u, 'SELECT wrapped_identity FROM lethe.dimension_keys WHERE id = $1', [key])).toBe('ok');
    expect(await attempt(u, 'UPDATE lethe.dimension_keys SET wrapped_identity = NULL, destroyed_at = now() WHERE id = $1', [key])).toBe('42501');
    expect(await attempt(u, 'DELETE FROM lethe.dimension_keys WHERE id = $1', [key])).toBe('42501');
    expect(await attempt(u, 'UPDATE lethe.held_cell_keys SET wrapped = wrapped')).toBe('42501');
    expect(await attempt(u, 'DELETE FROM lethe.held_cell_keys')).toBe('42501');
    expect(await attempt(u, 'DELETE FROM lethe.encapsulations')).toBe('42501');
    expect(await attempt(u, 'DELETE FROM lethe.cell_keys')).toBe('42501');
    expect(await attempt(u, 'TRUNCATE lethe.dimension_keys')).toBe('42501');
    expect(await attempt(u, "INSERT INTO lethe.holds (case_id, tenant, reason, placed_by) VALUES ('X', '1', 'r', 'p')")).toBe('42501');
    expect(await attempt(u, "UPDATE lethe.holds SET released_by = 'v', released_at = now()")).toBe('42501');
    expect(await attempt(u, 'DELETE FROM lethe.holds')).toBe('42501');
    expect(
      await attempt(u, "INSERT INTO lethe.erase_requests (id, tenant, scope, subject, reason, requested_by) VALUES ('er-aaaaaaaa', '1', 'user', '1', 'r', 'v')"),
    ).toBe('42501');
    expect(await attempt(u, "UPDATE lethe.erase_requests SET status = 'approved', approved_by = 'v', approved_at = now()")).toBe('42501');
    expect(await attempt(u, "INSERT INTO lethe.destructions (key_id, destroyed_at, actor, reason, cause, audit_seq) VALUES ($1, now(), 'v', 'r', '{}', 1)", [key])).toBe('42501');
    // Through lethe's own API: destroying a key fails and the key stays.
    const vault = await Vault.open(u, 'lethe');
    try {
      await rejectsWith(vault.destroyDimensionKeys([key]), ErrorCode.DATABASE);
    } finally {
      await vault.close();
    }
    const still = await rawSql(env.vaultDb.url, 'SELECT wrapped_identity IS NOT NULL AS live FROM lethe.dimension_keys WHERE id = $1', [key]);
    expect((still.rows[0] as { live: boolean }).live).toBe(true);
  });

  it('refuses every job role any change to the audit log and its trigger', async () => {
    for (const job of JOBS) {
      expect(await attempt(urls[job], 'SELECT seq FROM lethe.audit_log ORDER BY seq DESC LIMIT 1'), job).toBe('ok');
      expect(await attempt(urls[job], "UPDATE lethe.audit_log SET actor = 'x'"), job).toBe('42501');
      expect(await attempt(urls[job], 'DELETE FROM lethe.audit_log'), job).toBe('42501');
      expect(await attempt(urls[job], 'TRUNCATE lethe.audit_log'), job).toBe('42501');
      expect(await attempt(urls[job], 'ALTER TABLE lethe.audit_log DISABLE TRIGGER USER'), job).toBe('42501');
      expect(await attempt(urls[job], 'CREATE TABLE lethe.planted (x int)'), job).toBe('42501');
    }
  });

  it('lets every job role record daemon runs', async () => {
    for (const [i, job] of JOBS.entries()) {
      const slot = new Date(Date.UTC(2030, 0, 1, i));
      expect(await attempt(urls[job], "INSERT INTO lethe.daemon_runs (job, slot, state, owner) VALUES ('backup', $1, 'running', 'test')", [slot]), job).toBe('ok');
      expect(
        await attempt(urls[job], "UPDATE lethe.daemon_runs SET state = 'ok', finished_at = now(), heartbeat_at = now() WHERE job = 'backup' AND slot = $1", [slot]),
        job,
      ).toBe('ok');
    }
  });

  it('runs holds, an erasure, lifecycle apply and a vault backup as the lifecycle role, which alone destroys keys', async () => {
    const hold = await env.cli([
      'hold', 'place', '--config', configs.lifecycle, '--case', 'CASE-1', '--tenant', tenant, '--user', heldUser,
      '--reason', 'litigation', '--actor', 'legal',
    ]);
    expectExit(hold, 0);
    const request = await env.cli([
      'erase', 'request', '--config', configs.lifecycle, '--tenant', tenant, '--user', erasedUser,
      '--reason', 'GDPR Art. 17', '--actor', 'alice', '--json',
    ]);
    expectExit(request, 0);
    const { id } = jsonOut(request) as { id: string };
    const approve = await env.cli(['erase', 'approve', id, '--config', configs.lifecycle, '--actor', 'bob', '--json']);
    expectExit(approve, 0);
    const key = userKeyId(tenant, erasedUser);
    const gone = await rawSql(env.vaultDb.url, 'SELECT wrapped_identity IS NULL AS gone FROM lethe.dimension_keys WHERE id = $1', [key]);
    expect((gone.rows[0] as { gone: boolean }).gone).toBe(true);

    // Retention: messages past 365 days at NOW go, the held user's cells are re-wrapped first.
    const applied = await lifecycleApply(runtimes.lifecycle, { actor: 'test', now: () => NOW });
    expect(applied.keysDestroyed).toBeGreaterThan(0);
    expect(applied.cellsRewrapped).toBeGreaterThan(0);
    const held = await rawSql(env.vaultDb.url, "SELECT count(*)::int AS n FROM lethe.held_cell_keys WHERE case_id = 'CASE-1'");
    expect((held.rows[0] as { n: number }).n).toBeGreaterThan(0);
    const written = await vaultBackup(runtimes.lifecycle, { actor: 'test' });
    expect(written.tables['dimension_keys']).toBeGreaterThan(0);
    // Legal's export of the held data and the escrow export of the wrapped keys, as verify.
    const exported = await env.cli(['export', '--config', configs.verify, '--case', 'CASE-1', '--out', join(env.dir, 'case-1'), '--json']);
    expectExit(exported, 0);
    const escrow = await env.cli(['keys', 'export', '--config', configs.verify, '--out', join(env.dir, 'keys.ndjson'), '--json']);
    expectExit(escrow, 0);
    // The auditors' report, as lifecycle (it signs with the lifecycle key).
    const report = await env.cli(['report', '--config', configs.lifecycle, '--from', '2020-01-01', '--to', '2030-01-01', '--json']);
    expectExit(report, 0);
    const release = await env.cli(['hold', 'release', '--config', configs.lifecycle, '--case', 'CASE-1', '--actor', 'legal']);
    expectExit(release, 0);

    // The next backup (as backup) leaves the erased user out, and verify (as verify) accounts
    // for every shredded cell by its destruction record.
    snapshots.push((await backup(runtimes.backup, { actor: 'test' })).snapshotId);
    const checked = await verify(runtimes.verify, { snapshot: snapshots[0] ?? '', actor: 'test' });
    expect(checked.cellsFailed, JSON.stringify(checked.findings)).toBe(0);
    expect(checked.shredded.map((s) => s.keyId)).toContain(key);
  }, 300_000);

  it('refuses init --roles to a job role, naming the fix', async () => {
    const out = await env.cli(['init', '--roles', '--role-prefix', prefix, '--config', configs.backup]);
    expect(out.code).toBe(1);
    expect(out.stderr).toMatch(/permission denied/);
    expect(out.stderr).toMatch(/names a superuser .*--print-sql/);
  });
});

describe('vault roles: print-sql for a DBA, and new tables after a migration', () => {
  let vaultDb: TestDatabase;
  let oldDb: TestDatabase;
  let env: LetheEnv;
  let template: TestDatabase;

  beforeAll(async () => {
    // An empty chat store will do: these tests use the vault only.
    template = await createTestDatabase('roles_chat_tpl');
    env = await createLetheEnv({ template: template.name });
    vaultDb = await env.database('roles_sql');
    oldDb = await env.database('roles_v7');
  }, 120_000);

  afterAll(async () => {
    await env.cleanup();
    await template.drop();
    await withAdmin(async (c) => {
      for (const role of createdRoles) await c.query(`DROP ROLE IF EXISTS ${c.escapeIdentifier(role)}`);
    });
  });

  it('prints SQL that psql runs as is, leaving what --roles would make (a re-run changes nothing)', async () => {
    const prefix = `rp_${randomBytes(3).toString('hex')}`;
    const names = vaultRoleNames({ schema: 'lethe', prefix });
    for (const role of VAULT_ROLES) createdRoles.add(names[role]);
    await migrateVault(vaultDb.url, 'lethe');
    const config = await env.writeConfig('dba.yaml', { ...env.raw, vault: { database: { url: vaultDb.url }, schema: 'lethe' } });
    const out = await env.cli(['init', '--roles', '--print-sql', '--role-prefix', prefix, '--config', config]);
    expectExit(out, 0);
    expect(out.stdout).toMatch(/^BEGIN;$/m);
    expect(out.stdout).toMatch(/^COMMIT;$/m);
    expect(out.stdout).not.toMatch(/PASSWORD/);
    const ran = await psql(vaultDb.url, out.stdout);
    expect(ran.code, ran.stderr).toBe(0);
    const again = await applyVaultRoles(vaultDb.url, { schema: 'lethe', prefix });
    expect(again.changed).toBe(false);
    expect(again.roles.every((r) => !r.created && !r.login)).toBe(true);

    // NOLOGIN roles serve through membership: a login role granted the backup role is the backup.
    const login = `${prefix}_svc`;
    createdRoles.add(login);
    const pass = password();
    await rawSql(vaultDb.url, `CREATE ROLE ${login} LOGIN PASSWORD '${pass}'`);
    await rawSql(vaultDb.url, `GRANT ${names.backup} TO ${login}`);
    const svc = asUser(vaultDb.url, login, pass);
    expect(await attempt(svc, 'SELECT recipient FROM lethe.dimension_keys')).toBe('ok');
    expect(await attempt(svc, 'SELECT wrapped_identity FROM lethe.dimension_keys')).toBe('42501');
  });

  it('covers every table, view and sequence a migrated vault has', async () => {
    const { rows } = await rawSql(
      vaultDb.url,
      "SELECT relname, relkind FROM pg_class WHERE relnamespace = 'lethe'::regnamespace AND relkind IN ('r', 'v', 'S', 'p') ORDER BY 1",
    );
    const relations = rows as { relname: string; relkind: string }[];
    const sequences = Object.values(VAULT_GRANTS).flatMap((o) => Object.keys(o.sequences ?? {}));
    expect(relations.filter((r) => r.relkind !== 'S').map((r) => r.relname)).toEqual(Object.keys(VAULT_GRANTS).sort());
    expect(relations.filter((r) => r.relkind === 'S').map((r) => r.relname)).toEqual(sequences.sort());
  });

  it('skips a table a migration has not made yet, and grants it once the migration ran', async () => {
    const prefix = `rm_${randomBytes(3).toString('hex')}`;
    const names = vaultRoleNames({ schema: 'lethe', prefix });
    for (const role of VAULT_ROLES) createdRoles.add(names[role]);
    // A vault at schema version 7, as an older lethe left it.
    const client = new pg.Client({ connectionString: oldDb.url });
    await client.connect();
    try {
      await client.query('CREATE SCHEMA lethe; SET search_path TO lethe');
      await client.query('CREATE TABLE migrations (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())');
      for (const m of MIGRATIONS.filter((x) => x.version <= 7)) {
        await client.query(m.sql);
        await client.query('INSERT INTO migrations (version, name) VALUES ($1, $2)', [m.version, m.name]);
      }
    } finally {
      await client.end();
    }
    const first = await applyVaultRoles(oldDb.url, {
      schema: 'lethe',
      prefix,
      login: true,
      passwords: new Map([['backup', 'b'.repeat(20)], ['owner', 'o'.repeat(20)]]),
    });
    expect([...first.absent].sort()).toEqual(['approvers', 'daemon_runs', 'encapsulation_ciphertexts', 'master_epochs']);
    const backupUrl = asUser(oldDb.url, names.backup, 'b'.repeat(20));
    expect(await attempt(backupUrl, 'SELECT 1 FROM lethe.snapshots')).toBe('ok');

    // Migrations 8 to 12, run by the owner role as `lethe init` would, add daemon_runs,
    // approvers, columns of erase_requests and more: no grant on them yet.
    expect((await migrateVault(asUser(oldDb.url, names.owner, 'o'.repeat(20)), 'lethe')).applied).toEqual([8, 9, 10, 11, 12]);
    const approvedKeyGrant =
      `SELECT has_column_privilege('${names.lifecycle}', 'lethe.erase_requests', 'approved_key', 'UPDATE') AS g`;
    expect((await rawSql(oldDb.url, approvedKeyGrant)).rows).toEqual([{ g: false }]);
    const insert = "INSERT INTO lethe.daemon_runs (job, slot, state, owner) VALUES ('backup', now(), 'running', 'test')";
    expect(await attempt(backupUrl, insert)).toBe('42501');
    const second = await applyVaultRoles(oldDb.url, { schema: 'lethe', prefix, login: true });
    expect(second.changed).toBe(true);
    expect(second.absent).toEqual([]);
    expect(second.objects).toContain('daemon_runs');
    expect((await rawSql(oldDb.url, approvedKeyGrant)).rows).toEqual([{ g: true }]);
    expect(await attempt(backupUrl, insert)).toBe('ok');
    const owner = await rawSql(oldDb.url, "SELECT relowner::regrole::text AS o FROM pg_class WHERE oid = 'lethe.daemon_runs'::regclass");
    expect((owner.rows[0] as { o: string }).o).toBe(names.owner);
    expect((await applyVaultRoles(oldDb.url, { schema: 'lethe', prefix, login: true })).changed).toBe(false);
  });

  it('refuses password files it cannot trust, and roles options without --roles, before connecting', async () => {
    const dir = join(env.dir, 'pw-bad');
    await mkdir(dir, { mode: 0o700 });
    // Should a refusal fail to happen, the roles it would create are still this file's to drop.
    const prefix = `rb_${randomBytes(3).toString('hex')}`;
    for (const role of Object.values(vaultRoleNames({ schema: 'lethe', prefix }))) createdRoles.add(role);
    const run = (args: string[]): ReturnType<LetheEnv['cli']> =>
      env.cli(['init', '--config', env.configPath, '--role-prefix', prefix, ...args]);
    const noRoles = await run(['--print-sql']);
    expectExit(noRoles, 2);
    expect(noRoles.stderr).toMatch(/--print-sql works with --roles/);
    await writeFile(join(dir, 'backup'), 'short\n', { mode: 0o600 });
    const short = await run(['--roles', '--login', '--password-dir', dir]);
    expectExit(short, 2);
    expect(short.stderr).toMatch(/shorter than 16/);
    expect(short.stderr).not.toContain('short\n');
    await writeFile(join(dir, 'backup'), `${password()}\n`);
    await chmod(join(dir, 'backup'), 0o644);
    const open = await run(['--roles', '--login', '--password-dir', dir]);
    expectExit(open, 2);
    expect(open.stderr).toMatch(/chmod 600/);
    await chmod(join(dir, 'backup'), 0o600);
    const noLogin = await run(['--roles', '--password-dir', dir]);
    expectExit(noLogin, 2);
    expect(noLogin.stderr).toMatch(/add --login/);
    await writeFile(join(dir, 'backpu'), `${password()}\n`, { mode: 0o600 });
    const stray = await run(['--roles', '--login', '--password-dir', dir]);
    expectExit(stray, 2);
    expect(stray.stderr).toMatch(/backpu: name each file after its role/);
    const printed = await run(['--roles', '--print-sql', '--password-dir', dir]);
    expectExit(printed, 2);
  });

  it('refuses a prefix that is not a plain identifier and a role that could bypass the grants', async () => {
    const bad = await env.cli(['init', '--roles', '--print-sql', '--role-prefix', 'Robert"; DROP', '--config', env.configPath]);
    expectExit(bad, 2);
    expect(bad.stderr).toMatch(/role prefix/);
    const prefix = `rs_${randomBytes(3).toString('hex')}`;
    const names = vaultRoleNames({ schema: 'lethe', prefix });
    for (const role of VAULT_ROLES) createdRoles.add(names[role]);
    await rawSql(vaultDb.url, `CREATE ROLE ${names.backup} NOLOGIN BYPASSRLS`);
    await expect(applyVaultRoles(vaultDb.url, { schema: 'lethe', prefix })).rejects.toThrow(/BYPASSRLS/);
    const exists = await rawSql(vaultDb.url, 'SELECT count(*)::int AS n FROM pg_roles WHERE rolname = $1', [names.verify]);
    expect((exists.rows[0] as { n: number }).n).toBe(0);
  });
});
