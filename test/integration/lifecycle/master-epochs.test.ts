import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmod, copyFile, mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { promisify } from 'node:util';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { userKeyId } from '../../../src/cells/ids.ts';
import { decryptBytes, readMasterKeyFile } from '../../../src/crypto/index.ts';
import { EmbeddedPostgres } from '../../../src/embedded/postgres.ts';
import { backup, initialize, lifecycleApply, verify } from '../../../src/jobs/tasks.ts';
import { FileMasterKeys } from '../../../src/keys/index.ts';
import { demoSample } from '../../../src/store/demo-sample.ts';
import { createChatTemplate, createLetheEnv, expectExit, filesUnder, jsonOut, type LetheEnv, type TestDatabase } from '../../helpers/lethe-env.ts';
import { freePort } from '../../helpers/ports.ts';

/**
 * Must hold (issue 13, items 1 and 2): a shred does not depend on PostgreSQL forgetting, and
 * a master rotation touches no bucket object. The vault lives on a PostgreSQL cluster of this
 * file's own, so the test can stop it and keep a copy of its data directory and WAL from
 * before the erasure: after the erasure and the grace window, that copy still holds the
 * erased key's wrapped bytes, and no master key that still exists opens them.
 */
const DAY = 86_400_000;
const GRACE_DAYS = 7;

interface WrappedRow {
  id: string;
  master_epoch: number | null;
  wrapped_identity: Buffer | null;
}

async function wrappedRows(url: string, where = 'true'): Promise<WrappedRow[]> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return (await client.query<WrappedRow>(`SELECT id, master_epoch, wrapped_identity FROM lethe.dimension_keys WHERE ${where} ORDER BY id`)).rows;
  } finally {
    await client.end();
  }
}

/** Every master key file in `dir` (the epoch files beside the configured one), by name. */
async function masterFiles(dir: string): Promise<string[]> {
  return (await readdir(dir)).filter((n) => n === 'master.key' || /^master\.key\.epoch-\d+$/.test(n)).sort();
}

async function opens(wrapped: Uint8Array, identity: string): Promise<boolean> {
  try {
    await decryptBytes(wrapped, [identity]);
    return true;
  } catch {
    return false;
  }
}

/** Verify's findings about keys (a wrap that does not open, a master key missing): what epochs could break. */
function keyFindings(findings: readonly { code: string; problem?: string }[]): unknown[] {
  return findings.filter((f) => /master|dimension key|does not open|cannot be trusted|KEY/i.test(`${f.code} ${f.problem ?? ''}`));
}

async function bucketHashes(root: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (const rel of await filesUnder(root)) out.set(rel, createHash('sha256').update(await readFile(join(root, rel))).digest('hex'));
  return out;
}

describe('master-key epochs', () => {
  let template: TestDatabase;
  let env: LetheEnv;
  let root: string;
  let server: EmbeddedPostgres;
  let copy: EmbeddedPostgres | undefined;
  const password = 'epochs-test-pw';
  let erasedKey: string;
  let copyDir: string;

  const startServer = async (dataDir: string, port: number): Promise<EmbeddedPostgres> =>
    EmbeddedPostgres.start({ dataDir, port, password, unsafeFast: true, logFile: join(root, `pg-${port}.log`) });

  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), 'lethe-test-epochs-'));
    await chmod(root, 0o755);
    server = await startServer(join(root, 'pgdata'), await freePort());
    const admin = new pg.Client({ connectionString: server.url('postgres') });
    await admin.connect();
    await admin.query('CREATE DATABASE vault');
    await admin.end();
    template = await createChatTemplate('epochs_tpl');
    env = await createLetheEnv({
      template: template.name,
      config: { vault: { database: { url: server.url('vault') }, schema: 'lethe' }, retention: { graceWindowDays: GRACE_DAYS } },
    });
    await initialize(env.rt, 'test');
    await backup(env.rt, { actor: 'test' });
    const { tenant, user } = await demoSample(env.chat.url);
    erasedKey = userKeyId(tenant, user);

    // Control: before the erasure the key is live, wrapped to epoch 1, which opens it.
    const [row] = await wrappedRows(server.url('vault'), `id = '${erasedKey.replaceAll("'", "''")}'`);
    expect(row?.master_epoch).toBe(1);
    expect(await opens(row?.wrapped_identity ?? Buffer.alloc(0), (await readMasterKeyFile(env.masterKeyFile)).identity)).toBe(true);

    // The copy: data directory and WAL of the stopped cluster, taken before the erasure.
    await server.stop();
    copyDir = join(root, 'pgdata-before-erasure');
    // -a: ownership and modes too (the server runs as `postgres` when the tests run as root).
    await promisify(execFile)('cp', ['-a', join(root, 'pgdata'), copyDir]);
    server = await startServer(join(root, 'pgdata'), Number(new URL(server.url('vault')).port));

    const request = await env.cli(['erase', 'request', '--config', env.configPath, '--tenant', tenant, '--user', user, '--reason', 'erasure', '--actor', 'alice', '--json']);
    expectExit(request, 0);
    const approve = await env.cli(['erase', 'approve', (jsonOut(request) as { id: string }).id, '--config', env.configPath, '--actor', 'bob', '--json']);
    expectExit(approve, 0);
  }, 240_000);

  afterAll(async () => {
    await env.cleanup();
    await template.drop();
    await copy?.stop();
    await server.stop();
    await rm(root, { recursive: true, force: true });
  });

  it('moves the survivors to a new epoch at the next apply, and destroys the old one after the grace window', async () => {
    const first = await lifecycleApply(env.rt, { actor: 'test', now: () => new Date() });
    expect(first.master?.rotatedTo).toBe(2);
    expect(first.master?.destroyed).toEqual([]);
    expect(first.master?.pending.map((p) => p.epoch)).toEqual([1]);
    // Nothing live is left on epoch 1, and the destroyed key still names it.
    const rows = await wrappedRows(server.url('vault'));
    expect(rows.filter((r) => r.wrapped_identity !== null).every((r) => r.master_epoch === 2)).toBe(true);
    expect(rows.find((r) => r.id === erasedKey)).toMatchObject({ master_epoch: 1, wrapped_identity: null });
    expect(await masterFiles(env.dir)).toEqual(['master.key', 'master.key.epoch-2']);

    // Within the grace window the old epoch stays (an older vault backup may still be needed).
    const early = await lifecycleApply(env.rt, { actor: 'test', now: () => new Date(Date.now() + (GRACE_DAYS - 1) * DAY) });
    expect(early.master).toMatchObject({ rotatedTo: null, destroyed: [] });
    expect(await masterFiles(env.dir)).toEqual(['master.key', 'master.key.epoch-2']);

    const later = await lifecycleApply(env.rt, { actor: 'test', now: () => new Date(Date.now() + (GRACE_DAYS + 1) * DAY) });
    expect(later.master).toMatchObject({ rotatedTo: null, destroyed: [1] });
    expect(await masterFiles(env.dir)).toEqual(['master.key.epoch-2']);
    const epochs = await (await env.rt.vault()).listMasterEpochs();
    expect(epochs.map((e) => [e.epoch, e.destroyedAt !== null, e.retiredAt !== null])).toEqual([
      [1, true, true],
      [2, false, false],
    ]);
  }, 180_000);

  it('a copy of the vault data directory and WAL from before the erasure opens with no master key that still exists', async () => {
    copy = await startServer(copyDir, await freePort());
    const [old] = await wrappedRows(copy.url('vault'), `id = '${erasedKey.replaceAll("'", "''")}'`);
    // The copy does hold the erased key's wrapped bytes: only the master can protect them now.
    expect(old?.wrapped_identity?.length ?? 0).toBeGreaterThan(100);
    const remaining = await masterFiles(env.dir);
    expect(remaining.length).toBeGreaterThan(0);
    for (const name of remaining) {
      const { identity } = await readMasterKeyFile(join(env.dir, name));
      expect(await opens(old?.wrapped_identity ?? Buffer.alloc(0), identity), name).toBe(false);
    }
    // Nor does any key the copy holds for the live keys then: every one was wrapped to epoch 1.
    const all = await wrappedRows(copy.url('vault'), 'wrapped_identity IS NOT NULL');
    expect(all.length).toBeGreaterThan(5);
    expect(new Set(all.map((r) => r.master_epoch))).toEqual(new Set([1]));
  }, 120_000);

  it('everything still live opens with the surviving master, and verify passes', async () => {
    const keys = new FileMasterKeys(env.masterKeyFile);
    const live = await wrappedRows(server.url('vault'), 'wrapped_identity IS NOT NULL');
    expect(live.length).toBeGreaterThan(5);
    for (const row of live) await keys.unwrap(row.master_epoch, row.wrapped_identity ?? Buffer.alloc(0));
    await backup(env.rt, { actor: 'test' });
    const result = await verify(env.rt, { snapshot: 'latest', actor: 'test' });
    expect(keyFindings(result.findings)).toEqual([]);
    expect(result.cellsVerified).toBeGreaterThan(0);
  }, 120_000);

  it('keys rotate-master re-wraps every live key without touching a bucket object, and the old master opens nothing live', async () => {
    const storePath = env.storePath ?? '';
    const before = await bucketHashes(storePath);
    const oldIdentity = (await readMasterKeyFile(join(env.dir, 'master.key.epoch-2'))).identity;
    const result = await env.cli(['keys', 'rotate-master', '--config', env.configPath, '--reason', 'routine', '--actor', 'ops', '--json']);
    expectExit(result, 0);
    const out = jsonOut(result) as { epoch: number; retired: number[]; rewrapped: number; vaultBackup: string; destroyed: number[]; pending: { epoch: number }[] };
    expect(out).toMatchObject({ epoch: 3, retired: [2], destroyed: [] });
    expect(out.pending.map((p) => p.epoch)).toEqual([2]);
    const after = await bucketHashes(storePath);
    for (const [key, hash] of before) expect(after.get(key), key).toBe(hash);
    const added = [...after.keys()].filter((k) => !before.has(k));
    expect(added.length).toBeGreaterThan(0);
    expect(added.every((k) => k.startsWith('vault/')), added.join(', ')).toBe(true);

    const live = await wrappedRows(server.url('vault'), 'wrapped_identity IS NOT NULL');
    expect(out.rewrapped).toBe(live.length);
    for (const row of live) {
      expect(row.master_epoch).toBe(3);
      expect(await opens(row.wrapped_identity ?? Buffer.alloc(0), oldIdentity), row.id).toBe(false);
    }
    const audit = (await (await env.rt.vault()).listMasterEpochs()).find((e) => e.epoch === 2);
    expect(audit?.reason).toBe('routine');

    // After the grace window the old master is destroyed too.
    const later = await lifecycleApply(env.rt, { actor: 'test', now: () => new Date(Date.now() + (GRACE_DAYS + 1) * DAY) });
    expect(later.master?.destroyed).toEqual([2]);
    expect(await masterFiles(env.dir)).toEqual(['master.key.epoch-3']);
  }, 180_000);

  it('a suspected compromise destroys the old epoch at once with --destroy-old-now, and verify still passes', async () => {
    const result = await env.cli(['keys', 'rotate-master', '--config', env.configPath, '--reason', 'suspected compromise', '--destroy-old-now']);
    expectExit(result, 0);
    expect(result.stdout).toContain('master key rotated to epoch 4');
    expect(result.stdout).toContain('destroyed now: master epoch 3');
    expect(await masterFiles(env.dir)).toEqual(['master.key.epoch-4']);
    const epochs = await env.cli(['keys', 'epochs', '--config', env.configPath, '--json']);
    expectExit(epochs, 0);
    const listed = (jsonOut(epochs) as { epochs: { epoch: number; destroyedAt: string | null; liveKeys: number }[] }).epochs;
    expect(listed.map((e) => [e.epoch, e.destroyedAt !== null])).toEqual([
      [1, true],
      [2, true],
      [3, true],
      [4, false],
    ]);
    const verified = await verify(env.rt, { snapshot: 'latest', actor: 'test' });
    expect(keyFindings(verified.findings)).toEqual([]);
    expect(verified.cellsVerified).toBeGreaterThan(0);
  }, 120_000);

  it('doctor checks the epochs: the current key file, and that no destroyed epoch\'s file is back', async () => {
    const doctor = async (): Promise<Map<string, { status: string; detail: string }>> => {
      const result = await env.cli(['doctor', '--config', env.configPath, '--job', 'lifecycle', '--json']);
      const report = jsonOut(result) as { checks: { id: string; status: string; detail: string }[] };
      return new Map(report.checks.filter((c) => c.id.startsWith('masterKey')).map((c) => [c.id, c]));
    };
    const fine = await doctor();
    expect(fine.get('masterKey.file')?.status).toBe('ok');
    expect(fine.get('masterKey.vault')?.status).toBe('ok');
    expect([1, 2, 3].map((n) => fine.get(`masterKey.epoch.${n}`)?.status)).toEqual(['ok', 'ok', 'ok']);
    // A destroyed epoch's key put back (from a stray copy) would open the erased keys' old wraps.
    await copyFile(join(env.dir, 'master.key.epoch-4'), join(env.dir, 'master.key.epoch-2'));
    try {
      const back = await doctor();
      expect(back.get('masterKey.epoch.2')).toMatchObject({ status: 'fail' });
      expect(back.get('masterKey.epoch.2')?.detail).toContain('was destroyed');
    } finally {
      await rm(join(env.dir, 'master.key.epoch-2'));
    }
  }, 60_000);

  it('refuses a rotation without a reason (exit 2)', async () => {
    const result = await env.cli(['keys', 'rotate-master', '--config', env.configPath]);
    expectExit(result, 2);
    expect(result.stderr).toContain('--reason');
  });
});
