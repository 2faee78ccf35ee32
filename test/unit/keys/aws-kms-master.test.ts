import { createECDH, generateKeyPairSync, type ECDH } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../../src/config/index.ts';
import {
  DeferredP256Identity,
  decryptBytes,
  encodeP256Recipient,
  encryptBytes,
  p256PointFromSpki,
  p256Spki,
  parseAgeHeader,
  readAgeHeaderStanzas,
  resolveIdentities,
} from '../../../src/crypto/index.ts';
import { kmsChecks } from '../../../src/doctor/master-epochs.ts';
import { ErrorCode, LetheError, isLetheError } from '../../../src/errors/index.ts';
import { AwsKmsMasterKeys, kmsPendingWindowDays, wrapDimensionSecret, type KmsApi, type KmsKeyState } from '../../../src/keys/index.ts';
import type { MasterEpoch } from '../../../src/vault/index.ts';

/*
 * AWS KMS does not run here (its tests are test/integration/lifecycle/master-aws-kms.test.ts,
 * run where LETHE_TEST_KMS_REGION is set). These tests stand a node:crypto P-256 key behind
 * the KmsApi seam: the key agreement KMS would compute (DeriveSharedSecret, ECDH) is
 * node:crypto's, and every other line of the provider and of the lethe-p256 stanza is lethe's.
 */

interface SoftKey {
  ecdh: ECDH;
  state: string;
  deletionDate: Date | null;
  keySpec: string;
  keyUsage: string;
}

/** Records every call; a key's private half is used only in deriveSharedSecret. */
class SoftKms implements KmsApi {
  readonly keys = new Map<string, SoftKey>();
  readonly aliases = new Map<string, string>();
  readonly calls: string[] = [];
  readonly created: { description: string; tags: Record<string, string> }[] = [];
  readonly scheduled: { keyId: string; days: number }[] = [];

  add(arn: string, spec = 'ECC_NIST_P256', usage = 'KEY_AGREEMENT'): SoftKey {
    const ecdh = createECDH('prime256v1');
    ecdh.generateKeys();
    const key = { ecdh, state: 'Enabled', deletionDate: null, keySpec: spec, keyUsage: usage };
    this.keys.set(arn, key);
    return key;
  }

  /** The key `keyId` (an ARN or alias) names; throws when there is none. */
  key(keyId: string): SoftKey {
    const found = this.#key(keyId);
    if (found === null) throw new Error(`no key ${keyId}`);
    return found[1];
  }

  #key(keyId: string): [string, SoftKey] | null {
    const arn = this.aliases.get(keyId) ?? keyId;
    const key = this.keys.get(arn);
    return key === undefined ? null : [arn, key];
  }

  async createKey(description: string, tags: Readonly<Record<string, string>>): Promise<string> {
    this.calls.push('CreateKey');
    const arn = `arn:aws:kms:eu-west-1:111122223333:key/${String(this.keys.size + 1).padStart(8, '0')}-0000-0000-0000-000000000000`;
    this.add(arn);
    this.created.push({ description, tags: { ...tags } });
    return Promise.resolve(arn);
  }

  async createAlias(alias: string, keyId: string): Promise<void> {
    this.calls.push('CreateAlias');
    this.aliases.set(alias, keyId);
    return Promise.resolve();
  }

  async describeKey(keyId: string): Promise<KmsKeyState | null> {
    this.calls.push('DescribeKey');
    const found = this.#key(keyId);
    if (found === null) return Promise.resolve(null);
    const [arn, k] = found;
    return Promise.resolve({ arn, keyId: arn.slice(arn.indexOf('/') + 1), state: k.state, deletionDate: k.deletionDate, keySpec: k.keySpec, keyUsage: k.keyUsage });
  }

  async getPublicKey(keyId: string): Promise<Uint8Array> {
    this.calls.push('GetPublicKey');
    const found = this.#key(keyId);
    if (found === null) throw new LetheError(ErrorCode.MASTER_KEY, `AWS KMS GetPublicKey ${keyId} failed (NotFoundException)`);
    return Promise.resolve(p256Spki(found[1].ecdh.getPublicKey()));
  }

  async deriveSharedSecret(keyId: string, publicKey: Uint8Array): Promise<Uint8Array> {
    this.calls.push('DeriveSharedSecret');
    const found = this.#key(keyId);
    if (found === null || found[1].state !== 'Enabled') throw new LetheError(ErrorCode.MASTER_KEY, `AWS KMS DeriveSharedSecret ${keyId} failed (KMSInvalidStateException)`);
    return Promise.resolve(found[1].ecdh.computeSecret(p256PointFromSpki(publicKey)));
  }

  async scheduleKeyDeletion(keyId: string, days: number): Promise<Date> {
    this.calls.push('ScheduleKeyDeletion');
    this.scheduled.push({ keyId, days });
    const found = this.#key(keyId) ?? [...this.keys].find(([arn]) => arn.endsWith(`/${keyId}`)) ?? null;
    if (found === null) throw new Error('no such key');
    found[1].state = 'PendingDeletion';
    found[1].deletionDate = new Date(Date.UTC(2030, 0, 1) + days * 86_400_000);
    return Promise.resolve(found[1].deletionDate);
  }

  async listAliases(prefix: string): Promise<{ alias: string; keyId: string }[]> {
    this.calls.push('ListAliases');
    return Promise.resolve([...this.aliases].filter(([a]) => a.startsWith(prefix)).map(([alias, keyId]) => ({ alias, keyId })));
  }
}

const OPTIONS = { region: 'eu-west-1', aliasPrefix: 'lethe-master' } as const;

function provider(kms: SoftKms, options: Partial<ConstructorParameters<typeof AwsKmsMasterKeys>[0]> = {}, grace = 14): AwsKmsMasterKeys {
  return new AwsKmsMasterKeys({ ...OPTIONS, ...options }, kms, 'lethe_vault', grace);
}

async function rejection(p: Promise<unknown>): Promise<LetheError> {
  try {
    await p;
  } catch (err) {
    if (err instanceof LetheError) return err;
    throw err;
  }
  throw new Error('expected a rejection');
}

describe('a lethe-p256 recipient from a KMS public key (SPKI DER)', () => {
  it('wraps to the SPKI key and opens through an asynchronous derive, read from the header first', async () => {
    const { publicKey, privateKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    const spki = publicKey.export({ format: 'der', type: 'spki' });
    const point = p256PointFromSpki(spki);
    expect(Buffer.from(p256Spki(point))).toEqual(spki);
    const recipient = encodeP256Recipient(point);
    const secret = new TextEncoder().encode('a dimension key secret');
    const file = await encryptBytes(secret, [recipient]);
    // node:crypto's ECDH stands in for KMS DeriveSharedSecret, given the ephemeral key as SPKI.
    const ecdh = createECDH('prime256v1');
    ecdh.setPrivateKey(Buffer.from(privateKey.export({ format: 'jwk' }).d ?? '', 'base64url'));
    const shares: Uint8Array[] = [];
    const identity = new DeferredP256Identity(point, async (share) => {
      const spkiShare = p256Spki(share); // what the provider sends KMS
      shares.push(spkiShare);
      return Promise.resolve(ecdh.computeSecret(p256PointFromSpki(spkiShare)));
    });
    const opened = await decryptBytes(file, [await identity.prepare(parseAgeHeader(file).header.stanzas)]);
    expect(Buffer.from(opened)).toEqual(Buffer.from(secret));
    expect(shares).toHaveLength(1);
    // A second file needs its own prepare: the secrets of the first were used once and wiped.
    const other = await encryptBytes(Uint8Array.of(7), [recipient]);
    await expect(decryptBytes(other, [await identity.prepare(parseAgeHeader(file).header.stanzas)])).rejects.toThrow();
    expect(Buffer.from(await decryptBytes(other, [await identity.prepare(parseAgeHeader(other).header.stanzas)]))).toEqual(Buffer.of(7));
  });

  it('refuses a public key that is not P-256', () => {
    const p384 = generateKeyPairSync('ec', { namedCurve: 'secp384r1' }).publicKey.export({ format: 'der', type: 'spki' });
    expect(() => p256PointFromSpki(p384)).toThrow(/not an EC P-256 key/);
    const ed = generateKeyPairSync('ed25519').publicKey.export({ format: 'der', type: 'spki' });
    expect(() => p256PointFromSpki(ed)).toThrow(/OKP/);
    expect(() => p256PointFromSpki(Uint8Array.of(1, 2, 3))).toThrow(/not SubjectPublicKeyInfo/);
  });

  it('a KMS error is thrown, not taken for "not this key"', async () => {
    const { publicKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    const point = p256PointFromSpki(publicKey.export({ format: 'der', type: 'spki' }));
    const file = await encryptBytes(Uint8Array.of(1), [encodeP256Recipient(point)]);
    const identity = new DeferredP256Identity(point, () => Promise.reject(new LetheError(ErrorCode.MASTER_KEY, 'AWS KMS DeriveSharedSecret k failed (AccessDeniedException)')));
    const err = await rejection(identity.prepare(parseAgeHeader(file).header.stanzas));
    expect(err.message).toMatch(/AccessDeniedException/);
  });
});

describe('the AWS KMS master provider', () => {
  it('creates a named key per epoch, wraps without KMS and unwraps through DeriveSharedSecret', async () => {
    const kms = new SoftKms();
    const keys = provider(kms);
    const recipient = await keys.create(1);
    expect(recipient).toMatch(/^lethe-p256:/);
    expect(kms.created).toEqual([
      { description: 'lethe master key, vault lethe_vault, epoch 1', tags: { 'lethe:purpose': 'master-key', 'lethe:vault': 'lethe_vault', 'lethe:epoch': '1' } },
    ]);
    expect([...kms.aliases.keys()]).toEqual(['alias/lethe-master-epoch-1']);
    expect(keys.reference(1)).toMatch(/^aws-kms:arn:aws:kms:eu-west-1:111122223333:key\//);
    // Calling create again (a rotation that did not commit) reuses the key.
    expect(await keys.create(1)).toBe(recipient);
    expect(kms.created).toHaveLength(1);

    const before = kms.calls.length;
    const wrapped = await wrapDimensionSecret({ epoch: 1, recipient }, new TextEncoder().encode('dimension secret'));
    expect(kms.calls.length).toBe(before); // the backup never calls KMS
    const opened = await provider(kms).unwrap(1, wrapped, 'dimension key d1');
    expect(new TextDecoder().decode(opened)).toBe('dimension secret');
    expect(kms.calls.filter((c) => c === 'DeriveSharedSecret')).toHaveLength(1);
  });

  it('destroying an epoch schedules the deletion for the grace window clamped to 7..30 days, once', async () => {
    const kms = new SoftKms();
    const keys = provider(kms, {}, 3);
    const recipient = await keys.create(1);
    const wrapped = await wrapDimensionSecret({ epoch: 1, recipient }, Uint8Array.of(9));
    const note = await keys.destroy(1);
    expect(kms.scheduled).toEqual([{ keyId: expect.stringMatching(/^\d{8}-0000-/) as unknown, days: 7 }]);
    expect(note).toMatch(/scheduled for deletion on 2030-01-08T00:00:00\.000Z; the shred is final then \(CancelKeyDeletion could undo it until that date\)/);
    expect(await keys.exists(1)).toBe(false);
    const err = await rejection(keys.unwrap(1, wrapped, 'dimension key d1'));
    expect(err.code).toBe(ErrorCode.MASTER_KEY);
    expect(err.message).toMatch(/epoch 1 \(alias\/lethe-master-epoch-1\) is gone from KMS or scheduled for deletion/);
    // Idempotent: the date already scheduled is kept.
    expect(await keys.destroy(1)).toBe(note);
    expect(kms.scheduled).toHaveLength(1);
    expect(kmsPendingWindowDays(0)).toBe(7);
    expect(kmsPendingWindowDays(7)).toBe(7);
    expect(kmsPendingWindowDays(14)).toBe(14);
    expect(kmsPendingWindowDays(14.2)).toBe(15);
    expect(kmsPendingWindowDays(30)).toBe(30);
    expect(kmsPendingWindowDays(90)).toBe(30);
  });

  it('with keyIds it never creates a key, and names the fix for a missing or wrong one', async () => {
    const kms = new SoftKms();
    const arn = 'arn:aws:kms:eu-west-1:111122223333:key/11111111-2222-3333-4444-555555555555';
    kms.add(arn);
    const keys = provider(kms, { keyIds: { '1': arn } });
    expect(await keys.create(1)).toMatch(/^lethe-p256:/);
    expect(keys.reference(1)).toBe(`aws-kms:${arn}`);
    const missing = await rejection(keys.create(2));
    expect(missing.message).toContain('master epoch 2 has no key in `master.keyIds`');
    expect(missing.message).toContain('KeySpec ECC_NIST_P256, KeyUsage KEY_AGREEMENT');
    expect(kms.calls).not.toContain('CreateKey');

    const rsa = 'arn:aws:kms:eu-west-1:111122223333:key/99999999-2222-3333-4444-555555555555';
    kms.add(rsa, 'RSA_2048', 'ENCRYPT_DECRYPT');
    const wrong = await rejection(provider(kms, { keyIds: { '1': rsa } }).create(1));
    expect(wrong.message).toContain('is RSA_2048 for ENCRYPT_DECRYPT: a lethe master key must be KeySpec ECC_NIST_P256, KeyUsage KEY_AGREEMENT');
    kms.key(arn).state = 'Disabled';
    expect((await rejection(provider(kms, { keyIds: { '1': arn } }).create(1))).message).toContain('is Disabled, not Enabled: enable it');
  });

  it('a vault backup opens with the identities found by alias, its header read first', async () => {
    const kms = new SoftKms();
    const keys = provider(kms);
    await keys.create(1);
    const second = await keys.create(2);
    const dir = await mkdtemp(join(tmpdir(), 'lethe-kms-'));
    try {
      const path = join(dir, 'vault.age');
      await writeFile(path, await encryptBytes(new TextEncoder().encode('{"vault":"dump"}'), [second]));
      const identities = await provider(kms).identities();
      expect(identities).toHaveLength(2);
      const derivesBefore = kms.calls.filter((c) => c === 'DeriveSharedSecret').length;
      const ready = await resolveIdentities(identities, () => readAgeHeaderStanzas(path));
      const { readFile } = await import('node:fs/promises');
      expect(new TextDecoder().decode(await decryptBytes(await readFile(path), ready))).toBe('{"vault":"dump"}');
      // One stanza, asked of both epochs' keys: only epoch 2's secret opens it.
      expect(kms.calls.filter((c) => c === 'DeriveSharedSecret').length - derivesBefore).toBe(2);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('doctor warns when a destroyed epoch\'s key deletion was cancelled', async () => {
    const kms = new SoftKms();
    const keys = provider(kms);
    await keys.create(1);
    await keys.create(2);
    await keys.destroy(1);
    const epoch = (n: number, destroyed: boolean): MasterEpoch => ({
      epoch: n,
      provider: 'aws-kms',
      reference: keys.reference(n),
      recipient: 'lethe-p256:x',
      createdAt: new Date(0),
      retiredAt: n === 1 ? new Date(0) : null,
      destroyedAt: destroyed ? new Date(0) : null,
      reason: null,
      liveKeys: n === 1 ? 0 : 3,
      destroyedKeys: n === 1 ? 2 : 0,
    });
    const epochs = [epoch(1, true), epoch(2, false)];
    const fine = await kmsChecks(keys, epochs);
    expect(fine.map((c) => c.status)).toEqual(['ok', 'ok']);
    expect(fine[1]?.detail).toMatch(/destroyed; KMS deletes the key on 2030-01-15/);
    // Someone ran CancelKeyDeletion (and enabled the key): the shred is undone.
    const arn = kms.aliases.get('alias/lethe-master-epoch-1') ?? '';
    const k = kms.key(arn);
    k.state = 'Enabled';
    const cancelled = await kmsChecks(keys, epochs);
    expect(cancelled[1]?.status).toBe('warn');
    expect(cancelled[1]?.detail).toContain(`its KMS key ${arn} is Enabled: its deletion was cancelled`);
    k.state = 'PendingDeletion';
    kms.key('alias/lethe-master-epoch-2').state = 'Disabled';
    expect((await kmsChecks(keys, epochs))[0]).toMatchObject({ status: 'fail' });
  });
});

describe('the aws-kms master config', () => {
  const base = {
    chatStore: { database: { url: 'postgres://reader@127.0.0.1:5432/chat' } },
    vault: { database: { url: 'postgres://lethe@localhost/vault' } },
    storage: { type: 'filesystem', path: './objects' },
  };
  const refused = (master: unknown, env: NodeJS.ProcessEnv = {}): string => {
    try {
      parseConfig({ ...base, master }, '/etc/lethe', env);
    } catch (err) {
      if (isLetheError(err)) return err.message;
      throw err;
    }
    throw new Error('expected the config to be refused');
  };

  it('takes credentials as ${ENV} and defaults the alias prefix', () => {
    const config = parseConfig(
      { ...base, master: { provider: 'aws-kms', region: 'eu-west-1', accessKeyId: '${KMS_ID}', secretAccessKey: '${KMS_SECRET}', caFile: 'kms-ca.pem' } },
      '/etc/lethe',
      { KMS_ID: 'AKIAEXAMPLE', KMS_SECRET: 'not-in-any-message' },
    );
    expect(config.master).toMatchObject({ provider: 'aws-kms', accessKeyId: 'AKIAEXAMPLE', aliasPrefix: 'lethe-master', allowInsecure: false, caFile: '/etc/lethe/kms-ca.pem' });
    expect(refused({ provider: 'aws-kms', region: 'eu-west-1', accessKeyId: '${KMS_ID}', secretAccessKey: '${KMS_SECRET}' }, { KMS_ID: 'A' })).toContain('${KMS_SECRET}, which is not set');
  });

  it('refuses half the credentials, a remote http endpoint, a reserved alias and bad keyIds, naming the fix', () => {
    const kms = { provider: 'aws-kms', region: 'eu-west-1' };
    expect(refused({ ...kms, accessKeyId: 'AKIA', sessionToken: 'tok' })).toContain('give both `accessKeyId` and `secretAccessKey`');
    expect(refused({ ...kms, endpoint: 'http://kms.internal:4566' })).toContain('use https, or set `allowInsecure: true`');
    expect(() => parseConfig({ ...base, master: { ...kms, endpoint: 'http://kms.internal:4566', allowInsecure: true } }, '/etc/lethe', {})).not.toThrow();
    expect(refused({ ...kms, aliasPrefix: 'aws/lethe' })).toContain('reserved for AWS managed keys');
    expect(refused({ ...kms, keyIds: { '0': 'alias/x' } })).toContain('each key is an epoch number');
    expect(refused({ ...kms, keyIds: { '1': 'not a key' } })).toContain('a KMS key ARN, key id or alias');
    expect(refused({ ...kms, keyIds: {} })).toContain('list at least epoch 1');
    expect(refused({ ...kms, pin: { file: 'x' } })).toMatch(/pin/);
  });
});
