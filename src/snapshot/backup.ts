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
  type CellFilter,
  type Mapping,
  type TableInfo,
} from '../mapping/index.ts';
import type { ObjectLock, ObjectStore } from '../storage/index.ts';
import type { CurrentCopy, NewCellCopy, RunningSnapshot, SegmentRecord, Vault } from '../vault/index.ts';
import { CellWriter, fingerprintPrefix, keyedFingerprint, type CellOutcome, type PreviousCell } from './cell-writer.ts';
import { PackWriter } from './pack-writer.ts';
import { exportAudit } from '../audit/index.ts';
import { failpoint } from '../util/failpoint.ts';

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
  /** Test hook: sees every secret the run makes (it must be found nowhere afterwards). */
  readonly observeSecrets?: SecretObserver;
}

export interface BackupProgress {
  readonly table: string;
  readonly tablesDone: number;
  readonly tables: number;
  /** Cells read so far. */
  readonly cells: number;
  readonly rows: number;
  readonly bytesPlain: number;
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
  readonly durationMs: number;
}

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
    if (period == null || fields.length !== groups + 5) throw new LetheError(ErrorCode.INTERNAL, 'a fingerprint query returned a malformed row');
    const fingerprint = new RowFingerprint();
    fingerprint.merge({ rows: Number(fields[groups]), words: fields.slice(groups + 1).map(Number) });
    yield {
      tuple: { tenant: fields[0] ?? null, class: dataClass, period, author: level === 'cell' ? (fields[2] ?? null) : null, conversation: level === 'cell' ? (fields[3] ?? null) : null },
      fingerprint,
    };
  }
}

/** A segment whose fingerprint changed (or every segment, on a full read): what the run did to it. */
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

/** What a table's read looks like, decided from fingerprints before any row is read. */
interface TablePlan {
  readonly table: TableInfo;
  readonly reader: pg.Client;
  /** The segments to rewrite (or keep, if nothing in them turns out changed), by id. */
  readonly segments: Map<string, SegmentState>;
  /** `none`: nothing changed; `all`: every row; else the filter of the cells or segments to read. */
  readonly read: 'none' | 'all' | CellFilter;
}

function toPrevious(copy: CurrentCopy): PreviousCell {
  return {
    copyId: copy.copyId,
    fingerprint: copy.fingerprint,
    key: copy.key,
    encapsulation: copy.encapsulation,
    digest: copy.digest,
    pack: copy.pack,
    offset: copy.offset,
    length: copy.length,
    sha256: copy.sha256,
  };
}

/** Domain tag of the digest key the backup derives from its signing key. */
export const CELL_DIGEST_KEY_LABEL = 'lethe.cell-digest-key.v1';

/**
 * Takes one snapshot of the chat store: every mapped table read in one REPEATABLE READ
 * transaction, rows grouped into cells, each cell sealed under a key derived from its
 * tenant's encapsulation for this snapshot (or referenced from the previous snapshot when
 * unchanged), packed and uploaded, while the signed manifest streams to the store beside
 * them. The manifest becomes visible only when its upload completes, after the last cell,
 * and the snapshot exists only once the vault then marks it complete: a run that dies
 * earlier leaves nothing that looks complete, and the next run cleans up after it.
 *
 * Throws TABLE_UNMAPPED / MAPPING_INVALID before anything is written when the mapping does
 * not cover the store, JOB_LOCKED when another backup is running.
 */
export async function runBackup(options: BackupOptions): Promise<BackupResult> {
  const { vault, store, log } = options;
  const now = options.now ?? ((): Date => new Date());
  const started = Date.now();
  return vault.withJobLock('backup', async () => {
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
    const { signer } = options;
    const { tables } = await checkCoverage(options.chatStoreUrl, options.mapping);
    const schema = await readSchema(
      options.chatStoreUrl,
      tables.map((t) => t.name),
      options.mapping.schema,
    );

    // Cells are referenced only from a snapshot in this same store: after a switch of bucket,
    // prefix or backend the old packs are not here, so the first backup is a full one.
    const previous = await vault.latestCompleteSnapshot(store.description);
    // A full read re-reads and re-digests every row: the first snapshot, the first after
    // snapshots without segments (an older lethe), every backup.fullEvery-th, or on request.
    const previousSince = typeof previous?.stats['sinceFullRead'] === 'number' ? previous.stats['sinceFullRead'] : null;
    const fullRead =
      options.fullRead === true ||
      previous === null ||
      previousSince === null ||
      (options.fullEvery !== undefined && previousSince + 1 >= options.fullEvery);
    const sinceFullRead = fullRead ? 0 : previousSince + 1;
    const createdAt = now();
    const snapshotId = newSnapshotId(createdAt);
    const runLog = log.child({ job: 'backup', snapshotId });
    const begun = await vault.beginSnapshot({ id: snapshotId, previousId: previous?.id ?? null, runOwner: `${hostname()}:${process.pid}`, store: store.description });
    const run: RunningSnapshot = { id: snapshotId, seq: begun.seq, store: store.description };
    runLog.info({ previous: previous?.id ?? null, tables: tables.length, fullRead }, 'backup started');

    const lock: ObjectLock | undefined =
      options.lockDays === undefined
        ? undefined
        : { mode: options.lockDays.mode, retainUntil: new Date(createdAt.getTime() + options.lockDays.days * 86_400_000) };
    const putOptions = {
      ...(lock === undefined ? {} : { lock }),
      ...(options.signal === undefined ? {} : { signal: options.signal }),
    };
    const packs = new PackWriter(store, {
      targetBytes: options.packSizeBytes,
      beforeUpload: (key) => vault.recordStoreObjects(store.description, [{ key, kind: 'pack', snapshotId }]),
      ...putOptions,
    });
    const keys = new Encapsulator(vault, masterRecipient, snapshotId, options.observeSecrets);
    // The digest key never leaves this process: the vault stores only keyed digests and
    // fingerprints, and only of current copies, deleted when a key the cell needs is destroyed.
    const digestKey = signer.derive(CELL_DIGEST_KEY_LABEL);
    let manifest: ManifestWriter | undefined;

    const totals = { read: 0, rowsRead: 0, bytesRead: 0, written: 0, shredded: 0, bytesStored: 0, segmentsRead: 0, segmentsWritten: 0 };
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
    const startUpload = async (work: () => Promise<void>): Promise<void> => {
      while (uploads.size >= SEGMENT_UPLOADS) await Promise.race(uploads);
      if (uploadError !== undefined) throw uploadError;
      const p: Promise<void> = work()
        .catch((err: unknown) => {
          uploadError ??= err instanceof Error ? err : new Error(String(err));
        })
        .finally(() => uploads.delete(p));
      uploads.add(p);
    };
    const drainUploads = async (): Promise<void> => {
      await Promise.all(uploads);
      if (uploadError !== undefined) throw uploadError;
    };

    // Two readers in one snapshot: the second imports the first's exported snapshot, so both
    // see exactly the same rows. While one table's cells are read, sealed and uploaded, the
    // next table's fingerprints are computed on the other connection.
    const readers = [0, 1].map(() => {
      const client = new pg.Client({ connectionString: options.chatStoreUrl, application_name: 'lethe backup' });
      client.on('error', () => undefined);
      return client;
    });
    const chat = readers[0] as pg.Client;
    const cancel = (): void => {
      for (const client of readers) void client.end().catch(() => undefined);
    };
    options.signal?.addEventListener('abort', cancel, { once: true });
    try {
      await Promise.all(readers.map((client) => client.connect()));
      await chat.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
      for (const statement of copySessionStatements()) await chat.query(statement);
      const point = await chat.query<{ now: Date; snap: string; version: string; exported: string }>(
        'SELECT now() AS now, pg_current_snapshot()::text AS snap, current_setting($1) AS version, pg_export_snapshot() AS exported',
        ['server_version'],
      );
      const source = point.rows[0];
      if (source === undefined) throw new LetheError(ErrorCode.INTERNAL, 'no snapshot point returned');
      for (const client of readers.slice(1)) {
        await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
        // The id is the server's own output, but it is still quoted as a literal, never pasted.
        await client.query(`SET TRANSACTION SNAPSHOT ${client.escapeLiteral(source.exported)}`);
        for (const statement of copySessionStatements()) await client.query(statement);
      }

      const ordered = [...tables].sort((a, b) => a.name.localeCompare(b.name));
      const header: SnapshotHeader = {
        id: snapshotId,
        createdAt: createdAt.toISOString(),
        previous: previous === null ? null : { id: previous.id, sha256: previous.manifestSha256 },
        source: {
          databaseTime: source.now.toISOString(),
          transactionSnapshot: source.snap,
          serverVersion: source.version,
        },
        granularity: options.granularity,
        masterRecipient,
        tables: ordered.map((t) => ({ name: t.name, class: t.class, columns: [...t.copyColumns] })),
      };

      /**
       * Decides what of table `index` to read, from fingerprints the server computes in the
       * snapshot: segments whose fingerprint is unchanged are referenced as they are; in the
       * others, cells whose fingerprint changed are read, and copies of cells that are gone
       * are superseded. Nothing of the rows themselves leaves the server here.
       */
      const planTable = async (index: number): Promise<TablePlan> => {
        const table = ordered[index];
        const reader = readers[index % readers.length];
        if (table === undefined || reader === undefined) throw new LetheError(ErrorCode.INTERNAL, `no table ${index}`);
        const orphans = await reader.query<{ dropped: string; tenantless: string }>(buildOrphanCheckQuery(options.mapping, table.name));
        const dropped = Number(orphans.rows[0]?.dropped ?? 0);
        const tenantless = Number(orphans.rows[0]?.tenantless ?? 0);
        if (dropped > 0 || tenantless > 0) {
          throw new LetheError(
            ErrorCode.MAPPING_INVALID,
            `table ${table.name}: ${dropped} rows have no match for the mapping's joins and ${tenantless} rows have no ` +
              'tenant; they would be lost or misfiled, so nothing was backed up. Fix the data, or the mapping ' +
              '(docs/mapping.md), and run again',
          );
        }
        const dataClass = classOf(options.mapping, table.name);
        const fpPrefix = fingerprintPrefix(table.name, table.copyColumns);
        const priorSegments = previous === null ? new Map<string, SegmentRecord>() : await vault.currentSegments(run, table.name);
        const segments = new Map<string, SegmentState>();
        const present = new Set<string>();
        let serverSegments = 0;
        const segmentSql = buildFingerprintQuery(options.mapping, table.name, table.copyColumns, options.granularity, 'segment');
        for await (const row of fingerprintRows(reader, segmentSql, 'segment', dataClass)) {
          serverSegments += 1;
          const id = segmentId(table.name, row.tuple.tenant, row.tuple.period);
          present.add(id);
          const keyed = keyedFingerprint(digestKey, fpPrefix, id, row.fingerprint);
          const prior = priorSegments.get(id);
          if (!fullRead && prior?.fingerprint != null && equalConstantTime(prior.fingerprint, keyed)) continue;
          segments.set(id, { id, tenant: row.tuple.tenant, period: row.tuple.period, keyed, prior, superseded: 0, shredded: 0 });
        }
        // Segments with no rows left: the snapshot leaves them, and their cells, out.
        const gone = [...priorSegments.values()].filter((s) => !present.has(s.segment));
        if (gone.length > 0) {
          await vault.recordSegmentChanges(run, { added: [], superseded: gone.map((s) => s.key), fingerprints: [], supersedeCopiesOf: gone.map((s) => s.segment) });
        }
        totals.segmentsRead += segments.size;
        if (segments.size === 0) return { table, reader, segments, read: 'none' };
        const segmentFilter: CellFilter | 'all' =
          segments.size === serverSegments ? 'all' : { kind: 'segments', keys: [...segments.values()].map((s) => segmentFilterKey(s.tenant, s.period)) };
        if (fullRead) return { table, reader, segments, read: segmentFilter };

        // Cell fingerprints of the changed segments, compared a batch at a time with the
        // vault's current copies: changed and new cells are read, gone ones superseded.
        const changedCells: string[] = [];
        const cut = { tooMany: false };
        const superseded: string[] = [];
        let batch: FingerprintRow[] = [];
        let batchSegment: string | null = null;
        const compare = async (): Promise<void> => {
          const rows = batch;
          batch = [];
          if (rows.length === 0) return;
          const ids = [...new Set(rows.map((r) => segmentId(table.name, r.tuple.tenant, r.tuple.period)))];
          const copies = new Map<string, CurrentCopy>();
          let after: { segment: string; cellId: string } | null = null;
          for (;;) {
            const page = await vault.currentCopiesOfSegments(run, ids, after, 5000);
            for (const copy of page) copies.set(copy.id, copy);
            const last = page.at(-1);
            if (last === undefined || page.length < 5000) break;
            after = { segment: last.segment, cellId: last.id };
          }
          for (const row of rows) {
            const id = cellId(table.name, row.tuple);
            const copy = copies.get(id);
            copies.delete(id);
            const keyed = keyedFingerprint(digestKey, fpPrefix, id, row.fingerprint);
            if (copy?.fingerprint != null && equalConstantTime(copy.fingerprint, keyed)) continue;
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
        };
        const cellSql = buildFingerprintQuery(options.mapping, table.name, table.copyColumns, options.granularity, 'cell', segmentFilter === 'all' ? undefined : segmentFilter);
        for await (const row of fingerprintRows(reader, cellSql, 'cell', dataClass)) {
          const id = segmentId(table.name, row.tuple.tenant, row.tuple.period);
          if (id !== batchSegment && batch.length >= FINGERPRINT_BATCH) await compare();
          batchSegment = id;
          batch.push(row);
        }
        await compare();
        failpoint('backup.after-plan');
        return { table, reader, segments, read: cut.tooMany ? segmentFilter : { kind: 'cells', keys: changedCells } };
      };

      /** Reads, seals and records the cells a plan names. */
      const readTable = async (plan: TablePlan, index: number): Promise<void> => {
        const { table, reader } = plan;
        if (plan.read === 'none') return;
        const sql = buildCellQuery(options.mapping, table.name, table.copyColumns, options.granularity, plan.read === 'all' ? undefined : plan.read);
        const copy: CopyStream = reader.query(pgCopyStreams.to(`COPY (${sql}) TO STDOUT`));
        const writer = new CellWriter({
          table: table.name,
          columns: table.copyColumns,
          packs,
          keys,
          digestKey,
          previous: async (cellIds): Promise<ReadonlyMap<string, PreviousCell>> => {
            if (previous === null) return new Map();
            const found = await vault.currentCopies(run, cellIds);
            return new Map([...found].map(([id, c]) => [id, toPrevious(c)]));
          },
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
            if (outcome.kind === 'shredded') {
              totals.rowsRead += outcome.rows;
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
              const { entry, tuple } = outcome;
              totals.rowsRead += entry.rows;
              totals.bytesRead += entry.bytesPlain;
              totals.written += 1;
              totals.bytesStored += entry.length;
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
            if (pendingCount() >= CELL_ROWS_BATCH) await flushRows();
            if (totals.read % 500 === 0) {
              options.onProgress?.({ table: table.name, tablesDone: index, tables: ordered.length, cells: totals.read, rows: totals.rowsRead, bytesPlain: totals.bytesRead });
            }
          }
        };
        for await (const cell of groupCells(copy, classOf(options.mapping, table.name))) {
          throwIfAborted(options.signal, 'backup');
          await record(await writer.add(cell));
        }
        await record(await writer.flush());
      };

      /**
       * Writes the new segment objects of a table whose cells are recorded: each changed
       * segment lists its cells as they are now. One in which nothing turned out changed
       * keeps its current object (with the new fingerprint).
       */
      const writeSegments = async (plan: TablePlan): Promise<void> => {
        const { table } = plan;
        const ids = [...plan.segments.keys()].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
        const kept: { key: string; fingerprint: string | null }[] = [];
        const finalize = async (state: SegmentState, cells: CurrentCopy[]): Promise<void> => {
          const written = cells.filter((c) => c.fromSeq === run.seq).length;
          if (state.prior !== undefined && written === 0 && state.superseded === 0 && state.shredded === state.prior.shredded) {
            kept.push({ key: state.prior.key, fingerprint: state.keyed });
            return;
          }
          if (cells.length === 0 && state.shredded === 0) {
            if (state.prior !== undefined) await vault.recordSegmentChanges(run, { added: [], superseded: [state.prior.key], fingerprints: [] });
            return;
          }
          const facts = await vault.getCellKeys([...new Set(cells.map((c) => c.key))]);
          const entries: CellEntry[] = cells.map((c) => {
            const dims = facts.get(c.key)?.dimensionIds;
            if (dims === undefined) throw new LetheError(ErrorCode.VAULT, `cell ${c.id} names tuple ${c.key}, which the vault does not record`);
            return {
              id: c.id,
              table: c.table,
              tenant: c.tenant,
              key: c.key,
              dims: [...dims],
              enc: c.encapsulation,
              pack: c.pack,
              offset: c.offset,
              length: c.length,
              sha256: c.sha256,
              rows: c.rows,
              bytesPlain: c.bytesPlain,
              reused: c.fromSeq !== run.seq,
            };
          });
          const key = newSegmentKey(randomBytes(16));
          await vault.recordStoreObjects(store.description, [{ key, kind: 'segment', snapshotId }]);
          await startUpload(async () => {
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
            await vault.recordSegmentChanges(run, {
              added: [
                {
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
                },
              ],
              superseded: state.prior === undefined ? [] : [state.prior.key],
              fingerprints: [],
            });
            failpoint('backup.after-segment');
          });
        };
        // The cells of the changed segments, a page at a time, in segment then cell order.
        let after: { segment: string; cellId: string } | null = null;
        let current: { state: SegmentState; cells: CurrentCopy[] } | null = null;
        const done = new Set<string>();
        for (;;) {
          const page = await vault.cellsOfNewSegments(run, ids, after, 5000);
          for (const copy of page) {
            if (current?.state.id !== copy.segment) {
              if (current !== null) {
                done.add(current.state.id);
                await finalize(current.state, current.cells);
              }
              const state = plan.segments.get(copy.segment);
              if (state === undefined) throw new LetheError(ErrorCode.INTERNAL, `segment ${copy.segment} is not in the plan`);
              current = { state, cells: [] };
            }
            current.cells.push(copy);
          }
          const last = page.at(-1);
          if (last === undefined || page.length < 5000) break;
          after = { segment: last.segment, cellId: last.id };
        }
        if (current !== null) {
          done.add(current.state.id);
          await finalize(current.state, current.cells);
        }
        for (const id of ids) if (!done.has(id)) await finalize(plan.segments.get(id) as SegmentState, []);
        if (kept.length > 0) await vault.recordSegmentChanges(run, { added: [], superseded: [], fingerprints: kept });
      };

      let next: Promise<TablePlan> | undefined = ordered.length > 0 ? planTable(0) : undefined;
      next?.catch(() => undefined);
      for (const [index, table] of ordered.entries()) {
        throwIfAborted(options.signal, 'backup');
        const plan = await (next as Promise<TablePlan>);
        // The next table's fingerprints are computed on the other reader meanwhile.
        next = index + 1 < ordered.length ? planTable(index + 1) : undefined;
        next?.catch(() => undefined);
        await readTable(plan, index);
        await flushRows();
        await recording;
        await writeSegments(plan);
        options.onProgress?.({ table: table.name, tablesDone: index + 1, tables: ordered.length, cells: totals.read, rows: totals.rowsRead, bytesPlain: totals.bytesRead });
        runLog.info({ table: table.name, segmentsChanged: plan.segments.size, cellsRead: totals.read }, 'table done');
      }
      for (const client of readers) await client.query('COMMIT');
      // Tables no longer backed up (dropped from the mapping or the store) leave the tree.
      const outside = previous === null ? [] : await vault.currentSegmentsOutside(run, ordered.map((t) => t.name));
      if (outside.length > 0) {
        await vault.recordSegmentChanges(run, { added: [], superseded: outside.map((s) => s.key), fingerprints: [], supersedeCopiesOf: outside.map((s) => s.segment) });
      }
      const packsWritten = await packs.close();
      await drainUploads();
      failpoint('backup.after-segments');
      for (const [destroyedKey, seen] of shreddedByKey) {
        runLog.warn({ destroyedKey, cells: seen.cells, rows: seen.rows }, 'cells not backed up: a key they need was destroyed (erased data is still in the chat store)');
      }

      // The manifest: every segment the snapshot holds, its own and those it references.
      const segments = await vault.segmentsOfSnapshot(snapshotId);
      const encIds = [...new Set(segments.flatMap((s) => s.encapsulations))];
      const stored = await vault.getEncapsulations(encIds);
      const lost = encIds.filter((id) => !stored.has(id));
      if (lost.length > 0) {
        throw new LetheError(ErrorCode.VAULT, `encapsulation(s) ${lost.slice(0, 3).join(', ')} that cells derive their keys from are missing from the vault`);
      }
      const encapsulations: EncapsulationEntry[] = [...stored.values()]
        .map((e) => ({ id: e.id, tenant: e.tenant, kem: e.kem, ephemeral: Buffer.from(e.ephemeral).toString('hex') }))
        .sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
      const encapsulationsCreated = keys.created().length;
      keys.forget();
      const key = manifestKey(snapshotId);
      await vault.recordStoreObjects(store.description, [{ key, kind: 'manifest', snapshotId }]);
      const writing = new ManifestWriter(header, schema);
      manifest = writing;
      const upload = store.put(key, writing.stream, putOptions);
      upload.catch(() => undefined);
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
      const { totals: listed } = writing.finish(
        encapsulations,
        { bytesStored: totals.bytesStored, cellsWritten: totals.written, segmentsWritten: totals.segmentsWritten, fullRead },
        now(),
        (message) => ({ keyId: signer.id, value: signer.sign(message) }),
      );
      const written = await upload;
      failpoint('backup.after-manifest');
      const durationMs = Date.now() - started;
      const result: BackupResult = {
        snapshotId,
        previousId: previous?.id ?? null,
        cells: listed.cells,
        cellsReused: listed.cellsReused,
        cellsWritten: totals.written,
        cellsSkippedShredded: listed.cellsShredded,
        rows: listed.rows,
        bytesPlain: listed.bytesPlain,
        bytesStored: totals.bytesStored,
        packs: packsWritten.length,
        keysCreated: keys.dimensionKeysCreated,
        encapsulations: encapsulationsCreated,
        manifest: key,
        segments: listed.segments,
        segmentsWritten: totals.segmentsWritten,
        segmentsRead: totals.segmentsRead,
        cellsRead: totals.read,
        fullRead,
        sinceFullRead,
        durationMs,
      };
      await vault.completeSnapshot(snapshotId, {
        manifestKey: key,
        manifestSha256: written.sha256,
        stats: { ...result, manifestBytes: written.size, store: store.description },
      });
      await vault.appendAudit({
        actor: options.actor,
        action: 'backup.complete',
        subject: snapshotId,
        details: { ...result, manifestSha256: written.sha256 },
      });
      await exportAudit(vault, store, signer, lock);
      runLog.info(result, 'backup complete');
      return result;
    } catch (err) {
      keys.forget();
      manifest?.abort(err instanceof Error ? err : new Error(String(err)));
      await packs.abort();
      await Promise.allSettled(uploads);
      // No ROLLBACK: a COPY may still be streaming on this connection, and a query queued
      // behind it would wait forever. Closing the connection (finally) ends the read-only
      // transaction just as well.
      await vault.abandonSnapshot(snapshotId).catch(() => undefined);
      throw wrapForeign(ErrorCode.DATABASE, 'backup', err);
    } finally {
      options.signal?.removeEventListener('abort', cancel);
      await Promise.all(readers.map((client) => client.end().catch(() => undefined)));
    }
  });
}
