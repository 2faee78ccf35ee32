import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { gunzipSync, gzipSync } from 'node:zlib';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateSigningKey, sign } from '../../../src/crypto/index.ts';
import { isLetheError, type LetheError } from '../../../src/errors/index.ts';
import {
  ManifestWriter,
  SegmentWriter,
  newSegmentKey,
  openManifest,
  type CellEntry,
  type EncapsulationEntry,
  type ManifestExpectation,
  type ManifestProblem,
  type SegmentEntry,
  type SegmentProblem,
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

/** Where `write` stores segment objects (set before the tests run). */
let segmentStore: ObjectStore;

async function collect(stream: AsyncIterable<unknown>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const chunk of stream) parts.push(chunk as Buffer);
  return Buffer.concat(parts);
}

/** Stores one segment object of `cells` (all of one segment), as the backup writes it; returns its entry. */
async function writeSegment(id: string, cells: CellEntry[], snapshot = header.id): Promise<SegmentEntry> {
  const [table = '', tenant = '', period = ''] = id.split('/');
  const writer = new SegmentWriter({ id, table, tenant, period, snapshot });
  const bytes = collect(writer.stream);
  for (const c of cells) await writer.cell(c);
  writer.finish();
  const key = newSegmentKey(randomBytes(16));
  const stored = await segmentStore.put(key, await bytes);
  return {
    id, table, tenant, period, key, sha256: stored.sha256, size: stored.size,
    cells: cells.length, rows: cells.reduce((n, c) => n + c.rows, 0), bytesPlain: cells.reduce((n, c) => n + c.bytesPlain, 0), shredded: 0, snapshot,
  };
}

/** The stored (gzip-compressed) manifest of `cells` (one segment per cell), as the backup writes it. */
async function write(cells: CellEntry[], options: { schema?: unknown; header?: SnapshotHeader; segments?: SegmentEntry[] } = {}): Promise<Buffer> {
  const segments = options.segments ?? (await Promise.all(cells.map((c) => writeSegment(c.id.split('/').slice(0, 3).join('/'), [c]))));
  const writer = new ManifestWriter(options.header ?? header, options.schema ?? schema);
  const bytes = collect(writer.stream);
  for (const s of segments) await writer.segment(s);
  const written = cells.filter((c) => !c.reused);
  writer.finish(
    [encapsulation],
    { bytesStored: written.reduce((n, c) => n + c.length, 0), cellsWritten: written.length, segmentsWritten: segments.length, fullRead: false },
    completedAt,
    (message) => ({ keyId: 'k1', value: sign(signer.privateKey, message) }),
  );
  return bytes;
}

/** Applies `change` to the uncompressed manifest and compresses it again, as an attacker would. */
function edited(stored: Buffer, change: (plain: Buffer) => Buffer): Buffer {
  return gzipSync(change(gunzipSync(stored)));
}

const sha256 = (bytes: Uint8Array): string => createHash('sha256').update(bytes).digest('hex');

async function listOf<T>(items: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const item of items) out.push(item);
  return out;
}

describe('openManifest', () => {
  let dir: string;
  let store: ObjectStore;
  let n = 0;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'lethe-manifest-test-'));
    store = await createFilesystemStore({ path: dir });
    segmentStore = store;
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
        segments: 3,
        segmentsWritten: 3,
        cellsShredded: 0,
        fullRead: false,
      });
      expect((await listOf(manifest.segments())).map((s) => s.id)).toEqual(['messages/1/2026-01', 'messages/1/2026-02', 'messages/1/2026-03']);
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
    const bytes = await write([], { segments: [await writeSegment('messages/t\uFFFD/2026-01', [])] });
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

  describe('segments: authenticated by the sha256 the signed manifest lists', () => {
    const twoCells = [cell(1), { ...cell(1), id: 'messages/1/2026-01/8', key: 'cell:1/messages/2026-01/8/-' }];

    /** Reads every cell, collecting segment problems instead of throwing. */
    async function problemsOf(bytes: Buffer): Promise<{ cells: CellEntry[]; problems: SegmentProblem[] }> {
      const manifest = await open(bytes);
      try {
        const problems: SegmentProblem[] = [];
        const cells = await listOf(manifest.cells({ onProblem: (p) => problems.push(p) }));
        return { cells, problems };
      } finally {
        await manifest.close();
      }
    }

    it('reads a tree whose segments were written by different snapshots', async () => {
      const older = await writeSegment('messages/1/2026-01', twoCells, '20261127T000000Z-000000');
      const own = await writeSegment('messages/1/2026-02', [cell(2)]);
      const { cells, problems } = await problemsOf(await write([], { segments: [older, own] }));
      expect(problems).toEqual([]);
      expect(cells.map((c) => c.id)).toEqual(['messages/1/2026-01/7', 'messages/1/2026-01/8', 'messages/1/2026-02/7']);
    });

    it('reports a flipped byte, a truncation, a missing object and an older segment of the same table in its place, naming each, and still reads the rest', async () => {
      const segments = await Promise.all([1, 2, 3, 4, 5].map((i) => writeSegment(`messages/1/2026-0${i}`, [cell(i)])));
      const [flipped, truncated, missing, replaced, intact] = segments as [SegmentEntry, SegmentEntry, SegmentEntry, SegmentEntry, SegmentEntry];
      const bytesOf = async (key: string): Promise<Buffer> => Buffer.from(await store.getBytes(key));
      const flip = await bytesOf(flipped.key);
      flip.writeUInt8((flip.readUInt8(flip.length >> 1) ^ 0x01), flip.length >> 1);
      await store.put(flipped.key, flip);
      await store.put(truncated.key, (await bytesOf(truncated.key)).subarray(0, truncated.size - 5));
      await store.delete(missing.key);
      // An older, validly written segment of the same table put where this one was.
      const old = await writeSegment('messages/1/2026-04', [{ ...cell(4), rows: 40 }], '20261127T000000Z-000000');
      await store.put(replaced.key, await bytesOf(old.key));
      const { cells, problems } = await problemsOf(await write([], { segments }));
      expect(cells.map((c) => c.id)).toEqual([cell(5).id]);
      expect(intact.id).toBe('messages/1/2026-05');
      expect(problems.map((p) => [p.segment, p.code])).toEqual([
        ['messages/1/2026-01', 'SEGMENT_SHA256'],
        ['messages/1/2026-02', 'SEGMENT_SHA256'],
        ['messages/1/2026-03', 'SEGMENT_MISSING'],
        ['messages/1/2026-04', 'SEGMENT_SHA256'],
      ]);
      for (const p of problems) expect(p.problem).toContain(p.segment);
    });

    it('without a problem handler, a bad segment throws INTEGRITY naming it, before any of its cells is used', async () => {
      const segment = await writeSegment('messages/1/2026-06', [cell(6)]);
      const bytes = await write([], { segments: [segment] });
      await store.put(segment.key, Buffer.alloc(segment.size, 0));
      const manifest = await open(bytes);
      try {
        const err = await listOf(manifest.cells()).then(() => null, (e: unknown) => e);
        expect(isLetheError(err) && err.code).toBe('INTEGRITY');
        expect((err as Error).message).toContain('messages/1/2026-06');
      } finally {
        await manifest.close();
      }
    });

    it('refuses an authentic segment that does not match its entry: cells of another segment, a count that differs', async () => {
      // Written by the backup's own writer, so its sha256 matches: only the content checks can catch it.
      const stray = await writeSegment('messages/1/2026-07', [cell(8)]);
      const short = await writeSegment('messages/1/2026-09', [cell(9)]);
      const { problems } = await problemsOf(await write([], { segments: [stray, { ...short, cells: 2 }] }));
      expect(problems.map((p) => [p.segment, p.code])).toEqual([
        ['messages/1/2026-07', 'SEGMENT_INVALID'],
        ['messages/1/2026-09', 'SEGMENT_INVALID'],
      ]);
    });
  });
});
