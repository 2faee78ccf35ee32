import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase } from '../../helpers/postgres.ts';
import type { CellKey, NewDimensionKey, Vault } from '../../../src/vault/index.ts';
import { expectNoCheckedOutClients, migratedVault, rawSql, rejectsWith } from './fixture.ts';

function dimensionKey(id: string, n: number, over: Partial<NewDimensionKey> = {}): NewDimensionKey {
  const [kind = '', rest = ''] = id.split(':');
  return {
    id,
    kind: kind as NewDimensionKey['kind'],
    tenant: kind === 'system' ? null : (rest.split('/')[0] ?? null),
    recipient: `age1recipient${id}#${n}`,
    wrappedIdentity: Uint8Array.of(n, 1, 2, 3),
    ...over,
  };
}

function cellKey(id: string, n: number): CellKey {
  return {
    id,
    tenant: 'acme',
    class: 'messages',
    period: '2026-03',
    conversation: null,
    author: 'u1',
    dimensionIds: ['period:acme/messages/2026-03', `user:acme/u${n}`, 'tenant:acme'],
  };
}

describe('vault keys', () => {
  let db: Awaited<ReturnType<typeof createTestDatabase>>;
  let fx: Awaited<ReturnType<typeof migratedVault>>;
  let vault: Vault;
  /** The columns of a vault table, by name: what the vault can hold at all. */
  async function columnsOf(table: string): Promise<string[]> {
    const { rows } = await rawSql(
      db.url,
      `SELECT column_name FROM information_schema.columns WHERE table_schema = 'lethe' AND table_name = $1 ORDER BY column_name`,
      [table],
    );
    return rows.map((r) => (r as { column_name: string }).column_name);
  }

  beforeAll(async () => {
    db = await createTestDatabase('vault_keys');
    fx = await migratedVault(db.url, 'lethe', 10);
    vault = fx.vault;
  });
  afterAll(async () => {
    expectNoCheckedOutClients(fx.pool);
    await fx.close();
    await db.drop();
  });

  describe('master recipient', () => {
    it('is an error until set, then set once', async () => {
      const unset = await rejectsWith(vault.getMasterRecipient(), 'VAULT');
      expect(unset.message).toContain('lethe init');
      await vault.setMasterRecipient('age1master');
      await vault.setMasterRecipient('age1master');
      expect(await vault.getMasterRecipient()).toBe('age1master');
    });

    it('refuses to replace the recipient, naming both values', async () => {
      const err = await rejectsWith(vault.setMasterRecipient('age1other'), 'VAULT');
      expect(err.message).toContain('age1master');
      expect(err.message).toContain('age1other');
      expect(await vault.getMasterRecipient()).toBe('age1master');
    });
  });

  describe('dimension keys', () => {
    it('stores keys and returns only public parts', async () => {
      const stored = await vault.insertDimensionKeys([
        dimensionKey('tenant:acme', 1),
        dimensionKey('user:acme/u1', 2),
        dimensionKey('system', 3),
      ]);
      expect(stored).toEqual(
        new Map([
          ['tenant:acme', 'age1recipienttenant:acme#1'],
          ['user:acme/u1', 'age1recipientuser:acme/u1#2'],
          ['system', 'age1recipientsystem#3'],
        ]),
      );
      expect((await vault.getDimensionKeys(['user:acme/u1'])).get('user:acme/u1')).toEqual({
        id: 'user:acme/u1',
        kind: 'user',
        tenant: 'acme',
        recipient: 'age1recipientuser:acme/u1#2',
        destroyed: false,
      });
      const read = await vault.getDimensionKeys(['system', 'tenant:acme', 'tenant:nobody']);
      expect([...read.keys()].sort()).toEqual(['system', 'tenant:acme']);
      expect(read.get('system')).toEqual({
        id: 'system',
        kind: 'system',
        tenant: null,
        recipient: 'age1recipientsystem#3',
        destroyed: false,
      });
      const wrapped = await vault.getWrappedDimensionIdentities(['tenant:acme', 'tenant:nobody']);
      expect([...wrapped]).toEqual([['tenant:acme', Buffer.from([1, 1, 2, 3])]]);
    });

    it('converges ten concurrent creators of one id on a single key', async () => {
      const id = 'conversation:acme/c-42';
      const results = await Promise.all(
        Array.from({ length: 10 }, (_, n) => vault.insertDimensionKeys([dimensionKey(id, n + 10)])),
      );
      const recipients = new Set(results.map((r) => r.get(id)));
      expect(recipients.size).toBe(1);
      const { rows } = await rawSql(
        db.url,
        'SELECT recipient, wrapped_identity FROM lethe.dimension_keys WHERE id = $1',
        [id],
      );
      expect(rows).toHaveLength(1);
      const row = rows[0] as { recipient: string; wrapped_identity: Buffer };
      expect(recipients.has(row.recipient)).toBe(true);
      // The stored identity is the winner's own, not another creator's.
      expect(row.recipient).toBe(`age1recipient${id}#${row.wrapped_identity[0] ?? -1}`);
    });

    it('keeps the first key when an id is inserted again', async () => {
      const again = await vault.insertDimensionKeys([dimensionKey('tenant:acme', 99)]);
      expect(again.get('tenant:acme')).toBe('age1recipienttenant:acme#1');
    });

    it('handles more ids than one statement batch', async () => {
      const keys = Array.from({ length: 2500 }, (_, n) => dimensionKey(`user:bulk/u${n}`, n % 250));
      const stored = await vault.insertDimensionKeys(keys);
      expect(stored.size).toBe(2500);
      expect(stored.get('user:bulk/u2499')).toBe('age1recipientuser:bulk/u2499#249');
      const read = await vault.getDimensionKeys(keys.map((k) => k.id));
      expect(read.size).toBe(2500);
    });

    it('rejects a key filed under the wrong kind, a missing tenant, or a shared recipient', async () => {
      await rejectsWith(
        vault.insertDimensionKeys([dimensionKey('user:acme/u9', 1, { kind: 'tenant' })]),
        'DATABASE',
      );
      await rejectsWith(
        vault.insertDimensionKeys([dimensionKey('user:acme/u9', 1, { tenant: null })]),
        'DATABASE',
      );
      await rejectsWith(
        vault.insertDimensionKeys([
          dimensionKey('user:acme/u9', 1, { recipient: 'age1recipienttenant:acme#1' }),
        ]),
        'DATABASE',
      );
      expect((await vault.getDimensionKeys(['user:acme/u9'])).size).toBe(0);
    });

    it('destroys a key for good: identity erased, row kept, never re-created', async () => {
      expect(await vault.destroyDimensionKeys(['user:acme/u1', 'user:acme/nobody'])).toEqual([
        'user:acme/u1',
      ]);
      expect(await vault.destroyDimensionKeys(['user:acme/u1'])).toEqual([]);
      const wrapped = await vault.getWrappedDimensionIdentities(['user:acme/u1']);
      expect(wrapped.get('user:acme/u1')).toBeNull();
      const again = await vault.insertDimensionKeys([dimensionKey('user:acme/u1', 77)]);
      expect(again.get('user:acme/u1')).toBe('age1recipientuser:acme/u1#2');
      expect((await vault.getDimensionKeys(['user:acme/u1'])).get('user:acme/u1')?.destroyed).toBe(
        true,
      );
      const { rows } = await rawSql(
        db.url,
        `SELECT wrapped_identity, destroyed_at IS NOT NULL AS stamped FROM lethe.dimension_keys WHERE id = 'user:acme/u1'`,
      );
      expect(rows).toEqual([{ wrapped_identity: null, stamped: true }]);
    });
  });

  describe('dimension key listing and export', () => {
    it('lists public facts of every key and pages wrapped identities in id order', async () => {
      const listed = await vault.listDimensionKeys();
      const ids = listed.map((k) => k.id);
      expect(new Set(ids).size).toBe(ids.length);
      expect(listed.find((k) => k.id === 'user:acme/u1')).toEqual({
        id: 'user:acme/u1',
        kind: 'user',
        tenant: 'acme',
        recipient: 'age1recipientuser:acme/u1#2',
        destroyed: true,
      });
      expect(listed).toHaveLength(2500 + 4);

      const exported: { id: string; wrapped: number[] | null }[] = [];
      for await (const k of vault.iterateWrappedDimensionKeys({ pageRows: 300 })) {
        exported.push({
          id: k.id,
          wrapped: k.wrappedIdentity === null ? null : [...k.wrappedIdentity],
        });
      }
      expect(exported.map((e) => e.id)).toEqual(ids);
      expect(exported.find((e) => e.id === 'user:acme/u1')?.wrapped).toBeNull();
      expect(exported.find((e) => e.id === 'tenant:acme')?.wrapped).toEqual([1, 1, 2, 3]);
    });
  });

  describe('cell keys', () => {
    it('stores a tuple\'s facts with their dimension order intact, and no key material', async () => {
      await vault.insertCellKeys([cellKey('acme/messages/2026-03/u1', 1)]);
      const read = await vault.getCellKeys(['acme/messages/2026-03/u1', 'missing']);
      expect([...read.keys()]).toEqual(['acme/messages/2026-03/u1']);
      expect(read.get('acme/messages/2026-03/u1')).toEqual(cellKey('acme/messages/2026-03/u1', 1));
      expect(await columnsOf('cell_keys')).toEqual([
        'author',
        'conversation',
        'created_at',
        'data_class',
        'dimension_ids',
        'id',
        'period',
        'tenant',
      ]);
    });

    it('converges concurrent writers of one tuple: the first facts stay', async () => {
      const id = 'acme/messages/2026-04/u2';
      await Promise.all(Array.from({ length: 10 }, (_, n) => vault.insertCellKeys([cellKey(id, n)])));
      const stored = (await vault.getCellKeys([id])).get(id);
      expect(stored?.dimensionIds).toHaveLength(3);
      expect((await rawSql(db.url, `SELECT count(*)::int AS n FROM lethe.cell_keys WHERE id = $1`, [id])).rows).toEqual([{ n: 1 }]);
    });

    it('refuses a cell key wrapped to no dimension key', async () => {
      await rejectsWith(vault.insertCellKeys([{ ...cellKey('x', 1), dimensionIds: [] }]), 'KEY');
    });
  });

  describe('signing keys', () => {
    const pub = (n: number): string => Buffer.alloc(32, n).toString('base64');

    it('keeps public halves only: the table has no column for a private key', async () => {
      expect(await columnsOf('signing_keys')).toEqual([
        'created_at',
        'id',
        'public_key',
        'purpose',
        'retired_at',
      ]);
    });

    it('registers one active key per purpose, and a rotation retires the old one, which still verifies', async () => {
      expect(await vault.activeSigningKeyId('backup')).toBeNull();
      expect(await vault.registerSigningKey({ id: 'b-1', purpose: 'backup', publicKey: pub(1) })).toEqual({ changed: true, retired: [] });
      expect(await vault.registerSigningKey({ id: 'b-1', purpose: 'backup', publicKey: pub(1) })).toEqual({ changed: false, retired: [] });
      expect(await vault.registerSigningKey({ id: 'l-1', purpose: 'lifecycle', publicKey: pub(2) })).toEqual({ changed: true, retired: [] });
      expect(await vault.registerSigningKey({ id: 'b-2', purpose: 'backup', publicKey: pub(3) })).toEqual({ changed: true, retired: ['b-1'] });
      expect(await vault.activeSigningKeyId('backup')).toBe('b-2');
      expect(await vault.activeSigningKeyId('lifecycle')).toBe('l-1');
      // Readers of each kind of object see only the keys of the job that signs it.
      expect([...(await vault.getSigningPublicKeys(['backup'])).keys()]).toEqual(['b-1', 'b-2']);
      expect([...(await vault.getSigningPublicKeys(['lifecycle'])).keys()]).toEqual(['l-1']);
    });

    it('refuses to reactivate a retired key or to use one key for two jobs', async () => {
      const retired = await rejectsWith(vault.registerSigningKey({ id: 'b-1', purpose: 'backup', publicKey: pub(1) }), 'SIGNING_KEY');
      expect(retired.message).toMatch(/retired/);
      const shared = await rejectsWith(vault.registerSigningKey({ id: 'l-1', purpose: 'backup', publicKey: pub(2) }), 'SIGNING_KEY');
      expect(shared.message).toMatch(/key of its own/);
      expect(await vault.activeSigningKeyId('backup')).toBe('b-2');
    });

    it('converges concurrent registrations of different keys on one active key per purpose', async () => {
      await Promise.all([4, 5, 6, 7].map((n) => vault.registerSigningKey({ id: `race-${n}`, purpose: 'lifecycle', publicKey: pub(n) })));
      const { rows } = await rawSql(db.url, "SELECT count(*)::int AS n FROM lethe.signing_keys WHERE purpose = 'lifecycle' AND retired_at IS NULL");
      expect((rows[0] as { n: number }).n).toBe(1);
    });
  });
});
