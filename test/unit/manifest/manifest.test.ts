import { createHash } from 'node:crypto';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { gunzipSync, gzipSync } from 'node:zlib';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateSigningKey, sign } from '../../../src/crypto/index.ts';
import { isLetheError, type LetheError } from '../../../src/errors/index.ts';
import {
  ManifestWriter,
  openManifest,
  type CellEntry,
  type EncapsulationEntry,
  type ManifestExpectation,
  type ManifestProblem,
  type SnapshotHeader,
} from '../../../src/manifest/index.ts';
import type { SchemaDescription } from '../../../src/mapping/index.ts';
import { createFilesystemStore } from '../../../src/storage/index.ts';
import type { ObjectStore } from '../../../src/storage/index.ts';

/**
 * Must hold (issue 7, item 1): nothing in a manifest is used before it is authenticated,
 * and the signature covers the raw bytes. openManifest is the only reader.
 */

const header: SnapshotHeader = {
  id: '20261128T000000Z-abcdef',
  createdAt: '2026-11-28T00:00:00.000Z',
  previous: { id: '20261127T000000Z-000000', sha256: 'd'.repeat(64) },
  source: { databaseTime: '2026-11-28T00:00:00.000Z', transactionSnapshot: '1:1:', serverVersion: '15.18' },
  granularity: 'month',
  masterRecipient: 'age1qqqq',
  tables: [{ name: 'messages', class: 'messages', columns: ['id', 'body'] }],
};

const schema: SchemaDescription = {
  schema: 'public',
  enums: [],
  sequences: [],
  tables: [
    {
      name: 'messages',
      columns: [
        { name: 'id', type: 'bigint', notNull: true, default: null, collation: null, identity: null, generated: null },
        { name: 'body', type: 'text', notNull: false, default: "''::text", collation: null, identity: null, generated: null },
      ],
      constraints: [{ name: 'messages_pkey', type: 'p', definition: 'PRIMARY KEY (id)' }],
      indexes: [],
    },
  ],
};

function cell(i: number, reused = false, tenant = '1'): CellEntry {
  return {
    id: `messages/1/2026-0${i}/7`,
    table: 'messages',
    tenant,
    key: `cell:1/messages/2026-0${i}/7/-`,
    dims: [`period:2026-0${i}`, 'user:1/7', 'tenant:1'],
    enc: `${header.id}/1`,
    pack: 'packs/ab/abcd',
    offset: i * 100,
    length: 100,
    sha256: 'a'.repeat(64),
    rows: i,
    bytesPlain: i * 10,
    reused,
  };
}

const signer = generateSigningKey();
const trusted = new Map([['k1', signer.publicKey]]);

const encapsulation: EncapsulationEntry = { id: `${header.id}/1`, tenant: '1', kem: 'x25519', ephemeral: 'e'.repeat(64) };
const completedAt = new Date('2026-11-28T00:01:00.000Z');

/** The stored (gzip-compressed) manifest of `cells`, as the backup writes it. */
async function write(cells: CellEntry[], options: { schema?: unknown; header?: SnapshotHeader } = {}): Promise<Buffer> {
  const writer = new ManifestWriter(options.header ?? header, options.schema ?? schema);
  const parts: Buffer[] = [];
  const collected = (async () => {
    for await (const chunk of writer.stream) parts.push(chunk as Buffer);
  })();
  for (const c of cells) await writer.cell(c);
  writer.finish([encapsulation], completedAt, (message) => ({ keyId: 'k1', value: sign(signer.privateKey, message) }));
  await collected;
  return Buffer.concat(parts);
}

/** Applies `change` to the uncompressed manifest and compresses it again, as an attacker would. */
function edited(stored: Buffer, change: (plain: Buffer) => Buffer): Buffer {
  return gzipSync(change(gunzipSync(stored)));
}

const sha256 = (bytes: Uint8Array): string => createHash('sha256').update(bytes).digest('hex');

describe('openManifest', () => {
  let dir: string;
  let store: ObjectStore;
  let n = 0;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'lethe-manifest-test-'));
    store = await createFilesystemStore({ path: dir });
  });
  afterAll(async () => {
    await store.close();
    await rm(dir, { recursive: true, force: true });
  });

  /** Stores `bytes` and opens them as the vault would expect `recorded` (default: their own sha256). */
  async function open(bytes: Buffer, over: Partial<ManifestExpectation> = {}, keys: ReadonlyMap<string, string> = trusted) {
    n += 1;
    const key = `snapshots/test-${n}.json.gz`;
    await store.put(key, bytes);
    return openManifest(store, { snapshotId: header.id, key, sha256: sha256(bytes), previous: { id: header.previous?.id ?? '', sha256: 'd'.repeat(64) }, ...over }, keys);
  }

  async function refused(promise: Promise<unknown>): Promise<{ err: LetheError; codes: string[] }> {
    const err = await promise.then(
      () => null,
      (e: unknown) => e,
    );
    if (!isLetheError(err)) throw new Error(`expected a LetheError, got ${String(err)}`);
    const problems = (err.details?.['problems'] ?? []) as ManifestProblem[];
    return { err, codes: problems.map((p) => p.code) };
  }

  it('reads back an authentic manifest: header, schema, cells, encapsulations, totals', async () => {
    const manifest = await open(await write([cell(1), cell(2, true), cell(3)]));
    try {
      expect(manifest.header).toEqual(header);
      expect(manifest.schema).toEqual(schema);
      expect([...manifest.encapsulations.values()]).toEqual([encapsulation]);
      const cells: CellEntry[] = [];
      for await (const c of manifest.cells()) cells.push(c);
      expect(cells).toEqual([cell(1), cell(2, true), cell(3)]);
      expect(manifest.totals).toEqual({
        completedAt: completedAt.toISOString(),
        cells: 3,
        rows: 6,
        bytesPlain: 60,
        cellsReused: 1,
        bytesStored: 200,
        rowsByTable: { messages: 6 },
      });
    } finally {
      await manifest.close();
    }
  });

  it('leaves no local copy behind', async () => {
    const before = (await readdir(tmpdir())).filter((f) => f.startsWith('lethe-manifest-') && !dir.endsWith(f)).length;
    const manifest = await open(await write([cell(1)]));
    await manifest.close();
    await refused(open(await write([cell(1)]), { sha256: '0'.repeat(64) }));
    const after = (await readdir(tmpdir())).filter((f) => f.startsWith('lethe-manifest-') && !dir.endsWith(f)).length;
    expect(after).toBe(before);
  });

  it('an empty snapshot is a valid manifest', async () => {
    const manifest = await open(await write([]));
    const cells: CellEntry[] = [];
    for await (const c of manifest.cells()) cells.push(c);
    await manifest.close();
    expect(cells).toEqual([]);
  });

  it('refuses a manifest changed after the backup: the sha256 fails before anything is decompressed', async () => {
    const bytes = await write([cell(1), cell(2)]);
    const tampered = edited(bytes, (plain) => Buffer.from(plain.toString('utf8').replace('"rows":2', '"rows":9'), 'utf8'));
    const { err, codes } = await refused(open(tampered, { sha256: sha256(bytes) }));
    expect(err.code).toBe('INTEGRITY');
    expect(codes).toEqual(['MANIFEST_SHA256']);
    // With the vault's record changed too (an attacker with both), the signature still refuses it.
    expect((await refused(open(tampered))).codes).toEqual(['SIGNATURE']);
  });

  it('never inflates an object the vault did not record: a planted gzip bomb is refused by its hash', async () => {
    const bomb = gzipSync(Buffer.alloc(8 * 1024 * 1024));
    const before = (await readdir(tmpdir())).length;
    const { codes } = await refused(open(bomb, { sha256: sha256(await write([cell(1)])) }));
    expect(codes).toEqual(['MANIFEST_SHA256']);
    expect((await readdir(tmpdir())).length).toBe(before);
  });

  it('refuses an object that is not gzip, or cut short, as unsigned', async () => {
    const bytes = await write([cell(1), cell(2)]);
    for (const broken of [Buffer.from('{"format":"lethe.manifest.v3",\n'), bytes.subarray(0, bytes.length - 20)]) {
      const { codes } = await refused(open(Buffer.from(broken)));
      expect(codes).toEqual(['SIGNATURE']);
    }
  });

  it('signs the raw bytes: an invalid UTF-8 byte that decodes like the original does not pass', async () => {
    // U+FFFD stored as EF BF BD; a lone 0xFF decodes to U+FFFD too, so a reader that hashed
    // decoded text would find the same digest and accept the altered bytes.
    const bytes = await write([cell(1, false, 't\uFFFD')]);
    const plain = gunzipSync(bytes);
    const at = plain.indexOf(Buffer.from('efbfbd', 'hex'));
    expect(at).toBeGreaterThan(0);
    const alteredPlain = Buffer.concat([plain.subarray(0, at), Buffer.from([0xff]), plain.subarray(at + 3)]);
    expect(alteredPlain.toString('utf8')).toBe(plain.toString('utf8'));
    const altered = gzipSync(alteredPlain);
    // Even with the vault's record made over the altered bytes, the signature refuses them.
    const { codes } = await refused(open(altered));
    expect(codes).toEqual(['SIGNATURE']);
  });

  it('refuses a signature by a key the vault does not list for backups', async () => {
    const { codes, err } = await refused(open(await write([cell(1)]), {}, new Map([['k1', generateSigningKey().publicKey]])));
    expect(codes).toEqual(['SIGNATURE']);
    expect(err.message).toMatch(/does not verify/);
    const unknown = await refused(open(await write([cell(1)]), {}, new Map()));
    expect(unknown.err.message).toMatch(/k1, which the vault does not list/);
  });

  it('refuses a truncated manifest as unsigned', async () => {
    const plain = gunzipSync(await write([cell(1), cell(2)]));
    for (const cut of [plain.subarray(0, plain.length - 30), plain.subarray(0, 40)]) {
      const { codes } = await refused(open(gzipSync(cut)));
      expect(codes).toEqual(['SIGNATURE']);
    }
  });

  it('checks the snapshot id and the place in the chain against the vault', async () => {
    const bytes = await write([cell(1)]);
    expect((await refused(open(bytes, { snapshotId: 'another' }))).codes).toEqual(['MANIFEST_MISMATCH']);
    expect((await refused(open(bytes, { previous: null }))).codes).toEqual(['CHAIN']);
    expect((await refused(open(bytes, { previous: { id: 'x', sha256: null } }))).codes).toEqual(['CHAIN']);
    expect((await refused(open(bytes, { previous: { id: header.previous?.id ?? '', sha256: 'e'.repeat(64) } }))).codes).toEqual(['CHAIN']);
  });

  it('refuses an authentic manifest whose schema would splice SQL, before any of it becomes DDL', async () => {
    const evil = structuredClone(schema) as unknown as { tables: { columns: { type: string }[] }[] };
    const column = evil.tables[0]?.columns[0];
    if (column === undefined) throw new Error('no column');
    column.type = "bigint); COPY (SELECT 1) TO PROGRAM 'touch /tmp/x'; CREATE TABLE t (x int";
    const { err } = await refused(open(await write([cell(1)], { schema: evil })));
    expect(err.code).toBe('MANIFEST_INVALID');
    expect(err.message).toMatch(/schema is not one lethe restores/);
  });
});
