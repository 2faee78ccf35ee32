import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import pg from 'pg';
import pgCopyStreams from 'pg-copy-streams';
import { cellId, copyLines, copySessionStatements, decodeCopyField, groupCells, RowFingerprint, segmentId, type CellTuple } from '../cells/index.ts';
import { equalConstantTime } from '../crypto/index.ts';
import { ErrorCode, LetheError, isLetheError, throwIfAborted, wrapForeign } from '../errors/index.ts';
import { Encapsulator, type SecretObserver, type Signer } from '../keys/index.ts';
import type { Logger } from '../log/index.ts';
import {
  ManifestWriter,
  SegmentWriter,
  cellEntryOf,
  manifestKey,
  newSegmentKey,
  type CellEntry,
  type EncapsulationEntry,
  type SnapshotHeader,
} from '../manifest/index.ts';
import {
  buildCellQuery,
  buildFingerprintQuery,
  buildOrphanCheckQuery,
  cellFilterKey,
  checkCoverage,
  classOf,
  readSchema,
  segmentFilterKey,
  shardOf,
  type CellFilter,
  type Mapping,
  type Shard,
  type TableInfo,
} from '../mapping/index.ts';
import type { SchemaDescription } from '../mapping/index.ts';
import { quoteIdent, summarizeSchema, type SchemaSummary } from '../mapping/index.ts';
import { z } from 'zod';
import type { ObjectLock, ObjectStore } from '../storage/index.ts';
import type { CompleteSnapshot, CurrentCopy, Encapsulation, NewCellCopy, RunningSnapshot, SegmentRecord, Vault } from '../vault/index.ts';
import { CellWriter, fingerprintPrefix, keyedFingerprint, type CellOutcome, type PreviousCell } from './cell-writer.ts';
import { PackWriter } from './pack-writer.ts';
import { BlobWriter, type BlobFinding, type BlobOutcome, type BlobRow } from './blob-writer.ts';
import { blobTableName, isBlobTable, openBlobSource, type BlobSource } from '../blobs/index.ts';
import type { BlobStoreConfig } from '../config/index.ts';
import { exportAudit } from '../audit/index.ts';
import { failpoint, pausepoint } from '../util/failpoint.ts';
import { pgClientConfig } from '../tls/index.ts';

/** A COPY TO STDOUT in flight on one of the backup's readers. */
type CopyStream = ReturnType<typeof pgCopyStreams.to>;

export interface BackupOptions {
  readonly chatStoreUrl: string;
  readonly mapping: Mapping;
  readonly vault: Vault;
  readonly store: ObjectStore;
  readonly granularity: 'month' | 'week' | 'day';
  readonly packSizeBytes: number;
  readonly cellBufferBytes: number;
  readonly lockDays?: { mode: ObjectLock['mode']; days: number };
  readonly log: Logger;
  readonly actor: string;
  /** The backup's signing key (loadSigner checked it is the vault's active backup key). */
  readonly signer: Signer;
  readonly signal?: AbortSignal;
  readonly onProgress?: (progress: BackupProgress) => void;
  /**
   * Every Nth snapshot reads every row (see BackupSchema.fullEvery); undefined: only the
   * first snapshot of a store, and the first after an upgrade, read everything.
   */
  readonly fullEvery?: number;
  /** Read every row this time, whatever fullEvery says (`lethe backup --full-read`). */
  readonly fullRead?: boolean;
  /** The clock; tests inject one. */
  readonly now?: () => Date;
  /** `chatStore.blobStores`: where the mapping's `blob` columns point (docs/mapping.md). */
  readonly blobStores?: Readonly<Record<string, BlobStoreConfig>>;
  /** Test hook: sees every secret the run makes (it must be found nowhere afterwards). */
  readonly observeSecrets?: SecretObserver;
  /** keys.postQuantum: new dimension keys and encapsulations get an ML-KEM-768 component. */
  readonly postQuantum?: boolean;
}

export interface BackupProgress {
  readonly table: string;
  readonly tablesDone: number;
  readonly tables: number;
  /** Cells read so far. */
  readonly cells: number;
  readonly rows: number;
  readonly bytesPlain: number;
  /**
   * Rows this run reads from the tables planned so far (their fingerprints say how many);
   * the run's total once `tablesPlanned` is `tables`.
   */
  readonly rowsPlanned?: number;
  readonly tablesPlanned?: number;
}

/** The outcome of `lethe backup`, as printed with `--json`. */
export interface BackupResult {
  readonly snapshotId: string;
  readonly previousId: string | null;
  readonly cells: number;
  readonly cellsReused: number;
  readonly cellsWritten: number;
  /** Cells not backed up because a key they need was destroyed (erased data still in the store). */
  readonly cellsSkippedShredded: number;
  /**
   * The destroyed keys those cells needed, by key id (byte order), with the cells and rows
   * each left out; the log gets one summary line. Not recorded in the vault's stats or the
   * audit entry, which keep the count.
   */
  readonly shreddedKeys: readonly ShreddedKey[];
  readonly rows: number;
  readonly bytesPlain: number;
  /** Ciphertext bytes uploaded by this run (reused cells cost nothing). */
  readonly bytesStored: number;
  readonly packs: number;
  /** Dimension keys this run created. */
  readonly keysCreated: number;
  /** Key encapsulations (one per tenant with new cells) this run created. */
  readonly encapsulations: number;
  readonly manifest: string;
  /** Segments the snapshot lists, and how many of them this run wrote (the rest are referenced). */
  readonly segments: number;
  readonly segmentsWritten: number;
  /** Segments whose fingerprint changed (or all, on a full read): only their rows were read. */
  readonly segmentsRead: number;
  /** Cells read out of the chat store (the others were known unchanged from their fingerprints). */
  readonly cellsRead: number;
  /** True when every row was read (first snapshot, backup.fullEvery, --full-read). */
  readonly fullRead: boolean;
  /** Snapshots since the last full read (0 for a full read). */
  readonly sinceFullRead: number;
  /**
   * Files outside the database: `files` the snapshot holds (and their `bytesPlain`), how many
   * this run `written`, how many it `reused` (the others: referenced unchanged, whether re-read
   * or in a segment it did not read), left out as `shredded`, and `findings`. `rows` and
   * `cells` of the result count rows and cells; files are blob cells, so `cells` includes them.
   */
  readonly blobs: BlobTotals & { readonly files: number };
  /**
   * Blobs that could not be backed up (missing, unreadable, outside their store), each with
   * its table, row key and location; at most {@link MAX_FINDINGS_LISTED} (`blobs.findings`
   * counts them all). Non-empty means the run completed with findings (exit 3).
   */
  readonly findings: BlobFinding[];
  /** The chat store's schema the snapshot holds: id, tables and columns (see summarizeSchema). */
  readonly schema: SchemaSummary;
  /** True when it is not the previous snapshot's schema; null for the first snapshot, or one after a lethe that did not record it. */
  readonly schemaChanged: boolean | null;
  readonly durationMs: number;
}

/** Counts of the blobs a run took (see BackupResult.blobs). */
export type BlobTotals = {
  written: number;
  reused: number;
  shredded: number;
  findings: number;
  bytesPlain: number;
};

/** Findings a result lists in full; the rest are counted. */
export const MAX_FINDINGS_LISTED = 1000;

/** `20261128T073512Z-3fa9c1`: sorts by time, unique across runs. */
export function newSnapshotId(at: Date): string {
  const stamp = at.toISOString().replace(/[-:]/g, '').replace(/\.\d{3}Z$/, 'Z');
  return `${stamp}-${randomBytes(3).toString('hex')}`;
}

const CELL_ROWS_BATCH = 1000;

/**
 * Changed cells named one by one in the read query's filter; past this, the changed
 * segments are read whole (unchanged cells are then found by their digest).
 */
const MAX_CELL_FILTER = 5000;

/** Fingerprint rows compared with the vault's copies at once. */
const FINGERPRINT_BATCH = 2000;

/** Segment objects uploading at once. */
const SEGMENT_UPLOADS = 8;

/** Cells of one segment a vault query returns at once. */
const CELLS_PAGE = 5000;

/**
 * Segment objects recorded in the vault (as objects, before their upload) at once, and the
 * cell entries they may hold in memory together: a batch ends at whichever comes first.
 */
const SEGMENT_BATCH = 200;
/** Blob rows whose current copies are looked up together (their files are still read one at a time). */
const BLOB_BATCH = 200;
const SEGMENT_BATCH_CELLS = 4000;

/** One row of a fingerprint query. */
interface FingerprintRow {
  readonly tuple: CellTuple;
  readonly fingerprint: RowFingerprint;
}

/** Streams the rows of a fingerprint query (buildFingerprintQuery) run as COPY. */
async function* fingerprintRows(reader: pg.Client, sql: string, level: 'segment' | 'cell', dataClass: CellTuple['class']): AsyncGenerator<FingerprintRow> {
  const copy = reader.query(pgCopyStreams.to(`COPY (${sql}) TO STDOUT`));
  const groups = level === 'segment' ? 2 : 4;
  for await (const line of copyLines(copy)) {
    const fields = line.toString('utf8', 0, line.length - 1).split('\t').map(decodeCopyField);
    const period = fields[1];
    if (period == null || fields.length !== groups + 3) throw new LetheError(ErrorCode.INTERNAL, 'a fingerprint query returned a malformed row');
    const fingerprint = new RowFingerprint();
    fingerprint.merge(Number(fields[groups]), fields.slice(groups + 1).map((f) => BigInt(f ?? '0')));
    yield {
      tuple: { tenant: fields[0] ?? null, class: dataClass, period, author: level === 'cell' ? (fields[2] ?? null) : null, conversation: level === 'cell' ? (fields[3] ?? null) : null },
      fingerprint,
    };
  }
}

/** A segment whose fingerprint changed (or every segment, on a full read): what the run did to it. */
/**
 * Queues the vault record of a copy this run wrote (a row cell or a file cell) and marks the
 * copy it replaces as superseded by this run.
 */
function recordWritten(
  pending: { copies: NewCellCopy[]; superseded: string[] },
  state: { readonly id: string; superseded: number },
  outcome: Extract<CellOutcome, { kind: 'written' }>,
): void {
  const { entry, tuple } = outcome;
  pending.copies.push({
    segment: state.id,
    id: entry.id,
    table: entry.table,
    tenant: tuple.tenant,
    class: tuple.class,
    period: tuple.period,
    author: tuple.author,
    key: entry.key,
    encapsulation: entry.enc,
    pack: entry.pack,
    offset: entry.offset,
    length: entry.length,
    sha256: entry.sha256,
    rows: entry.rows,
    bytesPlain: entry.bytesPlain,
    digest: outcome.digest,
    fingerprint: outcome.fingerprint,
  });
  if (outcome.prior !== undefined) {
    pending.superseded.push(outcome.prior.copyId);
    state.superseded += 1;
  }
}

interface SegmentState {
  readonly id: string;
  readonly tenant: string | null;
  readonly period: string;
  /** Keyed fingerprint of its rows now. */
  readonly keyed: string;
  /** The current segment object, if there is one. */
  readonly prior: SegmentRecord | undefined;
  /** Current copies it leaves out (rewritten, deleted, shredded). */
  superseded: number;
  shredded: number;
}

/** Where a table's changed segments go as they are finished (see writeTables). */
interface SegmentSink {
  /**
   * A segment read whole (every cell of it is in this run's outcomes): `entries` are its
   * cells now, `written` how many this run wrote, `reusedCopies` the current copies it
   * references again (every other current copy of the segment is superseded).
   */
  wholeSegment(state: SegmentState, entries: CellEntry[], written: number, reusedCopies: string[]): Promise<void>;
  /** Lists the changed segments not read whole (from the vault), waits for the uploads, records the table's segments. */
  finish(whole: ReadonlySet<string>): Promise<void>;
}

/**
 * A table as the backup reads it: its name, its columns in COPY order, and those whose
 * values enter the row hash as their own md5 (bytea: see buildCellQuery).
 */
interface TableSpec {
  readonly name: string;
  readonly copyColumns: readonly string[];
  readonly digestColumns: readonly string[];
}

/** What a table's read looks like, decided from fingerprints before any row is read. */
interface TablePlan {
  /** Milliseconds spent on: the segment fingerprints, the cell fingerprints, comparing them with the vault. */
  readonly timings?: { segmentsMs: number; cellsMs: number; compareMs: number };
  readonly table: TableSpec;
  readonly reader: pg.Client;
  /** The segments to rewrite (or keep, if nothing in them turns out changed), by id. */
  readonly segments: Map<string, SegmentState>;
  /** `none`: nothing changed; `all`: every row; else the filter of the cells or segments to read. */
  readonly read: 'none' | 'all' | CellFilter;
  /** Rows the read will return, from the server's fingerprints (for progress). */
  readonly rows: number;
}

/** Domain tag of the digest key the backup derives from its signing key. */
export const CELL_DIGEST_KEY_LABEL = 'lethe.cell-digest-key.v1';

/** Where a run's objects go, and how they are locked. */
interface PutOptions {
  readonly lock?: ObjectLock;
  readonly signal?: AbortSignal;
}

/** What writing tables needs: shared by a single-process backup and a shard worker. */
interface WriteContext {
  readonly options: BackupOptions;
  readonly run: RunningSnapshot;
  /** The snapshot this one follows (its current copies and segments are compared with). */
  readonly hasPrevious: boolean;
  readonly fullRead: boolean;
  readonly masterRecipient: string;
  readonly putOptions: PutOptions;
  readonly digestKey: Uint8Array;
  /** Connections in the snapshot's transaction; tables alternate between them. */
  readonly readers: readonly pg.Client[];
  readonly tables: readonly TableSpec[];
  /** Refuse tables whose rows the mapping's joins would drop (the coordinator checks for its workers). */
  readonly checkOrphans: boolean;
  /** The tenants this process writes; undefined: all. */
  readonly shard?: Shard;
  /**
   * Blob segments the previous snapshot's findings were in, read again whatever their rows'
   * fingerprints say (`all`: more findings than it listed, so every blob segment is read).
   */
  readonly blobRecheck?: { readonly segments: ReadonlySet<string>; readonly all: boolean };
  readonly log: Logger;
}

/** A destroyed key that cells read in a backup needed, and how many cells and rows it left out. */
// A type, not an interface: shard results travel through the vault as JSON objects.
export type ShreddedKey = {
  readonly key: string;
  readonly cells: number;
  readonly rows: number;
};

/** How many destroyed keys the summary line names before "… and N more". */
const SHREDDED_KEYS_NAMED = 5;

/** The shredded keys of several shards as one list: per key, summed, in byte order. */
function mergeShreddedKeys(lists: readonly (readonly ShreddedKey[] | undefined)[]): ShreddedKey[] {
  const byKey = new Map<string, { cells: number; rows: number }>();
  for (const list of lists) {
    for (const k of list ?? []) {
      const seen = byKey.get(k.key) ?? { cells: 0, rows: 0 };
      byKey.set(k.key, { cells: seen.cells + k.cells, rows: seen.rows + k.rows });
    }
  }
  return [...byKey].map(([key, seen]) => ({ key, ...seen })).sort((a, b) => Buffer.compare(Buffer.from(a.key), Buffer.from(b.key)));
}

/**
 * One warning for every cell left out because a key it needs was destroyed: cells, rows,
 * how many keys, the first few key ids and "… and N more". A retention shred destroys
 * hundreds of keys; the full list is in the result.
 */
function logShredded(log: Logger, keys: readonly ShreddedKey[]): void {
  if (keys.length === 0) return;
  const named = keys.slice(0, SHREDDED_KEYS_NAMED).map((k) => k.key);
  log.warn(
    { cells: keys.reduce((n, k) => n + k.cells, 0), rows: keys.reduce((n, k) => n + k.rows, 0), keys: keys.length, firstKeys: named, alsoInResult: true },
    shreddedSummary(keys),
  );
}

/** The text of {@link logShredded}'s line; '' for no keys. */
export function shreddedSummary(keys: readonly ShreddedKey[]): string {
  if (keys.length === 0) return '';
  const cells = keys.reduce((n, k) => n + k.cells, 0);
  const rows = keys.reduce((n, k) => n + k.rows, 0);
  const named = keys.slice(0, SHREDDED_KEYS_NAMED).map((k) => k.key);
  const more = keys.length - named.length;
  const what = keys.length === 1 ? 'a destroyed key they need' : `${keys.length} destroyed keys they need`;
  return `${cells} cells (${rows} rows) not backed up: ${what} (${named.join(', ')}${more > 0 ? ` … and ${more} more` : ''}); erased data is still in the chat store`;
}

/** What a run (or one shard of it) wrote. */
interface WriteOutcome {
  readonly shreddedKeys: ShreddedKey[];
  readonly cellsRead: number;
  readonly cellsWritten: number;
  readonly cellsShreddedRead: number;
  readonly bytesStored: number;
  readonly segmentsRead: number;
  readonly segmentsWritten: number;
  readonly packs: number;
  readonly keysCreated: number;
  readonly encapsulations: number;
  readonly blobs: BlobTotals;
  readonly findings: BlobFinding[];
}

const BlobFindingSchema = z.strictObject({
  table: z.string(),
  segment: z.string(),
  store: z.string(),
  primaryKey: z.record(z.string(), z.string()),
  location: z.string(),
  kind: z.enum(['missing', 'unreadable', 'escapes']),
  problem: z.string(),
});

const WriteOutcomeSchema = z.strictObject({
  blobs: z
    .strictObject({ written: z.number().int(), reused: z.number().int(), shredded: z.number().int(), findings: z.number().int(), bytesPlain: z.number().int() })
    .default({ written: 0, reused: 0, shredded: 0, findings: 0, bytesPlain: 0 }),
  findings: z.array(BlobFindingSchema).default([]),
  shreddedKeys: z.array(z.strictObject({ key: z.string(), cells: z.number().int().nonnegative(), rows: z.number().int().nonnegative() })).default([]),
  cellsRead: z.number().int().nonnegative(),
  cellsWritten: z.number().int().nonnegative(),
  cellsShreddedRead: z.number().int().nonnegative(),
  bytesStored: z.number().int().nonnegative(),
  segmentsRead: z.number().int().nonnegative(),
  segmentsWritten: z.number().int().nonnegative(),
  packs: z.number().int().nonnegative(),
  keysCreated: z.number().int().nonnegative(),
  encapsulations: z.number().int().nonnegative(),
});

/**
 * Plans, reads, seals and records every table of `c.tables` (or of its shard's tenants),
 * and writes the changed segments. Memory holds one batch of cells and one segment's cell
 * list at a time. Throws on the first problem, after dropping the run's secrets and
 * abandoning its unfinished uploads.
 */
async function writeTables(c: WriteContext): Promise<WriteOutcome> {
  const { options, run, digestKey, putOptions } = c;
  const { vault, store } = options;
  const snapshotId = run.id;
  const packs = new PackWriter(store, {
    targetBytes: options.packSizeBytes,
    beforeUpload: (key) => vault.recordStoreObjects(store.description, [{ key, kind: 'pack', snapshotId }]),
    ...putOptions,
  });
  const keys = new Encapsulator(vault, c.masterRecipient, snapshotId, options.observeSecrets, options.postQuantum === true);
  const totals = { read: 0, rowsRead: 0, bytesRead: 0, written: 0, shredded: 0, bytesStored: 0, segmentsRead: 0, segmentsWritten: 0, rowsPlanned: 0, tablesPlanned: 0 };
  /** Cells left out because a key they need is destroyed, per destroyed key (logged once, summed up). */
  const shreddedByKey = new Map<string, { cells: number; rows: number }>();
  let pending = { copies: [] as NewCellCopy[], superseded: [] as string[], fingerprints: [] as { copyId: string; fingerprint: string }[] };
  // Cell rows go to the vault while the next batch is read and sealed: one batch in flight.
  let recording: Promise<void> = Promise.resolve();
  const flushRows = async (): Promise<void> => {
    // New copies name their tuples (recorded in the same transaction, or by an earlier one,
    // committed before this one starts) and encapsulations (stored when first drawn).
    const cellKeys = keys.takeTupleFacts();
    const batch = pending;
    if (batch.copies.length + batch.superseded.length + batch.fingerprints.length + cellKeys.length === 0) return;
    pending = { copies: [], superseded: [], fingerprints: [] };
    await recording;
    recording = vault.recordCopyChanges(run, { ...batch, cellKeys }).then(() => failpoint('backup.after-cells'));
    recording.catch(() => undefined);
  };
  const pendingCount = (): number => pending.copies.length + pending.superseded.length + pending.fingerprints.length;

  // Segment objects upload a few at a time; each is recorded in the vault once stored.
  const uploads = new Set<Promise<void>>();
  let uploadError: Error | undefined;
  /** Starts `work` once fewer than SEGMENT_UPLOADS run; returns (wrapped, not awaited) its completion. */
  const startUpload = async (work: () => Promise<void>): Promise<{ done: Promise<void> }> => {
    while (uploads.size >= SEGMENT_UPLOADS) await Promise.race(uploads);
    if (uploadError !== undefined) throw uploadError;
    const p: Promise<void> = work()
      .catch((err: unknown) => {
        uploadError ??= err instanceof Error ? err : new Error(String(err));
      })
      .finally(() => uploads.delete(p));
    uploads.add(p);
    return { done: p };
  };
  const drainUploads = async (): Promise<void> => {
    await Promise.all(uploads);
    if (uploadError !== undefined) throw uploadError;
  };
  const ordered = c.tables;
  /** Segments of each table whose rows are all gone: their blob segments go too. */
  const goneByTable = new Map<string, readonly SegmentRecord[]>();
  const blobTotals: BlobTotals = { written: 0, reused: 0, shredded: 0, findings: 0, bytesPlain: 0 };
  const findings: BlobFinding[] = [];
  const blobSources = new Map<string, BlobSource>();
  const inShard = (tenant: string | null): boolean => c.shard === undefined || c.shard.of <= 1 || shardOf(tenant, c.shard.of) === c.shard.index;

  /**
   * Decides what of table `index` to read, from fingerprints the server computes in the
   * snapshot: segments whose fingerprint is unchanged are referenced as they are; in the
   * others, cells whose fingerprint changed are read, and copies of cells that are gone
   * are superseded. Nothing of the rows themselves leaves the server here.
   *
   * On a full read every segment is read, so the server's per-segment fingerprints are all
   * it needs. Otherwise one pass gives the fingerprint of every cell, in segment order: a
   * segment's is the sum of its cells', so unchanged segments are recognised without a
   * second scan, and only the changed segments' cells are compared with the vault.
   */
  const planTable = async (index: number): Promise<TablePlan> => {
    const table = ordered[index];
    const reader = c.readers[index % c.readers.length];
    if (table === undefined || reader === undefined) throw new LetheError(ErrorCode.INTERNAL, `no table ${index}`);
    if (c.checkOrphans) await checkOrphans(reader, options.mapping, table.name);
    const tStart = performance.now();
    const dataClass = classOf(options.mapping, table.name);
    const fpPrefix = fingerprintPrefix(table.name, table.copyColumns);
    const priorSegments = c.hasPrevious ? await vault.currentSegments(run, table.name) : new Map<string, SegmentRecord>();
    const segments = new Map<string, SegmentState>();
    const present = new Set<string>();
    const digestColumns = new Set(table.digestColumns);
    /** Records a segment the server has now; true when it changed (or is new). */
    const sawSegment = (tenant: string | null, period: string, fingerprint: RowFingerprint): boolean => {
      const id = segmentId(table.name, tenant, period);
      present.add(id);
      const keyed = keyedFingerprint(digestKey, fpPrefix, id, fingerprint);
      const prior = priorSegments.get(id);
      if (!c.fullRead && prior?.fingerprint != null && equalConstantTime(prior.fingerprint, keyed)) return false;
      segments.set(id, { id, tenant, period, keyed, prior, superseded: 0, shredded: 0 });
      return true;
    };
    /** Segments (of this shard's tenants) with no rows left: the snapshot leaves them, and their cells, out. */
    const leaveGone = async (): Promise<void> => {
      const gone = [...priorSegments.values()].filter((s) => !present.has(s.segment) && inShard(s.tenant));
      goneByTable.set(table.name, gone);
      if (gone.length > 0) {
        await vault.recordSegmentChanges(run, { added: [], superseded: gone.map((s) => s.key), fingerprints: [], supersedeCopiesOf: gone.map((s) => s.segment) });
      }
      totals.segmentsRead += segments.size;
    };

    if (c.fullRead) {
      const segmentSql = buildFingerprintQuery(options.mapping, table.name, table.copyColumns, options.granularity, 'segment', undefined, c.shard, digestColumns);
      let rows = 0;
      for await (const row of fingerprintRows(reader, segmentSql, 'segment', dataClass)) {
        if (sawSegment(row.tuple.tenant, row.tuple.period, row.fingerprint)) rows += row.fingerprint.rows;
      }
      await leaveGone();
      const read: TablePlan['read'] = segments.size === 0 ? 'none' : segments.size === present.size ? 'all' : { kind: 'segments', keys: [...segments.values()].map((s) => segmentFilterKey(s.tenant, s.period)) };
      return { table, reader, segments, read, rows, timings: { segmentsMs: Math.round(performance.now() - tStart), cellsMs: 0, compareMs: 0 } };
    }

    // Cell fingerprints of the changed segments, compared a batch at a time with the
    // vault's current copies: changed and new cells are read, gone ones superseded.
    const changedCells: string[] = [];
    const cut = { tooMany: false };
    /** Rows of the changed cells, and of the changed segments whole (read instead when too many cells changed). */
    const rowsOf = { cells: 0, segments: 0 };
    const superseded: string[] = [];
    let compareMs = 0;
    let batch: FingerprintRow[] = [];
    const compare = async (): Promise<void> => {
      const rows = batch;
      batch = [];
      if (rows.length === 0) return;
      const tCompare = performance.now();
      const ids = [...new Set(rows.map((r) => segmentId(table.name, r.tuple.tenant, r.tuple.period)))];
      const copies = new Map<string, CurrentCopy>();
      for (const copy of await vault.currentCopiesOfSegments(run, ids)) copies.set(copy.id, copy);
      for (const row of rows) {
        const id = cellId(table.name, row.tuple);
        const copy = copies.get(id);
        copies.delete(id);
        const keyed = keyedFingerprint(digestKey, fpPrefix, id, row.fingerprint);
        if (copy?.fingerprint != null && equalConstantTime(copy.fingerprint, keyed)) continue;
        rowsOf.cells += row.fingerprint.rows;
        if (changedCells.length < MAX_CELL_FILTER) changedCells.push(cellFilterKey(row.tuple));
        else cut.tooMany = true;
      }
      // What is left was not in the chat store: deleted rows.
      for (const copy of copies.values()) {
        superseded.push(copy.copyId);
        const state = segments.get(copy.segment);
        if (state !== undefined) state.superseded += 1;
      }
      if (superseded.length > 0) {
        await vault.recordCopyChanges(run, { copies: [], superseded: superseded.splice(0), fingerprints: [], cellKeys: [] });
      }
      compareMs += performance.now() - tCompare;
    };
    // One segment's cells at a time (the query sorts by tenant and period first).
    let current: { tenant: string | null; period: string; cells: FingerprintRow[]; sum: RowFingerprint } | null = null;
    const endSegment = async (): Promise<void> => {
      if (current === null) return;
      const done = current;
      current = null;
      if (!sawSegment(done.tenant, done.period, done.sum)) return;
      rowsOf.segments += done.sum.rows;
      batch.push(...done.cells);
      if (batch.length >= FINGERPRINT_BATCH) await compare();
    };
    const cellSql = buildFingerprintQuery(options.mapping, table.name, table.copyColumns, options.granularity, 'cell', undefined, c.shard, digestColumns);
    for await (const row of fingerprintRows(reader, cellSql, 'cell', dataClass)) {
      if (current === null || current.tenant !== row.tuple.tenant || current.period !== row.tuple.period) {
        await endSegment();
        current = { tenant: row.tuple.tenant, period: row.tuple.period, cells: [], sum: new RowFingerprint() };
      }
      current.cells.push(row);
      current.sum.merge(row.fingerprint.rows, row.fingerprint.sums());
    }
    await endSegment();
    await compare();
    await leaveGone();
    failpoint('backup.after-plan');
    const timings = { segmentsMs: 0, cellsMs: Math.round(performance.now() - tStart - compareMs), compareMs: Math.round(compareMs) };
    if (segments.size === 0) return { table, reader, segments, read: 'none', rows: 0, timings };
    const segmentFilter: CellFilter | 'all' =
      segments.size === present.size ? 'all' : { kind: 'segments', keys: [...segments.values()].map((s) => segmentFilterKey(s.tenant, s.period)) };
    return cut.tooMany
      ? { table, reader, segments, read: segmentFilter, rows: rowsOf.segments, timings }
      : { table, reader, segments, read: { kind: 'cells', keys: changedCells }, rows: rowsOf.cells, timings };
  };

  /** Reads, seals and records the cells a plan names. */
  const readTable = async (plan: TablePlan, index: number, sink: SegmentSink, whole: Set<string>): Promise<void> => {
    const { table, reader } = plan;
    if (plan.read === 'none') return;
    // Segments read whole are listed from what this read produced, as each one ends (the
    // rows come in segment order); the others, from the vault, once the table is done.
    const readsWhole = plan.read === 'all' || plan.read.kind === 'segments';
    let open: { state: SegmentState; entries: CellEntry[]; written: number; reused: string[] } | null = null;
    const closeOpen = async (): Promise<void> => {
      if (open === null) return;
      const done = open;
      open = null;
      await sink.wholeSegment(done.state, done.entries, done.written, done.reused);
    };
    const sql = buildCellQuery(options.mapping, table.name, table.copyColumns, options.granularity, plan.read === 'all' ? undefined : plan.read, c.shard, new Set(table.digestColumns));
    const copy: CopyStream = reader.query(pgCopyStreams.to(`COPY (${sql}) TO STDOUT`));
    const writer = new CellWriter({
      table: table.name,
      columns: table.copyColumns,
      packs,
      keys,
      digestKey,
      // A current copy carries everything the writer compares with (a PreviousCell).
      previous: async (cellIds): Promise<ReadonlyMap<string, PreviousCell>> => (c.hasPrevious ? vault.currentCopies(run, cellIds) : new Map()),
      bufferBytes: options.cellBufferBytes,
      ...(options.signal === undefined ? {} : { signal: options.signal }),
    });
    const stateOf = (tuple: CellTuple): SegmentState => {
      const state = plan.segments.get(segmentId(table.name, tuple.tenant, tuple.period));
      if (state === undefined) throw new LetheError(ErrorCode.INTERNAL, `table ${table.name}: a cell of a segment the plan does not read`);
      return state;
    };
    const record = async (outcomes: readonly CellOutcome[]): Promise<void> => {
      for (const outcome of outcomes) {
        const state = stateOf(outcome.tuple);
        totals.read += 1;
        if (readsWhole && open?.state !== state) {
          await closeOpen();
          open = { state, entries: [], written: 0, reused: [] };
          whole.add(state.id);
        }
        if (open !== null && outcome.kind === 'written') {
          open.entries.push(outcome.entry);
          open.written += 1;
        } else if (open !== null && outcome.kind === 'reused') {
          open.entries.push(outcome.entry);
          open.reused.push(outcome.prior.copyId);
        }
        if (outcome.kind === 'shredded') {
          totals.rowsRead += outcome.rows;
          totals.shredded += 1;
          state.shredded += 1;
          const seen = shreddedByKey.get(outcome.destroyedKey) ?? { cells: 0, rows: 0 };
          seen.cells += 1;
          seen.rows += outcome.rows;
          shreddedByKey.set(outcome.destroyedKey, seen);
          if (outcome.prior !== undefined) {
            pending.superseded.push(outcome.prior.copyId);
            state.superseded += 1;
          }
        } else if (outcome.kind === 'reused') {
          totals.rowsRead += outcome.entry.rows;
          totals.bytesRead += outcome.entry.bytesPlain;
          if (outcome.prior.fingerprint === null || !equalConstantTime(outcome.prior.fingerprint, outcome.fingerprint)) {
            pending.fingerprints.push({ copyId: outcome.prior.copyId, fingerprint: outcome.fingerprint });
          }
        } else {
          const { entry } = outcome;
          totals.rowsRead += entry.rows;
          totals.bytesRead += entry.bytesPlain;
          totals.written += 1;
          totals.bytesStored += entry.length;
          recordWritten(pending, state, outcome);
        }
        if (pendingCount() >= CELL_ROWS_BATCH) await flushRows();
        if (totals.read % 500 === 0) {
          options.onProgress?.({ table: table.name, tablesDone: index, tables: ordered.length, cells: totals.read, rows: totals.rowsRead, bytesPlain: totals.bytesRead, rowsPlanned: totals.rowsPlanned, tablesPlanned: totals.tablesPlanned });
        }
      }
    };
    for await (const cell of groupCells(copy, classOf(options.mapping, table.name))) {
      throwIfAborted(options.signal, 'backup');
      await record(await writer.add(cell));
    }
    await record(await writer.flush());
    await closeOpen();
    // Changed segments the read found no row of (cannot happen for segments the server
    // listed, but a segment read whole must never fall back to the vault's old list).
    if (readsWhole) {
      for (const state of plan.segments.values()) {
        if (!whole.has(state.id)) {
          whole.add(state.id);
          await sink.wholeSegment(state, [], 0, []);
        }
      }
    }
  };

  /**
   * Writes the new segment objects of a table whose cells are recorded: each changed
   * segment lists its cells as they are now. One in which nothing turned out changed
   * keeps its current object (with the new fingerprint).
   */
  const makeSegmentSink = (plan: TablePlan): SegmentSink => {
    const { table } = plan;
    const kept: { key: string; fingerprint: string | null }[] = [];
    const superseded: string[] = [];
    const added: Omit<SegmentRecord, 'snapshotId'>[] = [];
    // Segments are recorded as objects before their uploads start, a batch at a time, and
    // in the vault's tree once the table's uploads are done, in one transaction.
    let toWrite: { state: SegmentState; entries: CellEntry[]; key: string }[] = [];
    let toWriteCells = 0;
    const tableUploads: Promise<void>[] = [];
    const flushWrites = async (): Promise<void> => {
      const batch = toWrite;
      toWrite = [];
      toWriteCells = 0;
      if (batch.length === 0) return;
      await vault.recordStoreObjects(store.description, batch.map((b) => ({ key: b.key, kind: 'segment' as const, snapshotId })));
      for (const { state, entries, key } of batch) {
        const started = await startUpload(async () => {
          const segment = new SegmentWriter({ id: state.id, table: table.name, tenant: state.tenant, period: state.period, snapshot: snapshotId });
          const put = store.put(key, segment.stream, putOptions);
          put.catch(() => undefined);
          try {
            for (const entry of entries) await segment.cell(entry);
            segment.finish();
          } catch (err) {
            segment.abort(err instanceof Error ? err : new Error(String(err)));
            throw err;
          }
          const stored = await put;
          totals.segmentsWritten += 1;
          added.push({
            key,
            segment: state.id,
            table: table.name,
            tenant: state.tenant,
            period: state.period,
            sha256: stored.sha256,
            size: stored.size,
            cells: entries.length,
            rows: entries.reduce((n, e) => n + e.rows, 0),
            bytesPlain: entries.reduce((n, e) => n + e.bytesPlain, 0),
            shredded: state.shredded,
            packs: [...new Set(entries.map((e) => e.pack))].sort(),
            encapsulations: [...new Set(entries.map((e) => e.enc))].sort(),
            fingerprint: state.keyed,
          });
          if (state.prior !== undefined) superseded.push(state.prior.key);
        });
        tableUploads.push(started.done);
      }
    };
    /** Writes a segment's new object listing `entries`, or keeps its current one when nothing in it changed. */
    const finalizeEntries = async (state: SegmentState, entries: CellEntry[], unchanged: boolean): Promise<void> => {
      if (state.prior !== undefined && unchanged && state.shredded === state.prior.shredded) {
        kept.push({ key: state.prior.key, fingerprint: state.keyed });
        return;
      }
      if (entries.length === 0 && state.shredded === 0) {
        if (state.prior !== undefined) superseded.push(state.prior.key);
        return;
      }
      toWrite.push({ state, entries, key: newSegmentKey(randomBytes(16)) });
      toWriteCells += entries.length;
      if (toWrite.length >= SEGMENT_BATCH || toWriteCells >= SEGMENT_BATCH_CELLS) await flushWrites();
    };
    // Segments read whole: the current copies not referenced again are superseded, a batch at a time.
    let keepSegments: string[] = [];
    let keepCopies: string[] = [];
    const flushKeeps = async (): Promise<void> => {
      if (keepSegments.length === 0) return;
      const segments = keepSegments;
      const copies = keepCopies;
      keepSegments = [];
      keepCopies = [];
      await vault.supersedeCopiesExcept(run, segments, copies);
    };
    return {
      wholeSegment: async (state, entries, written, reusedCopies): Promise<void> => {
        const { prior } = state;
        const unchanged = prior !== undefined && written === 0 && reusedCopies.length === prior.cells;
        if (!unchanged || state.shredded !== prior.shredded) {
          keepSegments.push(state.id);
          keepCopies.push(...reusedCopies);
          if (keepCopies.length >= SEGMENT_BATCH_CELLS) await flushKeeps();
        }
        entries.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
        await finalizeEntries(state, entries, unchanged);
      },
      finish: async (whole: ReadonlySet<string>): Promise<void> => {
        await flushKeeps();
        // The cells of each changed segment not read whole, from the vault, a page at a time:
        // memory holds the segment being listed.
        const ids = [...plan.segments.keys()].filter((id) => !whole.has(id)).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
        for (const id of ids) {
          const state = plan.segments.get(id) as SegmentState;
          const cells: CurrentCopy[] = [];
          let after: string | null = null;
          for (;;) {
            const page = await vault.cellsOfNewSegment(run, id, after, CELLS_PAGE);
            cells.push(...page);
            const last = page.at(-1);
            if (last === undefined || page.length < CELLS_PAGE) break;
            after = last.id;
          }
          const written = cells.filter((copy) => copy.fromSeq === run.seq).length;
          const entries: CellEntry[] = cells.map((copy) => {
            if (copy.dimensionIds === undefined) throw new LetheError(ErrorCode.VAULT, `cell ${copy.id} names tuple ${copy.key}, which the vault does not record`);
            return cellEntryOf({ ...copy, reused: copy.fromSeq !== run.seq }, copy.dimensionIds);
          });
          await finalizeEntries(state, entries, written === 0 && state.superseded === 0);
        }
        await flushWrites();
        await Promise.all(tableUploads);
        if (uploadError !== undefined) throw uploadError;
        await vault.recordSegmentChanges(run, { added, superseded, fingerprints: kept });
        failpoint('backup.after-segment');
      },
    };
  };

  /**
   * Backs up the files the rows of a table with a `blob` mapping point at, as cells of its
   * companion table `<table>.blob` (docs/mapping.md). Blob segments follow their rows'
   * segments: only those whose rows' fingerprint changed are read (every one on a full
   * read), and each is read whole, one blob at a time, so memory holds one segment's cell
   * entries and one blob's buffer. A blob segment whose rows are all gone leaves the tree.
   */
  const writeBlobs = async (plan: TablePlan): Promise<void> => {
    const mapped = Object.hasOwn(options.mapping.tables, plan.table.name) ? options.mapping.tables[plan.table.name] : undefined;
    const blob = mapped?.blob;
    if (mapped === undefined || blob === undefined) return;
    const blobTable = blobTableName(plan.table.name);
    const priorSegments = c.hasPrevious ? await vault.currentSegments(run, blobTable) : new Map<string, SegmentRecord>();
    const changed = new Set([...plan.segments.values()].map((s) => segmentId(blobTable, s.tenant, s.period)));
    // Segments where the previous run met findings are read again, so a finding is never dropped silently.
    const recheckAll = c.blobRecheck?.all === true && priorSegments.size > 0;
    const recheck = [...(c.blobRecheck?.segments ?? [])].filter((id) => id.startsWith(`${blobTable}/`) && !changed.has(id));
    const gone = new Set((goneByTable.get(plan.table.name) ?? []).map((s) => segmentId(blobTable, s.tenant, s.period)));
    const states = new Map<string, SegmentState>();
    const blobPlan: TablePlan = { ...plan, table: { ...plan.table, name: blobTable }, segments: states };
    const sink = makeSegmentSink(blobPlan);
    const whole = new Set<string>();
    const stateFor = (tenant: string | null, period: string): SegmentState => {
      const id = segmentId(blobTable, tenant, period);
      let state = states.get(id);
      if (state === undefined) {
        const rowState = plan.segments.get(segmentId(plan.table.name, tenant, period));
        state = { id, tenant, period, keyed: rowState?.keyed ?? randomBytes(32).toString('hex'), prior: priorSegments.get(id), superseded: 0, shredded: 0 };
        states.set(id, state);
        whole.add(id);
      }
      return state;
    };
    if (plan.read !== 'none' || recheck.length > 0 || recheckAll) {
      let source = blobSources.get(blob.store);
      const config = options.blobStores?.[blob.store];
      if (config === undefined) {
        throw new LetheError(ErrorCode.MAPPING_INVALID, `tables.${plan.table.name}.blob.store names "${blob.store}", which is not under chatStore.blobStores: add it`);
      }
      if (source === undefined) {
        source = await openBlobSource(blob.store, config);
        blobSources.set(blob.store, source);
      }
      const writer = new BlobWriter({
        table: plan.table.name,
        primaryKeyColumns: mapped.primaryKey,
        storeName: blob.store,
        source,
        packs,
        keys,
        digestKey,
        previous: async (cellIds): Promise<ReadonlyMap<string, PreviousCell>> => (c.hasPrevious ? vault.currentCopies(run, cellIds) : new Map()),
        bufferBytes: options.cellBufferBytes,
        ...(options.signal === undefined ? {} : { signal: options.signal }),
      });
      const columns = [...new Set([...mapped.primaryKey, blob.column])];
      const recheckKeys = recheck.flatMap((id) => {
        const prior = priorSegments.get(id);
        return prior === undefined ? [] : [segmentFilterKey(prior.tenant, prior.period)];
      });
      const filter: CellFilter | undefined =
        c.fullRead || plan.read === 'all' || recheckAll
          ? undefined
          : { kind: 'segments', keys: [...[...plan.segments.values()].map((s) => segmentFilterKey(s.tenant, s.period)), ...recheckKeys] };
      const sql = buildCellQuery(options.mapping, plan.table.name, columns, options.granularity, filter, c.shard);
      const copy: CopyStream = plan.reader.query(pgCopyStreams.to(`COPY (${sql}) TO STDOUT`));
      const dataClass = classOf(options.mapping, plan.table.name);
      let open: { state: SegmentState; entries: CellEntry[]; written: number; reused: string[] } | null = null;
      const closeOpen = async (): Promise<void> => {
        if (open === null) return;
        const done = open;
        open = null;
        await sink.wholeSegment(done.state, done.entries, done.written, done.reused);
      };
      const record = async (state: SegmentState, outcome: BlobOutcome): Promise<void> => {
        if (open?.state !== state) {
          await closeOpen();
          open = { state, entries: [], written: 0, reused: [] };
        }
        switch (outcome.kind) {
          case 'none':
            return;
          case 'finding':
            blobTotals.findings += 1;
            if (findings.length < MAX_FINDINGS_LISTED) findings.push(outcome.finding);
            return;
          case 'shredded':
            blobTotals.shredded += 1;
            state.shredded += 1;
            if (outcome.prior !== undefined) {
              pending.superseded.push(outcome.prior.copyId);
              state.superseded += 1;
            }
            return;
          case 'reused':
            blobTotals.reused += 1;
            blobTotals.bytesPlain += outcome.entry.bytesPlain;
            open.entries.push(outcome.entry);
            open.reused.push(outcome.prior.copyId);
            return;
          case 'written': {
            const { entry } = outcome;
            blobTotals.written += 1;
            blobTotals.bytesPlain += entry.bytesPlain;
            totals.written += 1;
            totals.bytesStored += entry.length;
            open.entries.push(entry);
            open.written += 1;
            recordWritten(pending, state, outcome);
          }
        }
      };
      // Rows wait in small batches so that their current copies are looked up with one query.
      let queued: { state: SegmentState; row: BlobRow }[] = [];
      const drain = async (): Promise<void> => {
        const batch = queued;
        queued = [];
        if (batch.length === 0) return;
        const outcomes = await writer.writeAll(batch.map((q) => q.row));
        for (const [i, outcome] of outcomes.entries()) await record((batch[i] as (typeof batch)[number]).state, outcome);
        if (pendingCount() >= CELL_ROWS_BATCH) await flushRows();
      };
      const pkCount = mapped.primaryKey.length;
      const locationAt = 5 + columns.indexOf(blob.column);
      for await (const line of copyLines(copy)) {
        throwIfAborted(options.signal, 'backup');
        const fields = line.toString('utf8', 0, line.length - 1).split('\t').map(decodeCopyField);
        const period = fields[1];
        if (period == null || fields.length !== 5 + columns.length) throw new LetheError(ErrorCode.INTERNAL, `table ${plan.table.name}: the blob query returned a malformed row`);
        const tuple: CellTuple = { tenant: fields[0] ?? null, class: dataClass, period, author: fields[2] ?? null, conversation: fields[3] ?? null };
        const primaryKey = fields.slice(5, 5 + pkCount).map((v) => v ?? '');
        queued.push({ state: stateFor(tuple.tenant, period), row: { tuple, primaryKey, location: fields[locationAt] ?? null } });
        if (queued.length >= BLOB_BATCH) await drain();
      }
      await drain();
      await closeOpen();
    }
    // Blob segments whose rows were read and had no file, or whose rows are gone, leave the tree.
    for (const [id, prior] of priorSegments) {
      if (states.has(id) || !inShard(prior.tenant)) continue;
      if (c.fullRead || recheckAll || changed.has(id) || gone.has(id) || recheck.includes(id)) {
        const state = stateFor(prior.tenant, prior.period);
        await sink.wholeSegment(state, [], 0, []);
      }
    }
    await flushRows();
    await recording;
    await sink.finish(whole);
  };

  try {
    let next: Promise<TablePlan> | undefined = ordered.length > 0 ? planTable(0) : undefined;
    next?.catch(() => undefined);
    for (const [index, table] of ordered.entries()) {
      // For tests that must catch a run between two tables (it holds its tables' locks, so a
      // lock can no longer park it): `LETHE_PAUSEPOINTS=backup.table.<name>:MS`.
      await pausepoint(`backup.table.${table.name}`, options.signal);
      throwIfAborted(options.signal, 'backup');
      const t0 = performance.now();
      const plan = await (next as Promise<TablePlan>);
      totals.rowsPlanned += plan.rows;
      totals.tablesPlanned += 1;
      options.onProgress?.({ table: table.name, tablesDone: index, tables: ordered.length, cells: totals.read, rows: totals.rowsRead, bytesPlain: totals.bytesRead, rowsPlanned: totals.rowsPlanned, tablesPlanned: totals.tablesPlanned });
      // The next table's fingerprints are computed on the other reader meanwhile.
      next = index + 1 < ordered.length ? planTable(index + 1) : undefined;
      next?.catch(() => undefined);
      const t1 = performance.now();
      const sink = makeSegmentSink(plan);
      const whole = new Set<string>();
      await readTable(plan, index, sink, whole);
      await flushRows();
      await recording;
      const t2 = performance.now();
      await sink.finish(whole);
      await writeBlobs(plan);
      const t3 = performance.now();
      options.onProgress?.({ table: table.name, tablesDone: index + 1, tables: ordered.length, cells: totals.read, rows: totals.rowsRead, bytesPlain: totals.bytesRead, rowsPlanned: totals.rowsPlanned, tablesPlanned: totals.tablesPlanned });
      c.log.info(
        { table: table.name, segmentsChanged: plan.segments.size, cellsRead: totals.read, waitPlanMs: Math.round(t1 - t0), plan: plan.timings, readMs: Math.round(t2 - t1), segmentsMs: Math.round(t3 - t2), heapMb: Math.round(process.memoryUsage().heapUsed / 1e6) },
        'table done',
      );
    }
    const packsWritten = await packs.close();
    await drainUploads();
    const shreddedKeys = mergeShreddedKeys([[...shreddedByKey].map(([key, seen]) => ({ key, ...seen }))]);
    logShredded(c.log, shreddedKeys);
    const encapsulations = keys.created().length;
    keys.forget();
    for (const source of blobSources.values()) await source.close();
    if (blobTotals.findings > 0) {
      c.log.warn({ findings: blobTotals.findings, alsoInResult: true }, 'files outside the database could not be backed up (missing, unreadable or outside their store): see the result\'s findings');
    }
    return {
      blobs: blobTotals,
      findings,
      cellsRead: totals.read,
      cellsWritten: totals.written,
      cellsShreddedRead: totals.shredded,
      shreddedKeys,
      bytesStored: totals.bytesStored,
      segmentsRead: totals.segmentsRead,
      segmentsWritten: totals.segmentsWritten,
      packs: packsWritten.length,
      keysCreated: keys.dimensionKeysCreated,
      encapsulations,
    };
  } catch (err) {
    keys.forget();
    for (const source of blobSources.values()) await source.close().catch(() => undefined);
    await packs.abort();
    await Promise.allSettled(uploads);
    throw err;
  }
}

/** The blob segments a previous snapshot's findings name (from its stats in the vault). */
function blobRecheckOf(stats: Readonly<Record<string, unknown>>): { segments: Set<string>; all: boolean } {
  const listed = Array.isArray(stats['findings']) ? (stats['findings'] as unknown[]) : [];
  const segments = new Set<string>();
  for (const f of listed) {
    const segment = (f as { segment?: unknown } | null)?.segment;
    if (typeof segment === 'string') segments.add(segment);
  }
  const blobs = stats['blobs'] as { findings?: unknown } | undefined;
  const counted = typeof blobs?.findings === 'number' ? blobs.findings : 0;
  return { segments, all: counted > segments.size && counted > listed.length };
}

/** Refuses (MAPPING_INVALID) a table whose rows the mapping's joins would drop or leave without a tenant. */
async function checkOrphans(reader: pg.Client, mapping: Mapping, table: string): Promise<void> {
  const orphans = await reader.query<{ dropped: string; tenantless: string }>(buildOrphanCheckQuery(mapping, table));
  const dropped = Number(orphans.rows[0]?.dropped ?? 0);
  const tenantless = Number(orphans.rows[0]?.tenantless ?? 0);
  if (dropped > 0 || tenantless > 0) {
    throw new LetheError(
      ErrorCode.MAPPING_INVALID,
      `table ${table}: ${dropped} rows have no match for the mapping's joins and ${tenantless} rows have no ` +
        'tenant; they would be lost or misfiled, so nothing was backed up. Fix the data, or the mapping ' +
        '(docs/mapping.md), and run again',
    );
  }
}

/** The tables a backup reads, with the COPY columns it planned from the catalogs. */
interface TableLock {
  readonly schema: string;
  readonly tables: readonly TableSpec[];
}

function tableLock(options: BackupOptions, p: Prepared): TableLock {
  return { schema: options.mapping.schema, tables: p.tables };
}

/**
 * Takes ACCESS SHARE locks on every table the backup reads, as the first statement of the
 * snapshot's transaction (before its snapshot is taken), and held until it ends, as pg_dump
 * does: a table-rewriting ALTER TABLE (a type change) or TRUNCATE committed while the
 * backup runs would otherwise make a table the backup has not reached yet look empty to its
 * older snapshot, and the snapshot would silently hold none of its rows. A chat-store
 * migration waits for the backup instead (give migrations a lock_timeout). Then checks that
 * every table still has the COPY columns the run planned from the catalogs a moment before:
 * a change in between would mix column lists, so the run stops and asks to be run again.
 */
async function lockTables(client: pg.Client, lock: TableLock): Promise<void> {
  if (lock.tables.length === 0) return;
  const names = lock.tables.map((t) => `${quoteIdent(lock.schema)}.${quoteIdent(t.name)}`);
  await client.query(`LOCK TABLE ${names.join(', ')} IN ACCESS SHARE MODE`);
  const { rows } = await client.query<{ name: string; columns: string[] }>(
    `SELECT c.relname AS name, array_agg(a.attname::text ORDER BY a.attnum) AS columns
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
       JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
      WHERE n.nspname = $1 AND c.relname = ANY($2::text[])
      GROUP BY c.relname`,
    [lock.schema, lock.tables.map((t) => t.name)],
  );
  const now = new Map(rows.map((r) => [r.name, r.columns.join(',')]));
  const moved = lock.tables.filter((t) => now.get(t.name) !== t.copyColumns.join(','));
  if (moved.length > 0) {
    throw new LetheError(
      ErrorCode.DATABASE,
      `the columns of ${moved.map((t) => t.name).join(', ')} changed while the backup started (a migration of the chat store); nothing was kept: run the backup again`,
    );
  }
}

/** The chat store's consistent point, as the first reader saw it. */
interface SourcePoint {
  readonly now: Date;
  readonly snap: string;
  readonly version: string;
  readonly exported: string;
}

/**
 * Opens `count` read-only connections in one snapshot: the first begins a REPEATABLE READ
 * transaction and exports its snapshot (unless `exported` names one to import), the others
 * import it, so all see exactly the same rows. Returns them with the consistent point.
 */
async function openReaders(url: string, count: number, exported?: string, lock?: TableLock): Promise<{ readers: pg.Client[]; source: SourcePoint | null }> {
  const readers = Array.from({ length: count }, () => {
    const client = new pg.Client(pgClientConfig(url, { application_name: 'lethe backup' }));
    client.on('error', () => undefined);
    return client;
  });
  try {
    await Promise.all(readers.map((client) => client.connect()));
    let source: SourcePoint | null = null;
    let snapshot = exported;
    for (const client of readers) {
      await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
      if (snapshot === undefined && lock !== undefined) await lockTables(client, lock);
      // The id is the server's own output (or a plan's, validated), still quoted as a literal, never pasted.
      if (snapshot !== undefined) await client.query(`SET TRANSACTION SNAPSHOT ${client.escapeLiteral(snapshot)}`);
      for (const statement of copySessionStatements()) await client.query(statement);
      if (snapshot === undefined) {
        const point = await client.query<SourcePoint>(
          'SELECT now() AS now, pg_current_snapshot()::text AS snap, current_setting($1) AS version, pg_export_snapshot() AS exported',
          ['server_version'],
        );
        source = point.rows[0] ?? null;
        if (source === null) throw new LetheError(ErrorCode.INTERNAL, 'no snapshot point returned');
        snapshot = source.exported;
      }
    }
    return { readers, source };
  } catch (err) {
    await Promise.all(readers.map((client) => client.end().catch(() => undefined)));
    throw err;
  }
}

/** Everything a run decides before writing anything, shared by a single backup and a coordinator. */
interface Prepared {
  readonly tables: (TableInfo & TableSpec)[];
  readonly schema: SchemaDescription;
  readonly masterRecipient: string;
  readonly previous: CompleteSnapshot | null;
  readonly fullRead: boolean;
  readonly sinceFullRead: number;
  readonly createdAt: Date;
  readonly run: RunningSnapshot;
  readonly lock: ObjectLock | undefined;
  readonly putOptions: PutOptions;
}

/** Cleans up after dead runs, checks the mapping, reads the schema, and begins the snapshot. */
async function prepare(options: BackupOptions, now: () => Date): Promise<Prepared> {
  const { vault, store, log } = options;
  const abandoned = await vault.abandonStaleSnapshots();
  if (abandoned.length > 0) log.warn({ abandoned }, 'marked interrupted snapshots as abandoned');
  // Housekeeping only: leftovers of interrupted uploads are invisible and never referenced.
  // A store that cannot list them (s3rver, a put-only credential) must not stop the backup.
  try {
    let cleaned = 0;
    for (const prefix of ['packs/', 'segments/']) cleaned += await store.cleanupIncomplete(prefix);
    if (cleaned > 0) log.info({ cleaned }, 'removed leftovers of interrupted uploads');
  } catch (err) {
    if (!isLetheError(err, ErrorCode.STORAGE)) throw err;
    log.warn({ err }, 'could not remove leftovers of interrupted uploads; carrying on (expire them with a bucket lifecycle rule)');
  }
  const masterRecipient = await vault.getMasterRecipient();
  const { tables } = await checkCoverage(options.chatStoreUrl, options.mapping);
  const schema = await readSchema(options.chatStoreUrl, tables.map((t) => t.name), options.mapping.schema);
  // Cells are referenced only from a snapshot in this same store: after a switch of bucket,
  // prefix or backend the old packs are not here, so the first backup is a full one.
  const previous = await vault.latestCompleteSnapshot(store.description);
  // A full read re-reads and re-digests every row: the first snapshot, the first after
  // snapshots without segments (an older lethe), every backup.fullEvery-th, or on request.
  const previousSince = typeof previous?.stats['sinceFullRead'] === 'number' ? previous.stats['sinceFullRead'] : null;
  const fullRead =
    options.fullRead === true || previousSince === null || (options.fullEvery !== undefined && previousSince + 1 >= options.fullEvery);
  const sinceFullRead = fullRead ? 0 : previousSince + 1;
  const createdAt = now();
  const snapshotId = newSnapshotId(createdAt);
  const begun = await vault.beginSnapshot({ id: snapshotId, previousId: previous?.id ?? null, runOwner: `${hostname()}:${process.pid}`, store: store.description });
  const lock: ObjectLock | undefined =
    options.lockDays === undefined ? undefined : { mode: options.lockDays.mode, retainUntil: new Date(createdAt.getTime() + options.lockDays.days * 86_400_000) };
  const byteaColumns = new Map(schema.tables.map((t) => [t.name, t.columns.filter((col) => col.type === 'bytea').map((col) => col.name)]));
  return {
    tables: [...tables].sort((a, b) => a.name.localeCompare(b.name)).map((t) => ({ ...t, digestColumns: byteaColumns.get(t.name) ?? [] })),
    schema,
    masterRecipient,
    previous,
    fullRead,
    sinceFullRead,
    createdAt,
    run: { id: snapshotId, seq: begun.seq, store: store.description },
    lock,
    putOptions: {
      ...(lock === undefined ? {} : { lock }),
      ...(options.signal === undefined ? {} : { signal: options.signal }),
    },
  };
}

function headerOf(p: Prepared, options: BackupOptions, source: SourcePoint): SnapshotHeader {
  return {
    id: p.run.id,
    createdAt: p.createdAt.toISOString(),
    previous: p.previous === null ? null : { id: p.previous.id, sha256: p.previous.manifestSha256 },
    source: {
      databaseTime: source.now.toISOString(),
      transactionSnapshot: source.snap,
      serverVersion: source.version,
    },
    granularity: options.granularity,
    masterRecipient: p.masterRecipient,
    tables: p.tables.map((t) => ({ name: t.name, class: t.class, columns: [...t.copyColumns] })),
  };
}

/**
 * The snapshot's schema summary, and whether it differs from the previous snapshot's (as
 * that backup recorded it in the vault; `lethe verify` lists what changed).
 */
function schemaOutcome(p: Prepared): { schema: SchemaSummary; schemaChanged: boolean | null } {
  const schema = summarizeSchema(p.schema);
  const recorded = p.previous?.stats['schema'];
  const previousId = typeof recorded === 'object' && recorded !== null && !Array.isArray(recorded) ? recorded['id'] : undefined;
  return { schema, schemaChanged: typeof previousId === 'string' ? previousId !== schema.id : null };
}

/**
 * Ends a run whose tables are all written: leaves out tables no longer backed up, lists
 * every segment the snapshot holds in the signed manifest (the commit point), marks the
 * snapshot complete, and appends and exports the audit entry.
 */
/**
 * An encapsulation's manifest entry: its public values as the vault holds them, with, for
 * kem x25519-mlkem768, every ML-KEM ciphertext (by dimension key id, byte order).
 */
async function encapsulationEntry(vault: Vault, e: Encapsulation): Promise<EncapsulationEntry> {
  const ephemeral = Buffer.from(e.ephemeral).toString('hex');
  if (e.kem === 'x25519') return { id: e.id, tenant: e.tenant, kem: e.kem, ephemeral };
  const ciphertexts: Record<string, string> = {};
  for (const [dimension, ciphertext] of await vault.listEncapsulationCiphertexts(e.id)) ciphertexts[dimension] = Buffer.from(ciphertext).toString('base64');
  return { id: e.id, tenant: e.tenant, kem: e.kem, ephemeral, ciphertexts };
}

async function finishSnapshot(options: BackupOptions, p: Prepared, header: SnapshotHeader, written: WriteOutcome, now: () => Date, started: number): Promise<BackupResult> {
  const { vault, store, signer } = options;
  const { run } = p;
  const snapshotId = run.id;
  // Tables no longer backed up (dropped from the mapping or the store) leave the tree.
  const backedUp = p.tables.flatMap((t) => (options.mapping.tables[t.name]?.blob === undefined ? [t.name] : [t.name, blobTableName(t.name)]));
  const outside = p.previous === null ? [] : await vault.currentSegmentsOutside(run, backedUp);
  if (outside.length > 0) {
    await vault.recordSegmentChanges(run, { added: [], superseded: outside.map((s) => s.key), fingerprints: [], supersedeCopiesOf: outside.map((s) => s.segment) });
  }
  failpoint('backup.after-segments');
  // The manifest: every segment the snapshot holds, its own and those it references.
  const segments = await vault.segmentsOfSnapshot(snapshotId);
  // Files outside the database are cells of `<table>.blob` (one "row" each): counted apart from rows.
  const files = { cells: 0, bytes: 0 };
  for (const s of segments) {
    if (!isBlobTable(s.table)) continue;
    files.cells += s.cells;
    files.bytes += s.bytesPlain;
  }
  const encIds = [...new Set(segments.flatMap((s) => s.encapsulations))];
  const stored = await vault.getEncapsulations(encIds);
  const lost = encIds.filter((id) => !stored.has(id));
  if (lost.length > 0) {
    throw new LetheError(ErrorCode.VAULT, `encapsulation(s) ${lost.slice(0, 3).join(', ')} that cells derive their keys from are missing from the vault`);
  }
  const encapsulations: EncapsulationEntry[] = [];
  for (const e of stored.values()) encapsulations.push(await encapsulationEntry(vault, e));
  encapsulations.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  const key = manifestKey(snapshotId);
  await vault.recordStoreObjects(store.description, [{ key, kind: 'manifest', snapshotId }]);
  const writing = new ManifestWriter(header, p.schema);
  const upload = store.put(key, writing.stream, p.putOptions);
  upload.catch(() => undefined);
  let listed;
  try {
    for (const s of segments) {
      await writing.segment({
        id: s.segment,
        table: s.table,
        tenant: s.tenant,
        period: s.period,
        key: s.key,
        sha256: s.sha256,
        size: s.size,
        cells: s.cells,
        rows: s.rows,
        bytesPlain: s.bytesPlain,
        shredded: s.shredded,
        snapshot: s.snapshotId,
      });
    }
    listed = writing.finish(
      encapsulations,
      { bytesStored: written.bytesStored, cellsWritten: written.cellsWritten, segmentsWritten: written.segmentsWritten, fullRead: p.fullRead },
      now(),
      (message) => ({ keyId: signer.id, value: signer.sign(message) }),
    ).totals;
  } catch (err) {
    writing.abort(err instanceof Error ? err : new Error(String(err)));
    throw err;
  }
  const manifest = await upload;
  failpoint('backup.after-manifest');
  const result: BackupResult = {
    snapshotId,
    previousId: p.previous?.id ?? null,
    cells: listed.cells,
    cellsReused: listed.cellsReused,
    cellsWritten: written.cellsWritten,
    cellsSkippedShredded: listed.cellsShredded,
    shreddedKeys: written.shreddedKeys,
    rows: listed.rows - files.cells,
    bytesPlain: listed.bytesPlain,
    bytesStored: written.bytesStored,
    packs: written.packs,
    keysCreated: written.keysCreated,
    encapsulations: written.encapsulations,
    manifest: key,
    segments: listed.segments,
    segmentsWritten: written.segmentsWritten,
    segmentsRead: written.segmentsRead,
    cellsRead: written.cellsRead,
    fullRead: p.fullRead,
    sinceFullRead: p.sinceFullRead,
    blobs: { ...written.blobs, files: files.cells, reused: files.cells - written.blobs.written, bytesPlain: files.bytes },
    findings: written.findings,
    ...schemaOutcome(p),
    durationMs: Date.now() - started,
  };
  // The stats and the audit keep the count; the key ids stay in this run's result.
  // A finding's location names a file (often after its uploader): it stays in this run's
  // result, not in the vault's stats or the audit log, which an erasure cannot reach.
  const { shreddedKeys: _listed, findings: _findings, ...rest } = result;
  const recorded = { ...rest, findings: result.findings.map(({ location: _location, ...finding }) => finding) };
  await vault.completeSnapshot(snapshotId, {
    manifestKey: key,
    manifestSha256: manifest.sha256,
    stats: { ...recorded, manifestBytes: manifest.size, store: store.description },
  });
  await vault.appendAudit({
    actor: options.actor,
    action: 'backup.complete',
    subject: snapshotId,
    details: { ...recorded, manifestSha256: manifest.sha256 },
  });
  await exportAudit(vault, store, signer, p.lock);
  options.log.child({ job: 'backup', snapshotId }).info(recorded, 'backup complete');
  return result;
}

/**
 * Takes one snapshot of the chat store: every mapped table read in one REPEATABLE READ
 * transaction (two connections sharing one exported snapshot), only the segments and
 * cells whose fingerprint changed read out, each new cell sealed under a key derived from
 * its tenant's encapsulation for this snapshot, packed and uploaded, the changed segments
 * written, and the signed manifest listing every segment stored last. The snapshot exists
 * only once the vault then marks it complete: a run that dies earlier leaves nothing that
 * looks complete, and the next run cleans up after it.
 *
 * Throws TABLE_UNMAPPED / MAPPING_INVALID before anything is written when the mapping does
 * not cover the store, JOB_LOCKED when another backup is running.
 */
export async function runBackup(input: BackupOptions): Promise<BackupResult> {
  const { vault, log } = input;
  const now = input.now ?? ((): Date => new Date());
  const started = Date.now();
  // The lock's signal also fires when the connection holding it is lost: another run may
  // then take the lock, so this one stops (and is abandoned) at its next step.
  return vault.withJobLock('backup', async (signal) => {
    const options: BackupOptions = { ...input, signal };
    const p = await prepare(options, now);
    const runLog = log.child({ job: 'backup', snapshotId: p.run.id });
    runLog.info({ previous: p.previous?.id ?? null, tables: p.tables.length, fullRead: p.fullRead }, 'backup started');
    let readers: pg.Client[] = [];
    const cancel = (): void => {
      for (const client of readers) void client.end().catch(() => undefined);
    };
    options.signal?.addEventListener('abort', cancel, { once: true });
    try {
      const opened = await openReaders(options.chatStoreUrl, 2, undefined, tableLock(options, p));
      readers = opened.readers;
      const source = opened.source as SourcePoint;
      const header = headerOf(p, options, source);
      await pausepoint('backup.after-begin', options.signal);
      throwIfAborted(options.signal, 'backup');
      const written = await writeTables({
        options,
        run: p.run,
        hasPrevious: p.previous !== null,
        fullRead: p.fullRead,
        masterRecipient: p.masterRecipient,
        putOptions: p.putOptions,
        digestKey: options.signer.derive(CELL_DIGEST_KEY_LABEL),
        readers,
        tables: p.tables,
        checkOrphans: true,
        ...(p.previous === null ? {} : { blobRecheck: blobRecheckOf(p.previous.stats) }),
        log: runLog,
      });
      for (const client of readers) await client.query('COMMIT');
      return await finishSnapshot(options, p, header, written, now, started);
    } catch (err) {
      // No ROLLBACK: a COPY may still be streaming on a connection, and a query queued
      // behind it would wait forever. Closing the connections (finally) ends the read-only
      // transactions just as well.
      await vault.abandonSnapshot(p.run.id).catch(() => undefined);
      // Cancelling closes the readers under their COPY: that is the stop asked for, not a
      // database failure. A stop for a reason of lethe's own (the lock's connection lost) is that reason.
      if (options.signal?.aborted === true) {
        const reason: unknown = options.signal.reason;
        if (isLetheError(reason) && reason.code !== ErrorCode.ABORTED) throw reason;
        throw new LetheError(ErrorCode.ABORTED, 'backup: cancelled', { cause: err });
      }
      throw wrapForeign(ErrorCode.DATABASE, 'backup', err);
    } finally {
      options.signal?.removeEventListener('abort', cancel);
      await Promise.all(readers.map((client) => client.end().catch(() => undefined)));
    }
  }, input.signal === undefined ? {} : { signal: input.signal });
}

/** What every worker of a coordinated backup follows, as the coordinator records it. */
const ShardPlanSchema = z.strictObject({
  exported: z.string().regex(/^[0-9A-F]+-[0-9A-F]+-[0-9]+$/i, 'a snapshot id from pg_export_snapshot()'),
  store: z.string().min(1),
  seq: z.number().int().positive(),
  previousId: z.string().min(1).nullable(),
  fullRead: z.boolean(),
  granularity: z.enum(['month', 'week', 'day']),
  tables: z.array(z.strictObject({ name: z.string().min(1), copyColumns: z.array(z.string().min(1)).min(1), digestColumns: z.array(z.string().min(1)) })),
});
type ShardPlan = z.infer<typeof ShardPlanSchema>;

/** The job lock a shard worker holds while it writes: the coordinator takes its absence for a dead worker. */
function shardLockName(snapshotId: string, shard: number): string {
  return `backup-shard:${snapshotId}:${shard}`;
}

export interface CoordinateOptions {
  readonly shards: number;
  /** How long shards may stay unclaimed before the coordinator gives up (default 10 minutes). */
  readonly waitMs?: number;
  /** How often the coordinator looks at its shards (default 1 s). */
  readonly pollMs?: number;
}

/**
 * `lethe backup --coordinate K`: the one process of a backup written by K workers that
 * holds the backup job lock. It prepares the run like a single backup, opens the snapshot
 * every worker imports and holds it open, checks every table's joins, records K pending
 * shards with the plan, and waits. When every shard has reported, it writes the signed
 * manifest (the commit point); when one fails, dies (its lock is released: the worker's
 * connection closed) or is never claimed within `waitMs`, it abandons the snapshot, so
 * nothing is listed as complete, and throws.
 */
export async function runBackupCoordinator(options: BackupOptions, coordinate: CoordinateOptions): Promise<BackupResult> {
  const { vault, log } = options;
  const now = options.now ?? ((): Date => new Date());
  const started = Date.now();
  if (!Number.isSafeInteger(coordinate.shards) || coordinate.shards < 1 || coordinate.shards > 1024) {
    throw new LetheError(ErrorCode.USAGE, `--coordinate takes the number of shards, 1 to 1024 (got ${coordinate.shards})`);
  }
  return vault.withJobLock('backup', async () => {
    const p = await prepare(options, now);
    const runLog = log.child({ job: 'backup', snapshotId: p.run.id, shards: coordinate.shards });
    let readers: pg.Client[] = [];
    try {
      const opened = await openReaders(options.chatStoreUrl, 1, undefined, tableLock(options, p));
      readers = opened.readers;
      const source = opened.source as SourcePoint;
      const reader = readers[0] as pg.Client;
      // The joins are checked once, here, for every worker.
      for (const table of p.tables) await checkOrphans(reader, options.mapping, table.name);
      const plan: ShardPlan = {
        exported: source.exported,
        store: p.run.store,
        seq: p.run.seq,
        previousId: p.previous?.id ?? null,
        fullRead: p.fullRead,
        granularity: options.granularity,
        tables: p.tables.map((t) => ({ name: t.name, copyColumns: [...t.copyColumns], digestColumns: [...t.digestColumns] })),
      };
      await vault.createBackupShards(p.run.id, coordinate.shards, plan);
      runLog.info({ previous: p.previous?.id ?? null, fullRead: p.fullRead }, 'coordinated backup started: waiting for its shards');
      const results = await waitForShards(options, p.run.id, coordinate);
      // The exported snapshot was needed until every worker imported it; it is not any more.
      await reader.query('COMMIT');
      const written = results.reduce<WriteOutcome>(
        (sum, r) => ({
          cellsRead: sum.cellsRead + r.cellsRead,
          cellsWritten: sum.cellsWritten + r.cellsWritten,
          cellsShreddedRead: sum.cellsShreddedRead + r.cellsShreddedRead,
          shreddedKeys: mergeShreddedKeys([sum.shreddedKeys, r.shreddedKeys]),
          bytesStored: sum.bytesStored + r.bytesStored,
          segmentsRead: sum.segmentsRead + r.segmentsRead,
          segmentsWritten: sum.segmentsWritten + r.segmentsWritten,
          packs: sum.packs + r.packs,
          keysCreated: sum.keysCreated + r.keysCreated,
          encapsulations: sum.encapsulations + r.encapsulations,
          blobs: {
            written: sum.blobs.written + r.blobs.written,
            reused: sum.blobs.reused + r.blobs.reused,
            shredded: sum.blobs.shredded + r.blobs.shredded,
            findings: sum.blobs.findings + r.blobs.findings,
            bytesPlain: sum.blobs.bytesPlain + r.blobs.bytesPlain,
          },
          findings: [...sum.findings, ...r.findings].slice(0, MAX_FINDINGS_LISTED),
        }),
        { shreddedKeys: [], cellsRead: 0, cellsWritten: 0, cellsShreddedRead: 0, bytesStored: 0, segmentsRead: 0, segmentsWritten: 0, packs: 0, keysCreated: 0, encapsulations: 0, blobs: { written: 0, reused: 0, shredded: 0, findings: 0, bytesPlain: 0 }, findings: [] },
      );
      return await finishSnapshot(options, p, headerOf(p, options, source), written, now, started);
    } catch (err) {
      await vault.abandonSnapshot(p.run.id).catch(() => undefined);
      throw wrapForeign(ErrorCode.DATABASE, 'coordinated backup', err);
    } finally {
      await Promise.all(readers.map((client) => client.end().catch(() => undefined)));
    }
  });
}

/** Waits until every shard is done; throws BACKUP_SHARD_FAILED naming the first that failed, died or never started. */
async function waitForShards(options: BackupOptions, snapshotId: string, coordinate: CoordinateOptions): Promise<WriteOutcome[]> {
  const { vault } = options;
  const deadline = Date.now() + (coordinate.waitMs ?? 600_000);
  const poll = coordinate.pollMs ?? 1000;
  let reported = -1;
  for (;;) {
    throwIfAborted(options.signal, 'coordinated backup');
    const shards = await vault.backupShards(snapshotId);
    const failed = shards.find((s) => s.status === 'failed');
    if (failed !== undefined) {
      throw new LetheError(ErrorCode.BACKUP_SHARD_FAILED, `shard ${failed.shard}/${failed.shards} (${failed.owner ?? '?'}) failed: ${failed.error ?? 'no reason given'}; nothing of this snapshot was kept`);
    }
    for (const s of shards.filter((x) => x.status === 'running')) {
      if (await vault.jobLockHeld(shardLockName(snapshotId, s.shard))) continue;
      // Free: it finished since we looked, or its worker died.
      const again = (await vault.backupShards(snapshotId)).find((x) => x.shard === s.shard);
      if (again?.status === 'running') {
        throw new LetheError(ErrorCode.BACKUP_SHARD_FAILED, `the worker of shard ${s.shard}/${s.shards} (${s.owner ?? '?'}) died before it finished; nothing of this snapshot was kept: run the backup again`);
      }
    }
    const done = shards.filter((s) => s.status === 'done');
    if (done.length !== reported) {
      reported = done.length;
      options.onProgress?.({ table: `shards done: ${done.length}/${shards.length}`, tablesDone: done.length, tables: shards.length, cells: 0, rows: 0, bytesPlain: 0 });
    }
    if (done.length === shards.length) {
      return done.map((s) => {
        const parsed = WriteOutcomeSchema.safeParse(s.result);
        if (!parsed.success) throw new LetheError(ErrorCode.VAULT, `shard ${s.shard} reported a malformed result`);
        return parsed.data;
      });
    }
    const unclaimed = shards.filter((s) => s.status === 'pending');
    if (unclaimed.length > 0 && Date.now() > deadline) {
      throw new LetheError(
        ErrorCode.BACKUP_SHARD_FAILED,
        `shard(s) ${unclaimed.map((s) => `${s.shard}/${s.shards}`).join(', ')} were not claimed in time: start \`lethe backup --shard I/${coordinate.shards}\` for each; nothing of this snapshot was kept`,
      );
    }
    await new Promise((resolve) => setTimeout(resolve, poll));
  }
}

export interface ShardOptions {
  readonly index: number;
  readonly of: number;
  /** How long to wait for a coordinator to offer this shard (default 10 minutes). */
  readonly waitMs?: number;
}

/** What `lethe backup --shard I/K` prints. */
export interface ShardResult extends WriteOutcome {
  readonly snapshotId: string;
  readonly shard: number;
  readonly shards: number;
  readonly durationMs: number;
}

/**
 * `lethe backup --shard I/K`: one worker of a coordinated backup. Waits for the
 * coordinator to offer shard I of K, claims it, imports the coordinator's snapshot, and
 * writes the cells and segments of the tenants that hash to shard I into the same running
 * snapshot, holding a job lock of its own meanwhile (the coordinator's proof that it is
 * alive). Reports its outcome to the vault; never writes a manifest.
 */
export async function runBackupShard(options: BackupOptions, shard: ShardOptions): Promise<ShardResult> {
  const { vault, store, log } = options;
  const started = Date.now();
  if (!Number.isSafeInteger(shard.of) || !Number.isSafeInteger(shard.index) || shard.of < 1 || shard.index < 0 || shard.index >= shard.of) {
    throw new LetheError(ErrorCode.USAGE, `--shard takes I/K with 0 <= I < K (got ${shard.index}/${shard.of})`);
  }
  const owner = `${hostname()}:${process.pid}`;
  const deadline = Date.now() + (shard.waitMs ?? 600_000);
  let offered = await vault.offeredBackupShard(shard.index, shard.of);
  while (offered === null) {
    if (Date.now() > deadline) {
      throw new LetheError(ErrorCode.NOT_FOUND, `no coordinated backup offered shard ${shard.index}/${shard.of}: start \`lethe backup --coordinate ${shard.of}\``);
    }
    throwIfAborted(options.signal, 'backup shard');
    await new Promise((resolve) => setTimeout(resolve, 1000));
    offered = await vault.offeredBackupShard(shard.index, shard.of);
  }
  const { snapshotId } = offered;
  const runLog = log.child({ job: 'backup', snapshotId, shard: `${shard.index}/${shard.of}` });
  const progress = { claimed: false };
  try {
    return await vault.withJobLock(shardLockName(snapshotId, shard.index), async (signal) => {
      // The lock is taken before the shard is marked running: the coordinator takes a
      // running shard whose lock is free for a dead worker.
      if (!(await vault.claimBackupShard(snapshotId, shard.index, owner))) {
        throw new LetheError(ErrorCode.JOB_LOCKED, `shard ${shard.index}/${shard.of} of snapshot ${snapshotId} is no longer offered: another worker took it, or the coordinator gave up`);
      }
      progress.claimed = true;
      const parsed = ShardPlanSchema.safeParse(offered.plan);
      if (!parsed.success) throw new LetheError(ErrorCode.VAULT, `the plan of snapshot ${snapshotId} is malformed: ${parsed.error.issues[0]?.message ?? ''}`);
      const plan = parsed.data;
      if (plan.store !== store.description) {
        throw new LetheError(ErrorCode.CONFIG_INVALID, `the coordinator writes to ${plan.store}, this worker to ${store.description}: give every worker the coordinator's storage settings`);
      }
      if (plan.granularity !== options.granularity) {
        throw new LetheError(ErrorCode.CONFIG_INVALID, `the coordinator uses backup.granularity ${plan.granularity}, this worker ${options.granularity}: give every worker the same config`);
      }
      runLog.info({ previous: plan.previousId, fullRead: plan.fullRead }, 'shard started');
      const { readers } = await openReaders(options.chatStoreUrl, 2, plan.exported);
      const cancel = (): void => {
        for (const client of readers) void client.end().catch(() => undefined);
      };
      signal.addEventListener('abort', cancel, { once: true });
      try {
        const written = await writeTables({
          options: { ...options, signal },
          run: { id: snapshotId, seq: plan.seq, store: plan.store },
          hasPrevious: plan.previousId !== null,
          fullRead: plan.fullRead,
          masterRecipient: await vault.getMasterRecipient(),
          putOptions: options.lockDays === undefined ? { signal } : { signal, lock: { mode: options.lockDays.mode, retainUntil: new Date(Date.now() + options.lockDays.days * 86_400_000) } },
          digestKey: options.signer.derive(CELL_DIGEST_KEY_LABEL),
          readers,
          tables: plan.tables,
          checkOrphans: false,
          shard,
          ...(plan.previousId === null ? {} : { blobRecheck: blobRecheckOf((await vault.getSnapshot(plan.previousId)).stats) }),
          log: runLog,
        });
        for (const client of readers) await client.query('COMMIT');
        // The shard's result goes through the vault to the coordinator: a finding's location
        // names a file (often after its uploader) and must not be kept where no erasure
        // reaches, so it crosses without it (the table, row key and problem still say which).
        const findings = written.findings.map((f) => ({ ...f, location: '' }));
        await vault.finishBackupShard(snapshotId, shard.index, { result: { ...written, findings } });
        runLog.info(written, 'shard done');
        return { snapshotId, shard: shard.index, shards: shard.of, ...written, durationMs: Date.now() - started };
      } finally {
        signal.removeEventListener('abort', cancel);
        await Promise.all(readers.map((client) => client.end().catch(() => undefined)));
      }
    });
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    if (progress.claimed) await vault.finishBackupShard(snapshotId, shard.index, { error: message.slice(0, 2000) }).catch(() => undefined);
    throw wrapForeign(ErrorCode.DATABASE, `backup shard ${shard.index}/${shard.of}`, err);
  }
}
