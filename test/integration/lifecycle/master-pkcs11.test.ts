import { execFile } from 'node:child_process';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { userKeyId } from '../../../src/cells/ids.ts';
import { backup, initialize, lifecycleApply, masterKeys, restore, verify } from '../../../src/jobs/tasks.ts';
import { KeyOpener, Pkcs11MasterKeys } from '../../../src/keys/index.ts';
import { demoSample } from '../../../src/store/demo-sample.ts';
import { Vault } from '../../../src/vault/index.ts';
import { listVaultBackups, restoreVaultBackup } from '../../../src/vaultbackup/index.ts';
import { createChatTemplate, createLetheEnv, expectExit, jsonOut, queryValue, type LetheEnv, type TestDatabase } from '../../helpers/lethe-env.ts';

/**
 * Must hold (issue 13, item 3): with SoftHSM2 as the master, the full round trip (init,
 * backup, verify, restore), an erasure (the old epoch destroyed in the token) and a vault
 * restore pass; and the backup never talks to the HSM. SoftHSM2 keeps this file's token in a
 * directory of its own (SOFTHSM2_CONF points at a config written here).
 */
const MODULE = '/usr/lib/softhsm/libsofthsm2.so';
const TOKEN = 'lethe-test';
const DAY = 86_400_000;

describe('the PKCS#11 master key (SoftHSM2)', () => {
  let template: TestDatabase;
  let env: LetheEnv;
  let dir: string;
  let hsmEnv: Record<string, string>;
  let savedConf: string | undefined;
  let tenant: string;
  let user: string;
  const tokenKeys = (): Pkcs11MasterKeys => new Pkcs11MasterKeys({ module: MODULE, token: TOKEN, pin: { file: join(dir, 'pin') }, label: 'lethe-master' });

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'lethe-test-hsm-'));
    await writeFile(join(dir, 'softhsm2.conf'), `directories.tokendir = ${join(dir, 'tokens')}\nobjectstore.backend = file\nlog.level = ERROR\n`);
    await promisify(execFile)('mkdir', ['-p', join(dir, 'tokens')]);
    savedConf = process.env['SOFTHSM2_CONF'];
    process.env['SOFTHSM2_CONF'] = join(dir, 'softhsm2.conf');
    hsmEnv = { SOFTHSM2_CONF: join(dir, 'softhsm2.conf') };
    // Test fixture only: lethe itself never takes a PIN on a command line.
    await promisify(execFile)('softhsm2-util', ['--init-token', '--free', '--label', TOKEN, '--so-pin', '0000', '--pin', '4321'], { env: { ...process.env, ...hsmEnv } });
    await writeFile(join(dir, 'pin'), '4321\n', { mode: 0o600 });
    await chmod(join(dir, 'pin'), 0o600);
    template = await createChatTemplate('hsm_tpl');
    env = await createLetheEnv({
      template: template.name,
      config: { masterKey: undefined, master: { provider: 'pkcs11', module: MODULE, token: TOKEN, pin: { file: join(dir, 'pin') } }, retention: { graceWindowDays: 7 } },
    });
    ({ tenant, user } = await demoSample(env.chat.url));
  }, 240_000);

  afterAll(async () => {
    await env.cleanup();
    await template.drop();
    if (savedConf === undefined) delete process.env['SOFTHSM2_CONF'];
    else process.env['SOFTHSM2_CONF'] = savedConf;
    await rm(dir, { recursive: true, force: true });
  });

  it('init makes epoch 1 in the token, and backup, verify and restore round-trip', async () => {
    const init = await initialize(env.rt, 'test');
    expect(init.masterRecipient).toMatch(/^lethe-p256:/);
    const keys = tokenKeys();
    try {
      expect(await keys.exists(1)).toBe(true);
    } finally {
      keys.close();
    }
    const vault = await env.rt.vault();
    expect((await vault.getCurrentMasterEpoch()).provider).toBe('pkcs11');
    await backup(env.rt, { actor: 'test' });
    // Every dimension key is wrapped in a lethe-p256 stanza, not to an age X25519 recipient.
    const stanzas = await queryValue<string[]>(env.vaultDb.url, `SELECT array_agg(DISTINCT split_part(convert_from(substring(wrapped_identity from 1 for 200), 'latin1'), E'\\n', 2)) AS v FROM lethe.dimension_keys`);
    expect(stanzas.every((line) => line.startsWith('-> lethe-p256 ')), stanzas.join('|')).toBe(true);
    const verified = await verify(env.rt, { snapshot: 'latest', actor: 'test' });
    expect(verified.findings.filter((f) => /master|dimension key|does not open|trusted/i.test(f.problem))).toEqual([]);
    expect(verified.cellsVerified).toBeGreaterThan(0);
    const target = await env.database('hsm_restore');
    // Files outside the database (the reference store's files.blob) go back to a directory of their own.
    const blobTarget: object = { blobTarget: `file://${join(dir, 'blobs')}` };
    await restore(env.rt, { snapshot: 'latest', targetUrl: target.url, replace: false, actor: 'test', ...blobTarget });
    const count = (url: string): Promise<string> => queryValue<string>(url, 'SELECT count(*)::text AS v FROM messages');
    expect(await count(target.url)).toBe(await count(env.chat.url));
  }, 180_000);

  it('the backup needs no HSM: a config without `master` and no SoftHSM config backs up', async () => {
    const { master: _master, ...raw } = env.raw;
    const configPath = await env.writeConfig('backup-only.yaml', raw);
    const result = await env.cli(['backup', '--config', configPath, '--json'], { env: { SOFTHSM2_CONF: join(dir, 'no-such.conf') } });
    expectExit(result, 0);
    // The new snapshot's keys are the vault's, wrapped to the token's public key: nothing else was needed.
    expect((jsonOut(result) as { snapshotId: string }).snapshotId).toBeTruthy();
  }, 120_000);

  it('an erasure: apply moves the survivors to epoch 2 in the token and destroys epoch 1 after the grace window', async () => {
    const request = await env.cli(['erase', 'request', '--config', env.configPath, '--tenant', tenant, '--user', user, '--reason', 'erasure', '--actor', 'alice', '--json'], { env: hsmEnv });
    expectExit(request, 0);
    const approve = await env.cli(['erase', 'approve', (jsonOut(request) as { id: string }).id, '--config', env.configPath, '--actor', 'bob', '--json'], { env: hsmEnv });
    expectExit(approve, 0);
    const first = await lifecycleApply(env.rt, { actor: 'test', now: () => new Date() });
    expect(first.master?.rotatedTo).toBe(2);
    const later = await lifecycleApply(env.rt, { actor: 'test', now: () => new Date(Date.now() + 8 * DAY) });
    expect(later.master?.destroyed).toEqual([1]);
    const keys = tokenKeys();
    try {
      expect(await keys.exists(1)).toBe(false);
      expect(await keys.exists(2)).toBe(true);
    } finally {
      keys.close();
    }
    const erased = await queryValue<boolean>(env.vaultDb.url, 'SELECT wrapped_identity IS NULL AS v FROM lethe.dimension_keys WHERE id = $1', [userKeyId(tenant, user)]);
    expect(erased).toBe(true);
  }, 180_000);

  it('a vault restore from the newest vault backup opens every live key through the token', async () => {
    const store = await env.rt.store();
    const [newest] = (await listVaultBackups(store)).sort((a, b) => (a.key < b.key ? 1 : -1));
    if (newest === undefined) throw new Error('no vault backup');
    const target = await env.database('hsm_vault');
    const keys = masterKeys(env.rt, 'the test');
    const restored = await restoreVaultBackup({
      vaultUrl: target.url,
      schema: 'lethe',
      store,
      masterIdentity: await keys.identities(),
      key: newest.key,
      actor: 'test',
      signer: await env.rt.signer('lifecycle'),
    });
    expect(Object.keys(restored.tables)).toContain('master_epochs');
    const vault = await Vault.open(target.url, 'lethe');
    try {
      const client = new pg.Client({ connectionString: target.url });
      await client.connect();
      const { rows } = await client.query<{ id: string }>('SELECT id FROM lethe.dimension_keys WHERE wrapped_identity IS NOT NULL ORDER BY id');
      await client.end();
      expect(rows.length).toBeGreaterThan(5);
      const wrapped = await vault.getWrappedDimensionKeysWithEpoch(rows.map((r) => r.id));
      for (const [id, w] of wrapped) {
        expect(w?.epoch, id).toBe(2);
        await keys.unwrap(w?.epoch ?? null, w?.wrapped ?? new Uint8Array(), id);
      }
      // And the opener the jobs use agrees.
      expect(new KeyOpener(vault, keys)).toBeDefined();
    } finally {
      await vault.close();
      if (keys instanceof Pkcs11MasterKeys) keys.close();
    }
  }, 180_000);
});
