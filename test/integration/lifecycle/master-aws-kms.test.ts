import { randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { userKeyId } from '../../../src/cells/ids.ts';
import { backup, initialize, lifecycleApply, masterKeys, restore, verify } from '../../../src/jobs/tasks.ts';
import { AwsKmsMasterKeys, sdkKmsApi, type AwsKmsMasterOptions } from '../../../src/keys/index.ts';
import { demoSample } from '../../../src/store/demo-sample.ts';
import { Vault } from '../../../src/vault/index.ts';
import { listVaultBackups, restoreVaultBackup } from '../../../src/vaultbackup/index.ts';
import { createChatTemplate, createLetheEnv, expectExit, jsonOut, queryValue, type LetheEnv, type TestDatabase } from '../../helpers/lethe-env.ts';

/**
 * Must hold (issue 13, item 1) with AWS KMS as the master: the full round trip (init, backup,
 * verify, restore), an erasure (the old epoch's key scheduled for deletion) and a vault
 * restore; and the backup never calls KMS. It needs a real KMS, so it runs only where
 * LETHE_TEST_KMS_REGION is set, with credentials in the standard AWS variables
 * (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN or a role) and optionally
 * LETHE_TEST_KMS_ENDPOINT (a KMS-compatible endpoint). Every key it creates gets an alias
 * under a prefix of its own and is scheduled for deletion (7 days) at the end.
 * Without KMS the provider is covered by test/unit/keys/aws-kms-master.test.ts.
 */
const REGION = process.env['LETHE_TEST_KMS_REGION'];
const ENDPOINT = process.env['LETHE_TEST_KMS_ENDPOINT'];
const DAY = 86_400_000;

describe.skipIf(REGION === undefined || REGION === '')('the AWS KMS master key (skipped: set LETHE_TEST_KMS_REGION and AWS credentials to run it against KMS)', () => {
  let template: TestDatabase;
  let env: LetheEnv;
  let dir: string;
  let tenant: string;
  let user: string;
  const master: AwsKmsMasterOptions & { provider: 'aws-kms' } = {
    provider: 'aws-kms',
    region: REGION ?? '',
    aliasPrefix: `lethe-test-${randomUUID().slice(0, 8)}`,
    ...(ENDPOINT === undefined || ENDPOINT === '' ? {} : { endpoint: ENDPOINT, allowInsecure: true }),
  };
  const kmsKeys = (): AwsKmsMasterKeys => new AwsKmsMasterKeys(master, sdkKmsApi(master), 'lethe', 7);

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'lethe-test-kms-'));
    template = await createChatTemplate('kms_tpl');
    env = await createLetheEnv({ template: template.name, config: { masterKey: undefined, master, retention: { graceWindowDays: 7 } } });
    ({ tenant, user } = await demoSample(env.chat.url));
  }, 240_000);

  afterAll(async () => {
    // Nothing of this run is left to bill: every epoch's key is scheduled for deletion.
    const keys = kmsKeys();
    for (const epoch of [1, 2, 3]) await keys.destroy(epoch).catch(() => undefined);
    await env.cleanup();
    await template.drop();
    await rm(dir, { recursive: true, force: true });
  });

  it('init creates epoch 1 in KMS, and backup, verify and restore round-trip', async () => {
    const init = await initialize(env.rt, 'test');
    expect(init.masterRecipient).toMatch(/^lethe-p256:/);
    expect(await kmsKeys().exists(1)).toBe(true);
    const vault = await env.rt.vault();
    const current = await vault.getCurrentMasterEpoch();
    expect(current.provider).toBe('aws-kms');
    await backup(env.rt, { actor: 'test' });
    const stanzas = await queryValue<string[]>(env.vaultDb.url, `SELECT array_agg(DISTINCT split_part(convert_from(substring(wrapped_identity from 1 for 200), 'latin1'), E'\\n', 2)) AS v FROM lethe.dimension_keys`);
    expect(stanzas.every((line) => line.startsWith('-> lethe-p256 ')), stanzas.join('|')).toBe(true);
    const verified = await verify(env.rt, { snapshot: 'latest', actor: 'test' });
    expect(verified.findings.filter((f) => /master|dimension key|does not open|trusted/i.test(f.problem))).toEqual([]);
    expect(verified.cellsVerified).toBeGreaterThan(0);
    const target = await env.database('kms_restore');
    const blobTarget: object = { blobTarget: `file://${join(dir, 'blobs')}` };
    await restore(env.rt, { snapshot: 'latest', targetUrl: target.url, replace: false, actor: 'test', ...blobTarget });
    const count = (url: string): Promise<string> => queryValue<string>(url, 'SELECT count(*)::text AS v FROM messages');
    expect(await count(target.url)).toBe(await count(env.chat.url));
  }, 300_000);

  it('the backup needs no KMS: a config without `master` and no AWS credentials backs up', async () => {
    const { master: _master, ...raw } = env.raw;
    const configPath = await env.writeConfig('backup-only.yaml', raw);
    const noAws = { AWS_ACCESS_KEY_ID: '', AWS_SECRET_ACCESS_KEY: '', AWS_SESSION_TOKEN: '', AWS_PROFILE: 'lethe-none', AWS_EC2_METADATA_DISABLED: 'true' };
    const result = await env.cli(['backup', '--config', configPath, '--json'], { env: noAws });
    expectExit(result, 0);
    expect((jsonOut(result) as { snapshotId: string }).snapshotId).toBeTruthy();
  }, 180_000);

  it('an erasure: apply moves the survivors to epoch 2 and schedules epoch 1\'s key for deletion after the grace window', async () => {
    const request = await env.cli(['erase', 'request', '--config', env.configPath, '--tenant', tenant, '--user', user, '--reason', 'erasure', '--actor', 'alice', '--json']);
    expectExit(request, 0);
    const approve = await env.cli(['erase', 'approve', (jsonOut(request) as { id: string }).id, '--config', env.configPath, '--actor', 'bob', '--json']);
    expectExit(approve, 0);
    const first = await lifecycleApply(env.rt, { actor: 'test', now: () => new Date() });
    expect(first.master?.rotatedTo).toBe(2);
    const later = await lifecycleApply(env.rt, { actor: 'test', now: () => new Date(Date.now() + 8 * DAY) });
    expect(later.master?.destroyed).toEqual([1]);
    const keys = kmsKeys();
    const state = await keys.state(1);
    expect(state?.state).toBe('PendingDeletion');
    expect(state?.deletionDate?.getTime()).toBeGreaterThan(Date.now() + 6 * DAY);
    expect(await keys.exists(1)).toBe(false);
    expect(await keys.exists(2)).toBe(true);
    const reason = await queryValue<string>(env.vaultDb.url, 'SELECT reason AS v FROM lethe.master_epochs WHERE epoch = 1');
    expect(reason).toMatch(/scheduled for deletion on \d{4}-\d\d-\d\dT.*the shred is final then/);
    const erased = await queryValue<boolean>(env.vaultDb.url, 'SELECT wrapped_identity IS NULL AS v FROM lethe.dimension_keys WHERE id = $1', [userKeyId(tenant, user)]);
    expect(erased).toBe(true);
  }, 300_000);

  it('a vault restore from the newest vault backup opens every live key through KMS', async () => {
    const store = await env.rt.store();
    const [newest] = (await listVaultBackups(store)).sort((a, b) => (a.key < b.key ? 1 : -1));
    if (newest === undefined) throw new Error('no vault backup');
    const target = await env.database('kms_vault');
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
    } finally {
      await vault.close();
    }
  }, 300_000);
});
