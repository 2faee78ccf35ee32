import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Signer } from '../../../src/keys/index.ts';
import { registeredSigner } from '../../helpers/signing.ts';
import { destroyKeys, tombstoneKey, tombstoneSignedBy, type Tombstone } from '../../../src/lifecycle/destroy.ts';
import { caseKeyId } from '../../../src/lifecycle/hold-match.ts';
import type { DestructionCause } from '../../../src/lifecycle/types.ts';
import { createFilesystemStore, type ObjectStore } from '../../../src/storage/index.ts';
import type { AuditEntry, NewDimensionKey, Vault } from '../../../src/vault/index.ts';
import { createTestDatabase } from '../../helpers/postgres.ts';
import { expectNoCheckedOutClients, migratedVault, rawSql } from '../vault/fixture.ts';

const CAUSE: DestructionCause = { kind: 'erasure', request: 'er-test0000', scope: 'user' };

function dimensionKey(id: string): NewDimensionKey {
  const kind = (id === 'system' ? 'system' : id.slice(0, id.indexOf(':'))) as NewDimensionKey['kind'];
  return {
    id,
    kind,
    tenant: kind === 'system' ? null : (id.slice(id.indexOf(':') + 1).split('/')[0] ?? null),
    recipient: `age1test${randomBytes(8).toString('hex')}`,
    // Distinctive bytes that can be searched for in the table's heap file.
    wrappedIdentity: new Uint8Array(randomBytes(64)),
  };
}

async function auditEntries(vault: Vault): Promise<AuditEntry[]> {
  const out: AuditEntry[] = [];
  for await (const e of vault.iterateAudit(1)) out.push(e);
  return out;
}

/** The bytes of a vault table's heap file (after a CHECKPOINT, so every page is on disk). */
async function heapFile(url: string, table: string): Promise<{ path: string; bytes: Buffer | null }> {
  await rawSql(url, 'CHECKPOINT');
  const dir = (await rawSql(url, `SELECT setting FROM pg_settings WHERE name = 'data_directory'`)).rows[0] as { setting: string };
  const rel = (await rawSql(url, 'SELECT pg_relation_filepath($1::regclass) AS p', [table])).rows[0] as { p: string };
  const path = join(dir.setting, rel.p);
  try {
    return { path, bytes: await readFile(path) };
  } catch {
    return { path, bytes: null };
  }
}

describe('destroyKeys', () => {
  let db: Awaited<ReturnType<typeof createTestDatabase>>;
  let fx: Awaited<ReturnType<typeof migratedVault>>;
  let vault: Vault;
  let dir: string;
  let store: ObjectStore;
  let signer: Signer;

  beforeAll(async () => {
    db = await createTestDatabase('lc_destroy');
    fx = await migratedVault(db.url, 'lethe', 5);
    vault = fx.vault;
    // Tombstones are signed with the lifecycle signing key (lethe init registers it).
    signer = await registeredSigner(vault, 'lifecycle');
    dir = await mkdtemp(join(tmpdir(), 'lethe-destroy-'));
    store = await createFilesystemStore({ path: dir });
  });
  afterAll(async () => {
    await store.close();
    await fx.close();
    await db.drop();
    await rm(dir, { recursive: true, force: true });
  });

  it('writes the tombstone, shreds, records and audits each key; a second call redoes nothing', async () => {
    const keys = [dimensionKey('user:acme/u1'), dimensionKey('user:acme/u2'), dimensionKey('user:acme/keep')];
    await vault.insertDimensionKeys(keys);
    const before = (await auditEntries(vault)).length;

    const { destroyed } = await destroyKeys(vault, store, { signer,
      keyIds: ['user:acme/u1', 'user:acme/u2', 'user:acme/u1', 'user:acme/never-existed'],
      actor: 'dpo-bob',
      reason: 'GDPR erasure of u1 and u2',
      cause: CAUSE,
    });
    expect(destroyed.map((d) => d.keyId)).toEqual(['user:acme/u1', 'user:acme/u2']);

    const info = await vault.getDimensionKeys(['user:acme/u1', 'user:acme/u2', 'user:acme/keep']);
    expect(info.get('user:acme/u1')?.destroyed).toBe(true);
    expect(info.get('user:acme/u2')?.destroyed).toBe(true);
    expect(info.get('user:acme/keep')?.destroyed).toBe(false);
    const wrapped = await vault.getWrappedDimensionIdentities(['user:acme/u1', 'user:acme/keep']);
    expect(wrapped.get('user:acme/u1')).toBeNull();
    expect(Buffer.from(wrapped.get('user:acme/keep') ?? [])).toEqual(Buffer.from(keys[2]?.wrappedIdentity ?? []));

    const entries = (await auditEntries(vault)).slice(before);
    expect(entries.map((e) => [e.action, e.subject, e.actor])).toEqual([
      ['key.destroy', 'user:acme/u1', 'dpo-bob'],
      ['key.destroy', 'user:acme/u2', 'dpo-bob'],
    ]);
    expect(entries[0]?.details).toEqual({ keyId: 'user:acme/u1', cause: CAUSE, reason: 'GDPR erasure of u1 and u2' });

    const records = await vault.getDestructions(['user:acme/u1', 'user:acme/u2', 'user:acme/keep']);
    expect(records.size).toBe(2);
    for (const [i, d] of destroyed.entries()) {
      const entry = entries[i];
      expect(d.auditSeq).toBe(entry?.seq);
      expect(d.auditHash).toBe(entry?.hash);
      expect(records.get(d.keyId)).toEqual({
        keyId: d.keyId,
        destroyedAt: d.destroyedAt,
        actor: 'dpo-bob',
        reason: 'GDPR erasure of u1 and u2',
        cause: CAUSE,
        auditSeq: entry?.seq,
      });
      const tombstone = JSON.parse(await readFile(join(dir, tombstoneKey(d.keyId)), 'utf8')) as Tombstone;
      expect(tombstone).toEqual({
        format: 'lethe.destruction.v1',
        keyId: d.keyId,
        kind: 'user',
        tenant: 'acme',
        destroyedAt: d.destroyedAt.toISOString(),
        actor: 'dpo-bob',
        reason: 'GDPR erasure of u1 and u2',
        cause: CAUSE,
        signature: { keyId: signer.id, value: expect.any(String) as unknown },
      });
      expect(tombstoneSignedBy(tombstone, await vault.getSigningPublicKeys(['lifecycle']))).toBe(true);
      expect(tombstoneSignedBy({ ...tombstone, keyId: 'user:acme/keep' }, await vault.getSigningPublicKeys(['lifecycle']))).toBe(false);
    }
    const tombstones = [];
    for await (const o of store.list('destructions/')) tombstones.push(o.key);
    expect(tombstones.sort()).toEqual([tombstoneKey('user:acme/u1'), tombstoneKey('user:acme/u2')].sort());

    // Again, with another actor and reason: the existing records come back, nothing is redone.
    const tombstoneBytes = await readFile(join(dir, tombstoneKey('user:acme/u1')));
    const { destroyed: again } = await destroyKeys(vault, store, { signer,
      keyIds: ['user:acme/u2', 'user:acme/u1'],
      actor: 'someone-else',
      reason: 'again',
      cause: { kind: 'hold-release', case: 'X' },
    });
    expect(again).toEqual([destroyed[1], destroyed[0]]);
    expect((await auditEntries(vault)).length).toBe(before + 2);
    expect(await readFile(join(dir, tombstoneKey('user:acme/u1')))).toEqual(tombstoneBytes);
    expect((await vault.verifyAuditChain()).ok).toBe(true);
    expectNoCheckedOutClients(fx.pool);
  });

  it('puts the tombstone while the vault still has the key, and destroys nothing when the put fails', async () => {
    await vault.insertDimensionKeys([dimensionKey('user:acme/t1'), dimensionKey('user:acme/t2')]);
    const seenAlive: boolean[] = [];
    const watching: ObjectStore = Object.create(store) as ObjectStore;
    watching.put = async (key, body, options) => {
      const id = key === tombstoneKey('user:acme/t1') ? 'user:acme/t1' : 'user:acme/t2';
      seenAlive.push((await vault.getDimensionKeys([id])).get(id)?.destroyed === false);
      return store.put(key, body, options);
    };
    await destroyKeys(vault, watching, { signer, keyIds: ['user:acme/t1'], actor: 'a', reason: 'r', cause: CAUSE });
    expect(seenAlive).toEqual([true]);

    const failing: ObjectStore = Object.create(store) as ObjectStore;
    failing.put = () => Promise.reject(new Error('bucket unreachable'));
    await expect(
      destroyKeys(vault, failing, { signer, keyIds: ['user:acme/t2'], actor: 'a', reason: 'r', cause: CAUSE }),
    ).rejects.toThrow(/bucket unreachable/);
    expect((await vault.getDimensionKeys(['user:acme/t2'])).get('user:acme/t2')?.destroyed).toBe(false);
    expect((await vault.getDestructions(['user:acme/t2'])).size).toBe(0);
  });

  it('shreds, records and audits in one transaction: a failure part-way leaves every key alive', async () => {
    await vault.insertDimensionKeys([dimensionKey('user:acme/x1'), dimensionKey('user:acme/boom')]);
    const before = (await auditEntries(vault)).length;
    // The second key's record fails after the first key was shredded, recorded and audited.
    await rawSql(
      db.url,
      `CREATE FUNCTION lethe.boom() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN IF NEW.key_id = 'user:acme/boom' THEN RAISE EXCEPTION 'injected failure'; END IF; RETURN NEW; END $$`,
    );
    await rawSql(db.url, 'CREATE TRIGGER boom BEFORE INSERT ON lethe.destructions FOR EACH ROW EXECUTE FUNCTION lethe.boom()');
    try {
      await expect(
        destroyKeys(vault, store, { signer, keyIds: ['user:acme/x1', 'user:acme/boom'], actor: 'a', reason: 'r', cause: CAUSE }),
      ).rejects.toThrow(/injected failure/);
    } finally {
      await rawSql(db.url, 'DROP TRIGGER boom ON lethe.destructions');
      await rawSql(db.url, 'DROP FUNCTION lethe.boom()');
    }
    const info = await vault.getDimensionKeys(['user:acme/x1', 'user:acme/boom']);
    expect(info.get('user:acme/x1')?.destroyed).toBe(false);
    expect(info.get('user:acme/boom')?.destroyed).toBe(false);
    expect((await vault.getDestructions(['user:acme/x1'])).size).toBe(0);
    expect((await auditEntries(vault)).length).toBe(before);
    // The tombstones were written first; a retry finishes the job.
    const { destroyed: done } = await destroyKeys(vault, store, { signer, keyIds: ['user:acme/x1', 'user:acme/boom'], actor: 'a', reason: 'r', cause: CAUSE });
    expect(done).toHaveLength(2);
    expect((await vault.verifyAuditChain()).ok).toBe(true);
    expectNoCheckedOutClients(fx.pool);
  });

  it('leaves no copy of the wrapped identity in the table or its heap file', async () => {
    const key = dimensionKey('tenant:heap');
    await vault.insertDimensionKeys([key]);
    const needle = Buffer.from(key.wrappedIdentity);
    const before = await heapFile(db.url, 'lethe.dimension_keys');
    // The search can fail: the bytes are on disk before the destruction.
    expect(before.bytes?.includes(needle)).toBe(true);

    await destroyKeys(vault, store, { signer, keyIds: ['tenant:heap'], actor: 'a', reason: 'tenant left', cause: { kind: 'erasure', request: 'er-heap0000', scope: 'tenant' } });

    const { rows } = await rawSql(db.url, `SELECT count(*)::int AS n FROM lethe.dimension_keys WHERE position($1::bytea IN coalesce(wrapped_identity, ''::bytea)) > 0`, [needle]);
    expect(rows[0]).toEqual({ n: 0 });
    const after = await heapFile(db.url, 'lethe.dimension_keys');
    expect(after.path).not.toBe(before.path);
    expect(after.bytes).not.toBeNull();
    expect(after.bytes?.includes(needle)).toBe(false);
    // The old file is gone or emptied by VACUUM FULL.
    const old = await readFile(before.path).catch(() => Buffer.alloc(0));
    expect(old.includes(needle)).toBe(false);
  });

  it("deletes held wrappings that need a destroyed case key, and only those", async () => {
    const caseKey = caseKeyId('acme', 'CASE-1');
    const otherCase = caseKeyId('acme', 'CASE-2');
    await vault.insertDimensionKeys([dimensionKey(caseKey), dimensionKey(otherCase), dimensionKey('user:acme/h1'), dimensionKey('tenant:acme')]);
    await vault.insertCellKeys([
      {
        id: 'cell:acme/messages/2026-03/h1',
        tenant: 'acme',
        class: 'messages',
        period: '2026-03',
        author: 'h1',
        conversation: null,
        dimensionIds: ['period:acme/messages/2026-03', 'user:acme/h1', 'tenant:acme'],
      },
    ]);
    const encapsulation = (id: string) => ({ id, purpose: 'hold' as const, snapshotId: null, tenant: 'acme', kem: 'x25519' as const, ephemeral: new Uint8Array(randomBytes(32)) });
    await vault.insertEncapsulations([encapsulation('enc-held-1'), encapsulation('rewrap-1'), encapsulation('rewrap-2')]);
    const heldBytes = new Uint8Array(randomBytes(48));
    const held = (caseId: string, rewrap: string, dimensionIds: string[], wrapped: Uint8Array) => ({
      caseId,
      keyId: 'cell:acme/messages/2026-03/h1',
      encapsulation: 'enc-held-1',
      rewrap,
      dimensionIds,
      wrapped,
    });
    expect(
      await vault.insertHeldCellKeys([
        held('CASE-1', 'rewrap-1', [caseKey, 'user:acme/h1', 'tenant:acme'], heldBytes),
        held('CASE-2', 'rewrap-2', [otherCase, 'user:acme/h1', 'tenant:acme'], new Uint8Array(randomBytes(48))),
      ]),
    ).toBe(2);
    // ON CONFLICT DO NOTHING: a re-run inserts nothing.
    expect(await vault.insertHeldCellKeys([held('CASE-1', 'rewrap-1', [caseKey], new Uint8Array(48))])).toBe(0);

    expect((await heapFile(db.url, 'lethe.held_cell_keys')).bytes?.includes(Buffer.from(heldBytes))).toBe(true);
    await destroyKeys(vault, store, { signer, keyIds: [caseKey], actor: 'legal', reason: 'case closed', cause: { kind: 'hold-release', case: 'CASE-1' } });
    const kept = await vault.getHeldCellKeys(['cell:acme/messages/2026-03/h1']);
    expect(kept.get('cell:acme/messages/2026-03/h1')?.map((h) => h.caseId)).toEqual(['CASE-2']);
    const file = await heapFile(db.url, 'lethe.held_cell_keys');
    expect(file.bytes?.includes(Buffer.from(heldBytes))).toBe(false);
    expectNoCheckedOutClients(fx.pool);
  });
});
