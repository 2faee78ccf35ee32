import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { exportAudit } from '../../../src/audit/index.ts';
import { decryptBytes, encryptBytes, readMasterKeyFile } from '../../../src/crypto/index.ts';
import type { Signer } from '../../../src/keys/index.ts';
import { ErrorCode, LetheError } from '../../../src/errors/index.ts';
import { backup, initialize } from '../../../src/jobs/tasks.ts';
import { destroyKeys, tombstoneKey, type Tombstone } from '../../../src/lifecycle/destroy.ts';
import { createS3Store, type ObjectStore } from '../../../src/storage/index.ts';
import { VAULT_SCHEMA_VERSION, Vault, migrateVault } from '../../../src/vault/index.ts';
import { vaultBackupSignedMessage } from '../../../src/vaultbackup/format.ts';
import {
  listVaultBackups,
  parseVaultBackupKey,
  restoreVaultBackup,
  VAULT_BACKUP_SIGNATURE_FORMAT,
  vaultBackupKey,
  vaultBackupSignatureKey,
  writeVaultBackup,
  type RestoreVaultBackupInput,
} from '../../../src/vaultbackup/index.ts';
import {
  createChatTemplate,
  createLetheEnv,
  expectExit,
  jsonOut,
  type LetheEnv,
  type TestDatabase,
} from '../../helpers/lethe-env.ts';
import { startS3rver, type S3rverHandle } from '../../helpers/s3.ts';
import { expectLetheError } from '../storage/conformance.ts';

const run = promisify(execFile);

/**
 * Stores `body` as the vault backup `key` with a valid signature by `signer`: a backup lethe
 * itself wrote, but defective (what the checks after the signature must still catch).
 */
async function putSigned(store: ObjectStore, signer: Signer, key: string, body: Uint8Array, schemaVersion = VAULT_SCHEMA_VERSION): Promise<void> {
  await store.put(key, body);
  const statement = {
    format: VAULT_BACKUP_SIGNATURE_FORMAT,
    backup: key,
    sha256: createHash('sha256').update(body).digest('hex'),
    size: body.length,
    createdAt: new Date().toISOString(),
    schemaVersion,
  } as const;
  const signature = { keyId: signer.id, value: signer.sign(vaultBackupSignedMessage(statement)) };
  await store.put(vaultBackupSignatureKey(key), new Uint8Array(Buffer.from(JSON.stringify({ ...statement, signature }))));
}
const ACTOR = 'vault-backup-test';

/** Every vault table's rows as text, in a stable order, read by PostgreSQL itself. */
async function tableDump(url: string, schema = 'lethe'): Promise<Record<string, string[]>> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    const { rows: tables } = await client.query<{ name: string }>(
      `SELECT c.relname AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = $1 AND c.relkind = 'r' AND c.relname <> 'migrations' ORDER BY 1`,
      [schema],
    );
    const out: Record<string, string[]> = {};
    for (const { name } of tables) {
      const { rows } = await client.query<{ r: string }>(
        `SELECT t::text AS r FROM ${client.escapeIdentifier(schema)}.${client.escapeIdentifier(name)} t ORDER BY 1`,
      );
      out[name] = rows.map((r) => r.r);
    }
    return out;
  } finally {
    await client.end();
  }
}

async function schemaExists(url: string, schema = 'lethe'): Promise<boolean> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    const { rows } = await client.query<{ e: boolean }>(
      'SELECT to_regnamespace($1) IS NOT NULL AS e',
      [schema],
    );
    return rows[0]?.e === true;
  } finally {
    await client.end();
  }
}

describe('vault backups', () => {
  let template: TestDatabase;
  let env: LetheEnv;
  let vault: Vault;
  let store: ObjectStore;
  let identity: string;
  let recipient: string;
  let signer: Signer;
  /** A vault backup of the populated vault, before any destruction. */
  let first: Awaited<ReturnType<typeof writeVaultBackup>>;
  let firstDump: Record<string, string[]>;
  const restoreInput = (
    url: string,
    key: string,
    overrides: Partial<RestoreVaultBackupInput> = {},
  ): RestoreVaultBackupInput => ({
    vaultUrl: url,
    schema: 'lethe',
    store,
    masterIdentity: identity,
    key,
    actor: ACTOR,
    signer,
    ...overrides,
  });

  beforeAll(async () => {
    template = await createChatTemplate('vb_tpl');
    env = await createLetheEnv({ template: template.name });
    await initialize(env.rt, ACTOR);
    await backup(env.rt, { actor: ACTOR });
    vault = await env.rt.vault();
    store = await env.rt.store();
    ({ identity, recipient } = await readMasterKeyFile(env.masterKeyFile));
    signer = await env.rt.signer('lifecycle');
    // Rows in the lifecycle tables too, so every table and a bigserial take part.
    const [tenant] = (await vault.listDimensionKeys()).filter((k) => k.kind === 'tenant');
    await vault.placeHolds(
      [
        {
          caseId: 'CASE-1',
          tenant: tenant?.tenant ?? '1',
          user: null,
          conversation: null,
          from: null,
          to: null,
          reason: 'litigation',
          placedBy: ACTOR,
        },
      ],
      (rows) => ({
        actor: ACTOR,
        action: 'hold.place',
        subject: 'CASE-1',
        details: { selectors: rows.length },
      }),
    );
    await exportAudit(vault, store, signer);
    firstDump = await tableDump(env.vaultDb.url);
    first = await writeVaultBackup({
      vault,
      store,
      masterRecipient: recipient,
      signer,
      graceWindowDays: 7,
      now: new Date(),
      actor: ACTOR,
    });
  });
  afterAll(async () => {
    await env.cleanup();
    await template.drop();
  });

  it('names backups by their time and lists them with size', async () => {
    const at = new Date('2026-11-28T10:19:12.345Z');
    expect(vaultBackupKey(at)).toBe('vault/20261128T101912345Z.age');
    expect(parseVaultBackupKey('vault/20261128T101912345Z.age')).toEqual(at);
    expect(parseVaultBackupKey('vault/20261328T101912345Z.age')).toBeNull();
    expect(parseVaultBackupKey('vault/notes.txt')).toBeNull();
    expect(first.key).toMatch(/^vault\/\d{8}T\d{9}Z\.age$/);
    const listed = await listVaultBackups(store);
    const mine = listed.find((b) => b.key === first.key);
    expect(mine?.size).toBe(first.size);
    expect(mine?.createdAt).toEqual(first.createdAt);
    expect(first.tables.dimension_keys).toBe(firstDump.dimension_keys?.length);
    expect(first.tables.holds).toBe(1);
    expect(first.tables).not.toHaveProperty('migrations');
  });

  it('is an age file the age CLI decrypts with the master key file: header, rows, trailer', async () => {
    const file = join(env.storePath ?? '', ...first.key.split('/'));
    const { stdout } = await run('age', ['--decrypt', '-i', env.masterKeyFile, file], {
      maxBuffer: 256 * 1024 * 1024,
    });
    const lines = stdout
      .trimEnd()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines[0]).toMatchObject({
      format: 'lethe.vault-backup.v1',
      schemaVersion: first.schemaVersion,
    });
    expect((lines[0]?.tables as { name: string }[]).map((t) => t.name)).toContain('dimension_keys');
    expect(lines.at(-1)).toEqual({ end: true, rows: first.tables });
    // Our own reader agrees byte for byte.
    const ours = await decryptBytes(await store.getBytes(first.key), [identity]);
    expect(Buffer.from(ours).toString('utf8')).toBe(stdout);
  });

  it('restores a populated vault table for table, with sequences past the loaded ids', async () => {
    const target = await env.database('vb_rt');
    // An empty vault created by `lethe init`'s migration is an acceptable target too.
    await migrateVault(target.url, 'lethe');
    const result = await restoreVaultBackup(restoreInput(target.url, first.key));
    expect(result.tables).toEqual(first.tables);
    expect(result.auditReplayed).toBe(0);
    expect(result.destructionsReapplied).toEqual([]);
    const restored = await tableDump(target.url);
    for (const [table, rows] of Object.entries(firstDump)) {
      if (table === 'audit_log' || table === 'store_objects') continue;
      expect(restored[table], table).toEqual(rows);
    }
    // The backup records itself and its signature as lethe's objects before it dumps the vault.
    const own = (restored.store_objects ?? []).filter((r) => !(firstDump.store_objects ?? []).includes(r));
    expect(own.map((r) => r.split(',')[1])).toEqual([first.key, first.signatureKey].sort());
    // The log is the backup's, then the restore's own entry.
    expect(restored.audit_log?.slice(0, firstDump.audit_log?.length)).toEqual(firstDump.audit_log);
    const reopened = await Vault.open(target.url, 'lethe');
    try {
      expect((await reopened.verifyAuditChain()).ok).toBe(true);
      const holds = await reopened.placeHolds(
        [
          {
            caseId: 'CASE-2',
            tenant: '1',
            user: null,
            conversation: null,
            from: null,
            to: null,
            reason: 'r',
            placedBy: ACTOR,
          },
        ],
        () => ({ actor: ACTOR, action: 'hold.place', subject: 'CASE-2' }),
      );
      expect(holds.holds[0]?.id).toBe(2);
    } finally {
      await reopened.close();
    }
  });

  it('refuses a target that already holds a vault, naming the fix, and changes nothing', async () => {
    const before = await tableDump(env.vaultDb.url);
    const err = await expectLetheError(
      restoreVaultBackup(restoreInput(env.vaultDb.url, first.key)),
      ErrorCode.TARGET_NOT_EMPTY,
      /fresh schema.*new, empty database/,
    );
    expect(err.details).toMatchObject({ schema: 'lethe' });
    expect(await tableDump(env.vaultDb.url)).toEqual(before);
  });

  it('refuses a truncated or corrupted backup with nothing restored', async () => {
    const bytes = await store.getBytes(first.key);
    const plain = Buffer.from(await decryptBytes(bytes, [identity])).toString('utf8');
    const lines = plain.split('\n');
    const cases: [string, Uint8Array, ErrorCode][] = [
      ['cut ciphertext', bytes.subarray(0, bytes.length - 200), ErrorCode.CRYPTO],
      [
        'flipped byte',
        Uint8Array.from(bytes, (b, i) => (i === bytes.length - 1000 ? b ^ 1 : b)),
        ErrorCode.CRYPTO,
      ],
      // A well-formed age file of a dump cut short after some rows: only the trailer tells.
      [
        'cut dump',
        await encryptBytes(
          new Uint8Array(Buffer.from(lines.slice(0, Math.floor(lines.length * 0.8)).join('\n'))),
          [recipient],
        ),
        ErrorCode.INTEGRITY,
      ],
      [
        'row of the wrong shape',
        await encryptBytes(new Uint8Array(Buffer.from(plain.replace(/\n\[/, '\n[null,'))), [
          recipient,
        ]),
        ErrorCode.INTEGRITY,
      ],
    ];
    let ms = 0;
    for (const [label, body, code] of cases) {
      const key = vaultBackupKey(new Date(Date.UTC(2020, 0, 1, 0, 0, 0, ++ms)));
      await putSigned(store, signer, key, body);
      const target = await env.database('vb_bad');
      await expectLetheError(restoreVaultBackup(restoreInput(target.url, key)), code);
      expect(await schemaExists(target.url), label).toBe(false);
    }
  });

  it('refuses a backup from a newer vault schema', async () => {
    const plain = Buffer.from(
      await decryptBytes(await store.getBytes(first.key), [identity]),
    ).toString('utf8');
    const newer = plain.replace(/"schemaVersion":\d+/, '"schemaVersion":99');
    const key = vaultBackupKey(new Date(Date.UTC(2020, 0, 2)));
    await putSigned(store, signer, key, await encryptBytes(new Uint8Array(Buffer.from(newer)), [recipient]), 99);
    const target = await env.database('vb_new');
    await expectLetheError(
      restoreVaultBackup(restoreInput(target.url, key)),
      ErrorCode.VAULT,
      /upgrade|at least as new/,
    );
    expect(await schemaExists(target.url)).toBe(false);
  });

  it('a wrong master key opens nothing', async () => {
    const target = await env.database('vb_key');
    const { generateKeyPair } = await import('../../../src/crypto/index.ts');
    await expectLetheError(
      restoreVaultBackup(
        restoreInput(target.url, first.key, { masterIdentity: generateKeyPair().identity }),
      ),
      ErrorCode.CRYPTO,
    );
    expect(await schemaExists(target.url)).toBe(false);
  });

  it('re-applies a destruction made after the backup; the chain continues the bucket’s', async () => {
    const [user] = (await vault.listDimensionKeys()).filter(
      (k) => k.kind === 'user' && !k.destroyed,
    );
    if (user === undefined) throw new Error('no user key in the vault');
    const wrappedBefore = (await vault.getWrappedDimensionIdentities([user.id])).get(user.id);
    expect(wrappedBefore).toBeInstanceOf(Uint8Array);
    const {
      destroyed: [destroyed],
    } = await destroyKeys(vault, store, {
      signer,
      keyIds: [user.id],
      actor: 'dpo',
      reason: 'erasure request er-test0001',
      cause: { kind: 'erasure', request: 'er-test0001', scope: 'user' },
    });
    // The next job with write access copies the entry into the bucket.
    await exportAudit(vault, store, signer);
    const bucketHead = await vault.auditHead();

    const target = await env.database('vb_shred');
    const result = await restoreVaultBackup(restoreInput(target.url, first.key));
    expect(result.destructionsReapplied.map((d) => d.keyId)).toEqual([user.id]);
    expect(result.destructionsReapplied[0]?.firstDestroyedAt).toBe(
      destroyed?.destroyedAt.toISOString(),
    );
    expect(result.auditReplayed).toBeGreaterThanOrEqual(1);

    const restored = await Vault.open(target.url, 'lethe');
    try {
      expect((await restored.getWrappedDimensionIdentities([user.id])).get(user.id)).toBeNull();
      const record = (await restored.getDestructions([user.id])).get(user.id);
      expect(record?.cause).toEqual({ kind: 'erasure', request: 'er-test0001', scope: 'user' });
      expect(record?.reason).toMatch(
        /erasure request er-test0001.*destroyed again after the vault was restored/,
      );
      // The restored chain holds the bucket's entries unchanged, then the re-destroy and the restore.
      const report = await restored.verifyAuditChain({
        anchors: bucketHead === null ? [] : [bucketHead],
      });
      expect(report.findings).toEqual([]);
      const actions: string[] = [];
      for await (const e of restored.iterateAudit((bucketHead?.seq ?? 0) + 1))
        actions.push(e.action);
      expect(actions).toEqual(['key.destroy', 'vault.restore']);
      expect(result.auditHead.seq).toBe((bucketHead?.seq ?? 0) + 2);
    } finally {
      await restored.close();
    }
    // The wrapped identity is nowhere in the restored vault's tables.
    const hex = Buffer.from(wrappedBefore ?? new Uint8Array()).toString('hex');
    const client = new pg.Client({ connectionString: target.url });
    await client.connect();
    try {
      const { rows } = await client.query<{ n: string }>(
        `SELECT (SELECT count(*) FROM lethe.dimension_keys WHERE wrapped_identity = decode($1, 'hex'))
              + (SELECT count(*) FROM lethe.held_cell_keys WHERE wrapped = decode($1, 'hex')) AS n`,
        [hex],
      );
      expect(rows[0]?.n).toBe('0');
    } finally {
      await client.end();
    }
  });

  it('ignores a planted tombstone that no lifecycle key of the vault signed, destroying nothing, and says so', async () => {
    // Copy a real tombstone, point it at another key and re-file it under that key's name:
    // well formed, but its signature no longer matches, so anyone with bucket write access
    // cannot make a restore shred a key, nor stop a restore by planting one.
    let real = '';
    for await (const object of store.list('destructions/')) real = object.key;
    expect(real).not.toBe('');
    const tombstone = JSON.parse(Buffer.from(await store.getBytes(real)).toString('utf8')) as Tombstone;
    const [victim] = (await vault.listDimensionKeys()).filter((k) => k.kind === 'tenant' && !k.destroyed);
    if (victim === undefined) throw new Error('no live tenant key');
    const forged = { ...tombstone, keyId: victim.id };
    await store.put(tombstoneKey(victim.id), new Uint8Array(Buffer.from(JSON.stringify(forged))));
    await store.put('destructions/not-a-tombstone.json', new Uint8Array(Buffer.from('{"oops":1}')));
    const target = await env.database('vb_forged');
    try {
      const result = await restoreVaultBackup(restoreInput(target.url, first.key));
      expect(result.ignoredTombstones.map((t) => t.key).sort()).toEqual(['destructions/not-a-tombstone.json', tombstoneKey(victim.id)].sort());
      expect(result.ignoredTombstones.find((t) => t.key === tombstoneKey(victim.id))?.problem).toMatch(/not signed by a lifecycle key/);
      expect(result.destructionsReapplied.map((d) => d.keyId)).not.toContain(victim.id);
      const restored = await Vault.open(target.url, 'lethe');
      try {
        expect((await restored.getDimensionKeys([victim.id])).get(victim.id)?.destroyed).toBe(false);
      } finally {
        await restored.close();
      }
    } finally {
      await store.delete(tombstoneKey(victim.id));
      await store.delete('destructions/not-a-tombstone.json');
    }
  });

  it('a restore interrupted after the load is finished by running it again', async () => {
    // The bucket fails while the tombstones are read: the vault is loaded, not yet caught up.
    let failed = false;
    const flaky = new Proxy(store, {
      get(target, property) {
        if (property === 'list') {
          return (prefix: string) => {
            if (prefix === 'destructions/' && !failed) {
              failed = true;
              throw new LetheError(ErrorCode.STORAGE, 'listing destructions/: connection reset');
            }
            return target.list(prefix);
          };
        }
        const value = Reflect.get(target, property) as unknown;
        return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
      },
    });
    const target = await env.database('vb_resume');
    await expectLetheError(restoreVaultBackup(restoreInput(target.url, first.key, { store: flaky })), ErrorCode.STORAGE, /connection reset/);
    // Loaded but unfinished: another backup is refused, the same one resumes.
    const other = vaultBackupKey(new Date(Date.UTC(2020, 0, 3)));
    await putSigned(store, signer, other, await store.getBytes(first.key));
    await expectLetheError(
      restoreVaultBackup(restoreInput(target.url, other)),
      ErrorCode.TARGET_NOT_EMPTY,
    );
    const result = await restoreVaultBackup(restoreInput(target.url, first.key));
    expect(result.resumed).toBe(true);
    expect(result.tables).toEqual(first.tables);
    expect(result.destructionsReapplied.length).toBe(1);
    const reopened = await Vault.open(target.url, 'lethe');
    try {
      expect((await reopened.verifyAuditChain()).ok).toBe(true);
    } finally {
      await reopened.close();
    }
    expect((await tableDump(target.url)).meta?.some((r) => r.includes('vault_restore'))).toBe(
      false,
    );
  });

  it('locks a backup for the grace window when object lock is configured', async () => {
    const now = new Date();
    const locked = await writeVaultBackup({
      vault,
      store,
      masterRecipient: recipient,
      signer,
      graceWindowDays: 7,
      lockMode: 'COMPLIANCE',
      now,
    });
    const retainUntil = new Date(now.getTime() + 7 * 86_400_000);
    expect(locked.retainUntil).toEqual(retainUntil);
    expect(await store.retention(locked.key)).toEqual({ mode: 'COMPLIANCE', retainUntil });
    await expectLetheError(store.delete(locked.key), ErrorCode.STORAGE, /lock until/);
  });

  describe('on s3rver', () => {
    let server: S3rverHandle;
    let s3: ObjectStore;
    beforeAll(async () => {
      server = await startS3rver();
      s3 = createS3Store({
        endpoint: server.endpoint,
        region: 'us-east-1',
        bucket: server.bucket,
        prefix: 'vb',
        forcePathStyle: true,
        accessKeyId: server.accessKeyId,
        secretAccessKey: server.secretAccessKey,
      });
    });
    afterAll(async () => {
      await s3.close();
      await server.stop();
    });

    it('writes, lists and restores a vault backup', async () => {
      const written = await writeVaultBackup({
        vault,
        store: s3,
        masterRecipient: recipient,
        signer,
        graceWindowDays: 7,
        now: new Date(),
      });
      expect(await listVaultBackups(s3)).toEqual([
        { key: written.key, createdAt: written.createdAt, size: written.size },
      ]);
      const target = await env.database('vb_s3');
      const result = await restoreVaultBackup(restoreInput(target.url, written.key, { store: s3 }));
      expect(result.tables).toEqual(written.tables);
    });
  });

  describe('the CLI', () => {
    it('backs up, lists and restores into an empty vault database', async () => {
      const made = await env.cli(['vault', 'backup', '--json', '--config', env.configPath]);
      expectExit(made, 0);
      const { key } = jsonOut(made) as { key: string };
      const listed = await env.cli(['vault', 'list', '--json', '--config', env.configPath]);
      expectExit(listed, 0);
      expect(
        (jsonOut(listed) as { backups: { key: string }[] }).backups.map((b) => b.key),
      ).toContain(key);

      // Refused into the live vault: exit 2 and the fix.
      const refused = await env.cli([
        'vault',
        'restore',
        '--from',
        key,
        '--config',
        env.configPath,
      ]);
      expectExit(refused, 2);
      expect(refused.stderr).toMatch(/fresh schema/);

      const target = await env.database('vb_cli');
      const config = await env.writeConfig('restore.yaml', {
        ...env.raw,
        vault: { database: { url: target.url }, schema: 'lethe' },
      });
      const restored = await env.cli([
        'vault',
        'restore',
        '--from',
        key,
        '--json',
        '--config',
        config,
      ]);
      expectExit(restored, 0);
      const out = jsonOut(restored) as {
        key: string;
        destructionsReapplied: unknown[];
        auditExported: number;
      };
      expect(out.key).toBe(key);
      expect(out.auditExported).toBeGreaterThanOrEqual(1);
      const verified = await env.cli(['audit', 'verify', '--json', '--config', config]);
      expectExit(verified, 0);
      const actions: string[] = [];
      const reopened = await Vault.open(target.url, 'lethe');
      try {
        for await (const e of reopened.iterateAudit(1)) actions.push(e.action);
      } finally {
        await reopened.close();
      }
      expect(actions.at(-1)).toBe('vault.restore');
    });

    it('needs --from', async () => {
      const result = await env.cli(['vault', 'restore', '--config', env.configPath]);
      expectExit(result, 2);
      expect(result.stderr).toMatch(/--from KEY/);
    });
  });
});
