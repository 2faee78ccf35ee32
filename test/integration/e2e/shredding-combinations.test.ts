import { randomBytes } from 'node:crypto';
import pg from 'pg';
import pgCopyStreams from 'pg-copy-streams';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  conversationKeyId,
  copySessionStatements,
  periodKeyId,
  tenantKeyId,
  userKeyId,
} from '../../../src/cells/index.ts';
import {
  cellKey,
  decryptBytes,
  openSealed,
  parseX25519PrivateKeyPem,
  readMasterKeyFile,
  sharedSecret,
  tupleKey,
  x25519PrivateKey,
  type MasterKey,
} from '../../../src/crypto/index.ts';
import { isLetheError } from '../../../src/errors/index.ts';
import { backup, initialize, restore } from '../../../src/jobs/tasks.ts';
import { KeyOpener, type OpenedKey } from '../../../src/keys/index.ts';
import type { CellEntry, TrustedManifest } from '../../../src/manifest/index.ts';
import { readCell, type ReadCell } from '../../../src/restore/cell-reader.ts';
import { openSnapshotManifest } from '../../../src/restore/manifest-source.ts';
import {
  createLetheEnv,
  tableContents,
  type LetheEnv,
  type TestDatabase,
} from '../../helpers/lethe-env.ts';
import { createTinyChatTemplate, FOUR_DIMENSION_CELL as CELL } from './tiny-chat-store.ts';

/**
 * Must hold (issue 8): a cell whose key needs four dimension keys (period, user,
 * conversation, tenant) opens with all four and with no fewer. For each of the 15 non-empty
 * sets of its dimension keys, those keys are made unavailable exactly as a shred leaves them
 * in the vault (wrapped identity NULL, destroyed_at set; put back after each case), and the
 * cell is read through the code restore uses, with the master key, the vault and the bucket
 * all at hand: the authenticated manifest, KeyOpener, readCell, and the restore job itself.
 * With raw crypto, no choice of shared secrets short of all four gives the cell key.
 */

/** The cell's dimension keys, in key-derivation order (docs/format.md). */
const DIMS = [
  periodKeyId(CELL.tenant, 'messages', CELL.period),
  userKeyId(CELL.tenant, CELL.user),
  conversationKeyId(CELL.tenant, CELL.conversation),
  tenantKeyId(CELL.tenant),
] as const;

/** Every non-empty subset of DIMS (bit i of the mask: DIMS[i] is gone), in DIMS order. */
const SUBSETS: readonly (readonly string[])[] = Array.from({ length: 15 }, (_, i) =>
  DIMS.filter((_d, bit) => ((i + 1) >> bit) & 1),
);

describe('shredding any combination of a four-dimension cell’s keys', () => {
  let template: TestDatabase;
  let env: LetheEnv;
  let vaultSql: pg.Client;
  let target: TestDatabase;
  let snapshotId: string;
  let master: MasterKey;
  let cell: CellEntry;
  let ephemeral: Buffer;
  /** The wrapped identities as the backup left them, put back after each case. */
  const wrapped = new Map<string, Buffer>();
  /** The cell's rows as COPY text, straight from the chat store. */
  let source: Buffer;

  /** Runs `fn` on the snapshot's manifest, authenticated against the vault as restore does. */
  async function withManifest<T>(fn: (manifest: TrustedManifest) => Promise<T>): Promise<T> {
    const vault = await env.rt.vault();
    const snapshot = await vault.getSnapshot(snapshotId);
    const manifest = await openSnapshotManifest(vault, await env.rt.store(), snapshot);
    try {
      return await fn(manifest);
    } finally {
      await manifest.close();
    }
  }

  /** The cell's entry in the manifest. */
  function manifestCell(): Promise<CellEntry> {
    return withManifest(async (manifest) => {
      for await (const entry of manifest.cells()) if (entry.id === CELL.id) return entry;
      throw new Error(`no cell ${CELL.id} in the manifest`);
    });
  }

  /** Opens the cell as restore does: a fresh KeyOpener with the master identity, then readCell. */
  async function openAsRestoreDoes(): Promise<{ key: OpenedKey; read: ReadCell }> {
    const entry = await manifestCell();
    const opener = new KeyOpener(await env.rt.vault(), master.identity);
    const key = await opener.open(entry.key, entry.enc);
    return { key, read: await readCell(entry, { store: await env.rt.store(), key }) };
  }

  /** Runs `fn` while `ids` look destroyed in the vault (as destroyKeys leaves them), then puts them back. */
  async function withShredded<T>(ids: readonly string[], fn: () => Promise<T>): Promise<T> {
    const nulled = await vaultSql.query(
      'UPDATE lethe.dimension_keys SET wrapped_identity = NULL, destroyed_at = now() WHERE id = ANY($1::text[]) AND wrapped_identity IS NOT NULL',
      [ids],
    );
    try {
      expect(nulled.rowCount).toBe(ids.length);
      return await fn();
    } finally {
      for (const id of ids) {
        await vaultSql.query(
          'UPDATE lethe.dimension_keys SET wrapped_identity = $2, destroyed_at = NULL WHERE id = $1',
          [id, wrapped.get(id)],
        );
      }
    }
  }

  async function targetTables(): Promise<number> {
    const client = new pg.Client({ connectionString: target.url });
    await client.connect();
    try {
      const { rows } = await client.query<{ n: number }>(
        "SELECT count(*)::int AS n FROM pg_tables WHERE schemaname = 'public'",
      );
      return rows[0]?.n ?? -1;
    } finally {
      await client.end();
    }
  }

  beforeAll(async () => {
    template = await createTinyChatTemplate('e2e_shred_tpl');
    env = await createLetheEnv({ template: template.name });
    await initialize(env.rt, 'e2e');
    snapshotId = (await backup(env.rt, { actor: 'e2e' })).snapshotId;
    master = await readMasterKeyFile(env.masterKeyFile);
    cell = await manifestCell();
    const { listed, columns } = await withManifest((manifest) =>
      Promise.resolve({
        listed: manifest.encapsulations.get(cell.enc),
        columns: manifest.header.tables.find((t) => t.name === 'messages')?.columns ?? [],
      }),
    );
    if (listed === undefined) throw new Error(`encapsulation ${cell.enc} is not in the manifest`);
    ephemeral = Buffer.from(listed.ephemeral, 'hex');
    const vault = await env.rt.vault();
    for (const [id, bytes] of await vault.getWrappedDimensionIdentities(DIMS)) {
      if (bytes === null) throw new Error(`dimension key ${id} is destroyed before the test began`);
      wrapped.set(id, Buffer.from(bytes));
    }
    vaultSql = new pg.Client({ connectionString: env.vaultDb.url });
    await vaultSql.connect();
    target = await env.database('e2e_shred_target');

    // The cell's rows, as COPY text, read from the chat store with a query of our own.
    const chat = new pg.Client({ connectionString: env.chat.url });
    await chat.connect();
    try {
      const list = columns.map((c) => chat.escapeIdentifier(c)).join(', ');
      await chat.query('BEGIN');
      for (const statement of copySessionStatements()) await chat.query(statement);
      const chunks: Buffer[] = [];
      const copy = chat.query(
        pgCopyStreams.to(
          `COPY (SELECT ${list} FROM public.messages WHERE conversation_id = ${CELL.conversation} AND sender_id = ${CELL.user}
             AND created_at >= '2026-01-01T00:00:00Z' AND created_at < '2026-02-01T00:00:00Z' ORDER BY id) TO STDOUT`,
        ),
      );
      for await (const chunk of copy) chunks.push(Buffer.from(chunk as Buffer));
      await chat.query('COMMIT');
      source = Buffer.concat(chunks);
    } finally {
      await chat.end();
    }
  }, 120_000);

  afterAll(async () => {
    await vaultSql.end();
    await env.cleanup();
    await template.drop();
  });

  it('the cell needs all four dimension kinds, and opens with all four to the source rows', async () => {
    expect(cell.dims).toEqual([...DIMS]);
    expect(cell.rows).toBe(CELL.messageIds.length);
    expect(
      source
        .toString('utf8')
        .split('\n')
        .filter((l) => l !== '')
        .map((l) => l.split('\t')[0]),
    ).toEqual([...CELL.messageIds]);
    // COPY's escapes and UTF-8 are in the plaintext, so it is compared byte for byte with them.
    expect(source.toString('utf8')).toContain('see you\\ttomorrow\\nat 10');
    expect(source.toString('utf8')).toContain('back\\\\slash and h\u00e9llo \u{1F30D}');
    const { key, read } = await openAsRestoreDoes();
    expect(key.ok).toBe(true);
    expect(read.status).toBe('ok');
    if (read.status !== 'ok' || !(read.plaintext instanceof Uint8Array))
      throw new Error('the cell did not open in memory');
    expect(Buffer.from(read.plaintext).equals(source)).toBe(true);
    expect(read.rows).toBe(3);
  });

  it.each(SUBSETS.map((s) => [s.join(' + '), s] as const))(
    'without %s it cannot be opened',
    async (_name, gone) => {
      await withShredded(gone, async () => {
        const { key, read } = await openAsRestoreDoes();
        // The opener names exactly the keys that are gone, and derives nothing.
        expect(key).toEqual({ ok: false, destroyed: [...gone] });
        expect(read).toEqual({ status: 'shredded', destroyed: [...gone] });
        expect('plaintext' in read).toBe(false);

        // The restore job refuses (no destruction record accounts for the missing keys) and
        // leaves the target untouched.
        const refused = await restore(env.rt, {
          snapshot: snapshotId,
          targetUrl: target.url,
          replace: false,
          blobTarget: env.blobTarget(),
          actor: 'e2e',
        }).then(
          () => null,
          (err: unknown) => err,
        );
        expect(isLetheError(refused, 'INTEGRITY'), String(refused)).toBe(true);
        const message = (refused as Error).message;
        expect(message).toMatch(/destroyed with no destruction record in the vault/);
        expect(
          gone.some((id) => message.includes(id)),
          message,
        ).toBe(true);
        expect(await targetTables()).toBe(0);
      });
    },
  );

  it('tells a key whose vault row is gone from a destroyed one, and still opens nothing', async () => {
    const gone = DIMS[1];
    await vaultSql.query('CREATE TEMP TABLE saved_key AS SELECT * FROM lethe.dimension_keys WHERE id = $1', [gone]);
    try {
      expect((await vaultSql.query('DELETE FROM lethe.dimension_keys WHERE id = $1', [gone])).rowCount).toBe(1);
      const { key, read } = await openAsRestoreDoes();
      expect(key.ok).toBe(false);
      expect('destroyed' in key).toBe(false);
      expect(JSON.stringify(key)).toMatch(/the vault has no row for it, destroyed or not/);
      expect(read.status).toBe('failed');
      const refused = await restore(env.rt, { snapshot: snapshotId, targetUrl: target.url, replace: false, blobTarget: env.blobTarget(), actor: 'e2e' }).then(
        () => null,
        (err: unknown) => err,
      );
      expect(isLetheError(refused, 'INTEGRITY'), String(refused)).toBe(true);
      expect((refused as Error).message).toMatch(/no row for it/);
      expect(await targetTables()).toBe(0);
    } finally {
      await vaultSql.query('INSERT INTO lethe.dimension_keys SELECT * FROM saved_key');
      await vaultSql.query('DROP TABLE saved_key');
    }
  });

  it('opens again once every key is back, and the restore job restores the source', async () => {
    const { read } = await openAsRestoreDoes();
    expect(read.status).toBe('ok');
    const restored = await restore(env.rt, {
      snapshot: snapshotId,
      targetUrl: target.url,
      replace: false,
      blobTarget: env.blobTarget(),
      actor: 'e2e',
    });
    expect(restored.cellsShredded).toBe(0);
    expect(await tableContents(target.url)).toEqual(await tableContents(env.chat.url));
  });

  it('with raw crypto, no set of shared secrets short of all four gives the cell key', async () => {
    const ciphertext = await (await env.rt.store()).getRange(cell.pack, cell.offset, cell.length);
    const secrets: Buffer[] = [];
    for (const id of DIMS) {
      const pem = Buffer.from(
        await decryptBytes(wrapped.get(id) ?? Buffer.alloc(0), [master.identity]),
      ).toString('utf8');
      secrets.push(
        sharedSecret(x25519PrivateKey(parseX25519PrivateKeyPem(pem, id)), ephemeral, id),
      );
    }
    const key = cellKey(tupleKey(secrets, ephemeral, DIMS), cell.id);
    // All four: the real ciphertext opens to the source rows, so the computation is the real one.
    expect(openSealed(key, ciphertext, cell.id).equals(source)).toBe(true);

    const refuses = (candidate: Buffer): void => {
      expect(candidate.equals(key)).toBe(false);
      let thrown: unknown = null;
      try {
        openSealed(candidate, ciphertext, cell.id);
      } catch (err) {
        thrown = err;
      }
      expect(isLetheError(thrown, 'CRYPTO'), String(thrown)).toBe(true);
    };
    for (const gone of SUBSETS) {
      const missing = new Set(gone);
      const kept = DIMS.map((id, i) => ({ id, z: secrets[i] as Buffer })).filter(
        (d) => !missing.has(d.id),
      );
      // Whatever stands in for each missing secret (random, zero, a secret the attacker does
      // hold), the tag fails.
      for (const filler of [
        () => randomBytes(32),
        () => Buffer.alloc(32),
        () => kept[0]?.z ?? randomBytes(32),
      ]) {
        const guessed = DIMS.map((id, i) => (missing.has(id) ? filler() : (secrets[i] as Buffer)));
        refuses(cellKey(tupleKey(guessed, ephemeral, DIMS), cell.id));
      }
      // Nor does deriving from the remaining secrets alone, under their own ids.
      if (kept.length > 0) {
        refuses(
          cellKey(
            tupleKey(
              kept.map((d) => d.z),
              ephemeral,
              kept.map((d) => d.id),
            ),
            cell.id,
          ),
        );
      }
    }
  });
});
