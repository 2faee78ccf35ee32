import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../../../src/config/index.ts';
import { decryptBytes, encryptBytes, readMasterKeyFile } from '../../../src/crypto/index.ts';
import { Runtime } from '../../../src/jobs/runtime.ts';
import { backup, initialize, lifecycleApply, restore, verify } from '../../../src/jobs/tasks.ts';
import { createLogger } from '../../../src/log/index.ts';
import { REPO_ROOT, createLetheEnv, expectExit, queryValue, tableContents, type LetheEnv, type TestDatabase } from '../../helpers/lethe-env.ts';
import { createTinyChatTemplate } from './tiny-chat-store.ts';

/**
 * keys.postQuantum (issue 13, item 4). On the tiny store (one backup is well under a second):
 * a vault with X25519-only snapshots gains post-quantum ones; keys made before the option get
 * their ML-KEM halves from `lethe init` (the backup refuses without them); a hybrid
 * encapsulation's ciphertexts are in the vault and the signed manifest; both kinds verify and
 * restore; destroying only the X25519 half or only the ML-KEM half of one dimension key shreds
 * the hybrid cells that need it (and the ML-KEM half alone leaves X25519-only cells readable);
 * a hold re-wraps a hybrid tuple key only under a hybrid re-encapsulation and keeps it through a
 * retention shred; an erasure shreds; dr-decrypt.sh refuses a hybrid cell, naming what to do,
 * and still reads an X25519-only cell through a key whose wrapped secret has both halves.
 */
const HYBRID_CELL = 'messages/3/2026-01/21/7';
const BOB_CELL = 'messages/3/2026-01/22/7';
const NOW = new Date('2027-05-15T00:00:00Z');

describe('post-quantum option (x25519-mlkem768)', () => {
  let template: TestDatabase;
  let env: LetheEnv;
  let pq: Runtime;
  let pqConfig: string;
  let vault: pg.Client;
  let classic: string;
  let hybrid: string;
  let vaultBackupKey = '';

  const chatSql = async (sql: string): Promise<void> => {
    const client = new pg.Client({ connectionString: env.chat.url });
    await client.connect();
    try {
      await client.query(sql);
    } finally {
      await client.end();
    }
  };
  const wrappedOf = async (id: string): Promise<Buffer> =>
    (await vault.query<{ w: Buffer }>('SELECT wrapped_identity AS w FROM lethe.dimension_keys WHERE id = $1', [id])).rows[0]?.w ?? Buffer.alloc(0);
  const setWrapped = async (id: string, wrapped: Uint8Array): Promise<void> => {
    await vault.query('UPDATE lethe.dimension_keys SET wrapped_identity = $2 WHERE id = $1', [id, Buffer.from(wrapped)]);
  };
  /** The wrapped secret with one of its two PEM blocks left out, wrapped again to the master. */
  const withoutHalf = async (wrapped: Uint8Array, half: 'x25519' | 'mlkem'): Promise<Uint8Array> => {
    const master = await readMasterKeyFile(env.masterKeyFile);
    const text = Buffer.from(await decryptBytes(wrapped, [master.identity])).toString('utf8');
    const blocks = text.split(/(?<=-----END PRIVATE KEY-----\n)/);
    expect(blocks).toHaveLength(2);
    return encryptBytes(Buffer.from(half === 'x25519' ? (blocks[1] ?? '') : (blocks[0] ?? ''), 'utf8'), [master.recipient]);
  };
  const findingsOf = (result: Awaited<ReturnType<typeof verify>>, subject: string): string[] =>
    result.findings.filter((f) => f.subject.includes(subject)).map((f) => f.code);

  beforeAll(async () => {
    template = await createTinyChatTemplate('pq_tpl');
    env = await createLetheEnv({ template: template.name });
    vault = new pg.Client({ connectionString: env.vaultDb.url });
    await vault.connect();
    await initialize(env.rt, 'test');
    classic = (await backup(env.rt, { actor: 'test' })).snapshotId;
    const raw = { ...env.raw, keys: { postQuantum: true }, retention: { classes: { messages: '365d' } } };
    pqConfig = await env.writeConfig('lethe-pq.yaml', raw);
    pq = new Runtime(parseConfig(raw, env.dir), createLogger('warn'));
  }, 120_000);

  afterAll(async () => {
    await pq.close();
    await vault.end();
    await env.cleanup();
    await template.drop();
  });

  it('refuses to write post-quantum cells to keys without an ML-KEM half, until lethe init gives them one', async () => {
    // New rows in two tuples of tenant 3, January 2026 (Ada's and Bob's in conversation 7).
    await chatSql(`INSERT INTO public.messages (id, conversation_id, sender_id, thread_root_id, body, created_at, edited) VALUES
      (9101, 7, 21, NULL, 'after the switch', '2026-01-25 10:00:00+00', false),
      (9102, 7, 22, NULL, 'bob after the switch', '2026-01-25 10:05:00+00', false)`);
    await expect(backup(pq, { actor: 'test' })).rejects.toThrow(/has no ML-KEM-768 half.*lethe init/);
    const before = await queryValue<string>(env.vaultDb.url, 'SELECT count(*)::text AS v FROM lethe.dimension_keys WHERE wrapped_identity IS NOT NULL AND mlkem_public IS NULL');
    expect(Number(before)).toBeGreaterThan(0);
    const init = await initialize(pq, 'test');
    expect(init.mlkemHalvesAdded).toBe(Number(before));
    expect(await queryValue<string>(env.vaultDb.url, 'SELECT count(*)::text AS v FROM lethe.dimension_keys WHERE mlkem_public IS NULL')).toBe('0');
    expect((await initialize(pq, 'test')).mlkemHalvesAdded).toBe(0);
    hybrid = (await backup(pq, { actor: 'test' })).snapshotId;
  }, 60_000);

  it('records the hybrid encapsulation, its ciphertexts in the vault and in the signed manifest', async () => {
    const { rows } = await vault.query<{ kem: string; n: number }>(
      `SELECT e.kem, (SELECT count(*)::int FROM lethe.encapsulation_ciphertexts c WHERE c.encapsulation = e.id) AS n
         FROM lethe.encapsulations e WHERE e.snapshot_id = $1`,
      [hybrid],
    );
    expect(rows).toEqual([{ kem: 'x25519-mlkem768', n: 5 }]);
    const manifest = gunzipSync(await readFile(join(env.storePath ?? '', 'snapshots', `${hybrid}.json.gz`))).toString('utf8');
    const entries = manifest.split('\n').filter((l) => l.startsWith('{"id":"') && l.includes('"kem"')).map((l) => JSON.parse(l.replace(/,$/, '')) as { kem: string; ciphertexts?: Record<string, string> });
    const kinds = entries.map((e) => e.kem).sort();
    expect(kinds).toEqual(['x25519', 'x25519', 'x25519-mlkem768']);
    const pqEntry = entries.find((e) => e.kem === 'x25519-mlkem768');
    expect(Object.keys(pqEntry?.ciphertexts ?? {})).toEqual(['conversation:3/7', 'period:3/messages/2026-01', 'tenant:3', 'user:3/21', 'user:3/22']);
    for (const c of Object.values(pqEntry?.ciphertexts ?? {})) expect(Buffer.from(c, 'base64')).toHaveLength(1088);
  });

  it('verifies and restores both the X25519-only and the post-quantum snapshot', async () => {
    for (const snapshot of [classic, hybrid]) {
      const result = await verify(pq, { snapshot, actor: 'test' });
      expect(result.findings).toEqual([]);
      expect(result.ok).toBe(true);
    }
    const target = await env.database('pq_restore');
    await restore(pq, { snapshot: hybrid, targetUrl: target.url, replace: false, actor: 'test' });
    expect(await tableContents(target.url)).toEqual(await tableContents(env.chat.url));
  }, 60_000);

  it('shreds the hybrid cells when only the X25519 half, or only the ML-KEM half, of one dimension key is gone', async () => {
    const original = await wrappedOf('user:3/21');
    try {
      await setWrapped('user:3/21', await withoutHalf(original, 'x25519'));
      const noX = await verify(pq, { snapshot: hybrid, actor: 'test' });
      expect(noX.ok).toBe(false);
      expect(findingsOf(noX, HYBRID_CELL)).toEqual(['KEY_DESTROYED_WITHOUT_RECORD']);
      expect(noX.findings.find((f) => f.subject.includes(HYBRID_CELL))?.problem).toContain('user:3/21');
      expect(findingsOf(noX, BOB_CELL)).toEqual([]);

      await setWrapped('user:3/21', await withoutHalf(original, 'mlkem'));
      const noK = await verify(pq, { snapshot: hybrid, actor: 'test' });
      expect(findingsOf(noK, HYBRID_CELL)).toEqual(['KEY_DESTROYED_WITHOUT_RECORD']);
      expect(findingsOf(noK, BOB_CELL)).toEqual([]);
      // The X25519-only snapshot never needed the ML-KEM half: its cells of user 21 still open.
      const classicNoK = await verify(pq, { snapshot: classic, actor: 'test' });
      expect(classicNoK.findings).toEqual([]);

      // An X25519-only key under a hybrid encapsulation is not a shred but a vault that was altered.
      const mlkemPublic = (await vault.query<{ p: Buffer }>("SELECT mlkem_public AS p FROM lethe.dimension_keys WHERE id = 'user:3/21'")).rows[0]?.p;
      await vault.query("UPDATE lethe.dimension_keys SET mlkem_public = NULL WHERE id = 'user:3/21'");
      try {
        const altered = await verify(pq, { snapshot: hybrid, actor: 'test' });
        const finding = altered.findings.find((f) => f.subject.includes(HYBRID_CELL));
        expect(finding?.code).not.toBe('KEY_DESTROYED_WITHOUT_RECORD');
        expect(finding?.problem).toContain('has no ML-KEM-768 public key in the vault');
      } finally {
        await vault.query("UPDATE lethe.dimension_keys SET mlkem_public = $1 WHERE id = 'user:3/21'", [mlkemPublic]);
      }
    } finally {
      await setWrapped('user:3/21', original);
    }
    // With both halves back, everything opens again.
    expect((await verify(pq, { snapshot: hybrid, actor: 'test' })).findings).toEqual([]);
  }, 90_000);

  it('dr-decrypt.sh refuses a hybrid cell naming what to do, and reads an X25519-only cell through a two-half key', async () => {
    const exportFile = join(env.dir, 'keys-export.json');
    expectExit(await env.cli(['keys', 'export', '--config', pqConfig, '--out', exportFile, '--json']), 0);
    const dr = async (snapshot: string, cell: string): Promise<{ code: number | null; stdout: string; stderr: string }> => {
      const child = spawn(join(REPO_ROOT, 'runbooks', 'dr-decrypt.sh'), [
        '--signing-key', join(env.dir, 'backup-signing.key.pub'),
        '--master-key', env.masterKeyFile,
        '--manifest', join(env.storePath ?? '', 'snapshots', `${snapshot}.json.gz`),
        '--objects', env.storePath ?? '',
        '--keys-export', exportFile,
        '--cell', cell,
      ], { stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      child.stdout.setEncoding('utf8').on('data', (t: string) => (stdout += t));
      child.stderr.setEncoding('utf8').on('data', (t: string) => (stderr += t));
      const [code] = (await once(child, 'close')) as [number | null];
      return { code, stdout, stderr };
    };
    const refused = await dr(hybrid, HYBRID_CELL);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toContain('x25519-mlkem768');
    expect(refused.stderr).toContain('lethe restore');
    // The newest manifest also lists tenant 4's cell, written X25519-only by the first snapshot;
    // its keys now hold version-2 secrets (both halves), whose X25519 block openssl reads.
    const read = await dr(hybrid, 'messages/4/2026-01/31/9');
    expect(read.stderr).toBe('');
    expect(read.code).toBe(0);
    expect(read.stdout).toContain('globex news');
  }, 60_000);

  it('keeps a held hybrid tuple key only under a hybrid re-encapsulation, through a retention shred; an erasure shreds', async () => {
    const hold = await env.cli([
      'hold', 'place', '--config', pqConfig, '--case', 'CASE-PQ', '--tenant', '3', '--user', '22',
      '--from', '2026-01-01T00:00:00Z', '--to', '2026-01-31T23:59:59Z', '--reason', 'litigation', '--actor', 'legal-ann', '--json',
    ]);
    expectExit(hold, 0);
    const request = await env.cli(['erase', 'request', '--config', pqConfig, '--tenant', '3', '--user', '21', '--reason', 'erasure', '--actor', 'dpo-dan', '--json']);
    expectExit(request, 0);
    const id = (JSON.parse(request.stdout) as { id: string }).id;
    expectExit(await env.cli(['erase', 'approve', id, '--config', pqConfig, '--actor', 'dpo-eve', '--json']), 0);

    const apply = await lifecycleApply(pq, { actor: 'test', now: () => NOW });
    expect(apply.cellsRewrapped).toBeGreaterThan(0);
    // Bob's tuple has cells under the X25519-only encapsulation of the first snapshot and the
    // hybrid one of the second: one re-encapsulation of each kind, the hybrid one with ciphertexts.
    const { rows } = await vault.query<{ kem: string; n: number }>(
      `SELECT e.kem, (SELECT count(*)::int FROM lethe.encapsulation_ciphertexts c WHERE c.encapsulation = e.id) AS n
         FROM lethe.held_cell_keys h JOIN lethe.encapsulations o ON o.id = h.encapsulation JOIN lethe.encapsulations e ON e.id = h.rewrap
        WHERE h.key_id = 'cell:3/messages/2026-01/22/7' ORDER BY o.kem`,
    );
    expect(rows).toEqual([{ kem: 'x25519', n: 0 }, { kem: 'x25519-mlkem768', n: 4 }]);

    const target = await env.database('pq_after');
    await restore(pq, { snapshot: hybrid, targetUrl: target.url, replace: false, actor: 'test' });
    const messages = await queryValue<string>(target.url, "SELECT string_agg(id::text || ':' || sender_id::text, ',' ORDER BY id) AS v FROM public.messages");
    // Only Bob's held January messages are left: Ada's are erased, every other period shredded.
    expect(messages).toBe('9005:22,9102:22');
    const result = await verify(pq, { snapshot: hybrid, actor: 'test' });
    expect(result.findings).toEqual([]);
    expect(result.cellsShredded).toBeGreaterThan(0);
    vaultBackupKey = apply.vaultBackup;
  }, 120_000);

  it('carries ML-KEM public keys and ciphertexts through a vault backup and vault restore', async () => {
    const restored = await env.database('pq_vault');
    const raw = { ...env.raw, keys: { postQuantum: true }, vault: { database: { url: restored.url }, schema: 'lethe' } };
    const config = await env.writeConfig('lethe-restored.yaml', raw);
    expect(vaultBackupKey).toMatch(/^vault\//);
    expectExit(await env.cli(['vault', 'restore', '--config', config, '--from', vaultBackupKey, '--json']), 0);
    const count = (table: string): Promise<string> => queryValue<string>(restored.url, `SELECT count(*)::text AS v FROM lethe.${table}`);
    expect(await count('encapsulation_ciphertexts')).toBe(
      await queryValue<string>(env.vaultDb.url, 'SELECT count(*)::text AS v FROM lethe.encapsulation_ciphertexts'),
    );
    expect(await queryValue<string>(restored.url, 'SELECT count(*)::text AS v FROM lethe.dimension_keys WHERE mlkem_public IS NOT NULL')).toBe(
      await queryValue<string>(env.vaultDb.url, 'SELECT count(*)::text AS v FROM lethe.dimension_keys WHERE mlkem_public IS NOT NULL'),
    );
    const drill = await env.cli(['verify', '--config', config, '--snapshot', hybrid, '--json']);
    expectExit(drill, 0);
  }, 120_000);
});
