import { cp, mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { userKeyId } from '../../../src/cells/ids.ts';
import { parseConfig } from '../../../src/config/index.ts';
import { generateSigningKey, readMasterKeyFile, signingKeyFromPem, signingKeyId } from '../../../src/crypto/index.ts';
import { Runtime } from '../../../src/jobs/runtime.ts';
import { backup, initialize, lifecycleApply, lifecyclePlan } from '../../../src/jobs/tasks.ts';
import { signerFromKey } from '../../../src/keys/index.ts';
import { isTombstoneKeyFor, tombstoneKey, tombstoneProblem } from '../../../src/lifecycle/destroy.ts';
import { createLogger } from '../../../src/log/index.ts';
import { demoSample, type DemoSample } from '../../../src/store/demo-sample.ts';
import { restoreVaultBackup, writeVaultBackup, type VaultBackupResult } from '../../../src/vaultbackup/index.ts';
import { Vault } from '../../../src/vault/index.ts';
import {
  createChatTemplate,
  createLetheEnv,
  expectExit,
  filesUnder,
  jsonOut,
  vaultRowsText,
  type LetheEnv,
  type TestDatabase,
} from '../../helpers/lethe-env.ts';

/**
 * Must hold (issue 7, items 2, 3 and 5): a planted tombstone cannot suppress the real one,
 * signing keys never live in the vault, and lifecycle never deletes what it did not write
 * to the store it works on.
 */
describe('lifecycle against a hostile bucket and a readable vault', () => {
  let template: TestDatabase;
  let env: LetheEnv;
  let sample: DemoSample;
  let beforeErasure: VaultBackupResult;

  beforeAll(async () => {
    template = await createChatTemplate('lc_attack_tpl');
    env = await createLetheEnv({ template: template.name });
    await initialize(env.rt, 'e2e');
    await backup(env.rt, { actor: 'e2e' });
    sample = await demoSample(env.chat.url);
    const vault = await env.rt.vault();
    beforeErasure = await writeVaultBackup({
      vault,
      store: await env.rt.store(),
      masterRecipient: await vault.getMasterRecipient(),
      signer: await env.rt.signer('lifecycle'),
      graceWindowDays: 7,
      now: new Date(),
    });
  }, 180_000);
  afterAll(async () => {
    await env.cleanup();
    await template.drop();
  });

  it('a planted tombstone does not suppress the real one, and an old vault backup cannot bring the key back (item 2)', async () => {
    const keyId = userKeyId(sample.tenant, sample.user);
    const planted = join(env.storePath ?? '', ...tombstoneKey(keyId).split('/'));
    await mkdir(join(env.storePath ?? '', 'destructions'), { recursive: true });
    await writeFile(planted, 'garbage, not a tombstone\n');

    const request = await env.cli(['erase', 'request', '--config', env.configPath, '--tenant', sample.tenant, '--user', sample.user, '--reason', 'GDPR Art. 17', '--actor', 'dpo-ann', '--json']);
    expectExit(request, 0);
    const { id } = jsonOut(request) as { id: string };
    const approve = await env.cli(['erase', 'approve', id, '--config', env.configPath, '--actor', 'dpo-bob', '--json']);
    expectExit(approve, 0);
    const approved = jsonOut(approve) as { foreignTombstones: { key: string; problem: string }[] };
    expect(approved.foreignTombstones).toEqual([{ key: tombstoneKey(keyId), problem: 'not JSON' }]);
    expect(approve.stderr).toMatch(/warning: destructions\/.*is not a tombstone lethe wrote/);

    // The planted object is left for the investigation; the real tombstone is beside it.
    expect(await readFile(planted, 'utf8')).toBe('garbage, not a tombstone\n');
    const vault = await env.rt.vault();
    const trusted = await vault.getSigningPublicKeys(['lifecycle']);
    const tombstones = (await filesUnder(join(env.storePath ?? '', 'destructions'))).map((f) => `destructions/${f}`);
    const valid = [];
    for (const key of tombstones.filter((k) => isTombstoneKeyFor(k, keyId))) {
      if (tombstoneProblem(await readFile(join(env.storePath ?? '', ...key.split('/'))), keyId, trusted) === null) valid.push(key);
    }
    expect(valid).toHaveLength(1);
    expect(valid[0]).not.toBe(tombstoneKey(keyId));

    // A vault restored from a backup older than the erasure destroys the key again, and
    // reports the planted object instead of stopping on it.
    const restoredDb = await env.database('lc_attack_vault');
    const master = await readMasterKeyFile(env.masterKeyFile);
    const result = await restoreVaultBackup({
      vaultUrl: restoredDb.url,
      schema: 'lethe',
      store: await env.rt.store(),
      masterIdentity: master.identity,
      key: beforeErasure.key,
      actor: 'ops',
      signer: await env.rt.signer('lifecycle'),
    });
    expect(result.destructionsReapplied.map((d) => d.keyId)).toEqual([keyId]);
    expect(result.ignoredTombstones.map((t) => t.key)).toEqual([tombstoneKey(keyId)]);
    const restored = await Vault.open(restoredDb.url, 'lethe');
    try {
      expect((await restored.getWrappedDimensionIdentities([keyId])).get(keyId)).toBeNull();
    } finally {
      await restored.close();
    }
  });

  it('refuses to restore a vault backup it cannot authenticate, before decrypting it (item 1, vault restore)', async () => {
    const vault = await env.rt.vault();
    const store = await env.rt.store();
    // Anyone can encrypt to the master key's public recipient, but not sign as lethe.
    const forged = await writeVaultBackup({
      vault,
      store,
      masterRecipient: await vault.getMasterRecipient(),
      signer: signerFromKey(generateSigningKey(), 'lifecycle'),
      graceWindowDays: 7,
      now: new Date(Date.now() + 1000),
    });
    const master = await readMasterKeyFile(env.masterKeyFile);
    const target = await env.database('lc_attack_forged');
    const lifecycleKey = signingKeyFromPem(await readFile(join(env.dir, 'lifecycle-signing.key'), 'utf8'), 'key');
    const attempt = (key: string): Promise<unknown> =>
      restoreVaultBackup({
        vaultUrl: target.url,
        schema: 'lethe',
        store,
        masterIdentity: master.identity,
        key,
        actor: 'ops',
        signer: signerFromKey(lifecycleKey, 'lifecycle'),
      }).then(
        () => null,
        (err: unknown) => err as Error,
      );
    expect(String(await attempt(forged.key))).toMatch(/cannot be trusted.*not the configured lifecycle signing key/);
    // A genuine signature over other bytes does not pass either.
    const genuine = join(env.storePath ?? '', ...beforeErasure.key.split('/'));
    const bytes = await readFile(genuine);
    const flipped = Buffer.from(bytes);
    flipped[flipped.length - 1] = (flipped[flipped.length - 1] ?? 0) ^ 1;
    await writeFile(genuine, flipped);
    try {
      expect(String(await attempt(beforeErasure.key))).toMatch(/is not what was signed/);
    } finally {
      await writeFile(genuine, bytes);
    }
    const client = new pg.Client({ connectionString: target.url });
    await client.connect();
    try {
      const { rows } = await client.query<{ n: number }>("SELECT count(*)::int AS n FROM pg_namespace WHERE nspname = 'lethe'");
      expect(rows[0]?.n).toBe(0);
    } finally {
      await client.end();
    }
  });

  it('keeps no private signing key in the vault, and a job whose key the vault does not list refuses to sign (item 3)', async () => {
    const seeds = [];
    for (const file of ['backup-signing.key', 'lifecycle-signing.key']) {
      const key = signingKeyFromPem(await readFile(join(env.dir, file), 'utf8'), file);
      seeds.push(Buffer.from(key.privateKey).subarray(16));
    }
    const dump = await vaultRowsText(env.vaultDb.url);
    for (const seed of seeds) {
      for (const form of [seed.toString('hex'), seed.toString('base64'), seed.toString('base64').slice(0, 40)]) expect(dump).not.toContain(form);
    }
    // Another key file in the config: the vault does not list it, so the backup refuses.
    const other = generateSigningKey();
    await writeFile(join(env.dir, 'impostor.key'), `-----BEGIN PRIVATE KEY-----\n${Buffer.from(other.privateKey).toString('base64')}\n-----END PRIVATE KEY-----\n`, { mode: 0o600 });
    const raw = { ...env.raw, signingKeys: { backup: { file: 'impostor.key' }, lifecycle: { file: 'lifecycle-signing.key' } } };
    const impostor = new Runtime(parseConfig(raw, env.dir), createLogger('silent'));
    try {
      const refused = await backup(impostor, { actor: 'e2e' }).then(
        () => null,
        (err: unknown) => err as Error,
      );
      expect(String(refused)).toContain(`backup signing key ${signingKeyId(other.publicKey)}`);
      expect(String(refused)).toMatch(/not registered in the vault.*lethe init/);
    } finally {
      await impostor.close();
    }
  });

  it('never deletes objects of another store, nor files it did not write (item 5)', async () => {
    // A second snapshot, so the store holds several packs and two manifests.
    await backup(env.rt, { actor: 'e2e' });
    const copyDir = join(env.dir, 'store-copy');
    await cp(env.storePath ?? '', copyDir, { recursive: true });
    const copyRaw = { ...env.raw, storage: { type: 'filesystem', path: 'store-copy' } };
    const copy = new Runtime(parseConfig(copyRaw, env.dir), createLogger('silent'));
    try {
      const before = await filesUnder(copyDir);
      const plan = await lifecyclePlan(copy, { now: new Date() });
      expect(plan.actions.filter((a) => a.kind === 'delete-object')).toEqual([]);
      expect(plan.unknownObjects.map((u) => u.objectKey)).toContain(before.find((f) => f.startsWith('packs/')));
      const applied = await lifecycleApply(copy, { actor: 'e2e', now: () => new Date() });
      expect(applied.objectsDeleted).toBe(0);
      // Everything that was there still is (apply adds its own vault backup).
      const after = await filesUnder(copyDir);
      expect(before.filter((f) => !after.includes(f))).toEqual([]);
    } finally {
      await copy.close();
    }

    // A file someone else put under packs/ in lethe's own store: reported, never deleted.
    const foreign = join(env.storePath ?? '', 'packs', 'README.txt');
    await writeFile(foreign, 'do not delete: notes of the storage team\n');
    const plan = await lifecyclePlan(env.rt, { now: new Date() });
    expect(plan.unknownObjects.map((u) => u.objectKey)).toEqual(['packs/README.txt']);
    const out = await env.cli(['lifecycle', 'apply', '--config', env.configPath, '--actor', 'ops']);
    expectExit(out, 0);
    expect(out.stderr).toMatch(/packs\/README\.txt: lethe has no record of writing this object/);
    expect(await readFile(foreign, 'utf8')).toBe('do not delete: notes of the storage team\n');
  }, 180_000);
});
