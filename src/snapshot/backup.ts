import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import pg from 'pg';
import pgCopyStreams from 'pg-copy-streams';
import { copySessionStatements, groupCells } from '../cells/index.ts';
import { ErrorCode, LetheError, isLetheError, throwIfAborted, wrapForeign } from '../errors/index.ts';
import { KeyMinter, type Signer } from '../keys/index.ts';
import type { Logger } from '../log/index.ts';
import { CellEntrySchema, manifestKey, manifestLines, type CellEntry, type SnapshotHeader } from '../manifest/index.ts';
import {
  buildCellQuery,
  buildOrphanCheckQuery,
  checkCoverage,
  classOf,
  readSchema,
  type Mapping,
} from '../mapping/index.ts';
import type { ObjectLock, ObjectStore } from '../storage/index.ts';
import type { CellDigestRecord, Vault } from '../vault/index.ts';
import { CellWriter, type CellOutcome, type PreviousCell } from './cell-writer.ts';
import { writeKeyFile } from './key-file.ts';
import { PackWriter } from './pack-writer.ts';
import { exportAudit } from '../audit/index.ts';

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
  /** The clock; tests inject one. */
  readonly now?: () => Date;
}

export interface BackupProgress {
  readonly table: string;
  readonly tablesDone: number;
  readonly tables: number;
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
  readonly keysCreated: number;
  readonly manifest: string;
  readonly durationMs: number;
}

/** `20261128T073512Z-3fa9c1`: sorts by time, unique across runs. */
export function newSnapshotId(at: Date): string {
  const stamp = at.toISOString().replace(/[-:]/g, '').replace(/\.\d{3}Z$/, 'Z');
  return `${stamp}-${randomBytes(3).toString('hex')}`;
}

const CELL_ROWS_BATCH = 1000;

/** Domain tag of the digest key the backup derives from its signing key. */
export const CELL_DIGEST_KEY_LABEL = 'lethe.cell-digest-key.v1';

/** The snapshot's cells as the vault recorded them, in restore order, as manifest entries. */
async function* manifestCells(vault: Vault, snapshotId: string): AsyncGenerator<CellEntry> {
  for await (const cell of vault.iterateSnapshotCells(snapshotId, { order: 'table' })) {
    const parsed = CellEntrySchema.safeParse(cell);
    if (!parsed.success) {
      throw new LetheError(ErrorCode.INTERNAL, `cell ${cell.id} of snapshot ${snapshotId} does not fit the manifest format: ${parsed.error.message}`);
    }
    yield parsed.data;
  }
}

/**
 * Takes one snapshot of the chat store: every mapped table read in one REPEATABLE READ
 * transaction, rows grouped into cells, each cell encrypted to its own key (or referenced
 * from the previous snapshot when unchanged), packed, uploaded; then the key file and,
 * last, the signed manifest. The snapshot exists only once the manifest is stored and the
 * vault marks it complete: a run that dies earlier leaves nothing that looks complete, and
 * the next run cleans up after it.
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
      const cleaned = await store.cleanupIncomplete('packs/');
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
    const createdAt = now();
    const snapshotId = newSnapshotId(createdAt);
    const runLog = log.child({ job: 'backup', snapshotId });
    await vault.beginSnapshot({ id: snapshotId, previousId: previous?.id ?? null, runOwner: `${hostname()}:${process.pid}` });
    runLog.info({ previous: previous?.id ?? null, tables: tables.length }, 'backup started');

    const lock: ObjectLock | undefined =
      options.lockDays === undefined
        ? undefined
        : { mode: options.lockDays.mode, retainUntil: new Date(createdAt.getTime() + options.lockDays.days * 86_400_000) };
    const packs = new PackWriter(store, {
      targetBytes: options.packSizeBytes,
      beforeUpload: (key) => vault.recordStoreObjects(store.description, [{ key, kind: 'pack', snapshotId }]),
      ...(lock === undefined ? {} : { lock }),
      ...(options.signal === undefined ? {} : { signal: options.signal }),
    });
    const keys = new KeyMinter(vault, masterRecipient);
    // The digest key never leaves this process: the vault stores only digests, and only the
    // newest of each cell, deleted when a key the cell needs is destroyed.
    const digestKey = signer.derive(CELL_DIGEST_KEY_LABEL);

    const totals = { cells: 0, reused: 0, written: 0, shredded: 0, rows: 0, bytesPlain: 0, bytesStored: 0 };
    let pendingRows: CellEntry[] = [];
    let pendingDigests: CellDigestRecord[] = [];
    const flushRows = async (): Promise<void> => {
      if (pendingRows.length === 0) return;
      // Cell rows reference their keys; the minter stores a batch's keys before returning them.
      const batch = pendingRows;
      const digests = pendingDigests;
      pendingRows = [];
      pendingDigests = [];
      await vault.addSnapshotCells(snapshotId, batch, digests);
    };

    const chat = new pg.Client({ connectionString: options.chatStoreUrl, application_name: 'lethe backup' });
    chat.on('error', () => undefined);
    const cancel = (): void => {
      void chat.end().catch(() => undefined);
    };
    options.signal?.addEventListener('abort', cancel, { once: true });
    try {
      await chat.connect();
      await chat.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
      for (const statement of copySessionStatements()) await chat.query(statement);
      const point = await chat.query<{ now: Date; snap: string; version: string }>(
        'SELECT now() AS now, pg_current_snapshot()::text AS snap, current_setting($1) AS version',
        ['server_version'],
      );
      const source = point.rows[0];
      if (source === undefined) throw new LetheError(ErrorCode.INTERNAL, 'no snapshot point returned');

      const ordered = [...tables].sort((a, b) => a.name.localeCompare(b.name));
      for (const [index, table] of ordered.entries()) {
        throwIfAborted(options.signal, 'backup');
        const orphans = await chat.query<{ dropped: string; tenantless: string }>(
          buildOrphanCheckQuery(options.mapping, table.name),
        );
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
        // The previous snapshot's copies are looked up a batch of cells at a time, by
        // primary key: memory holds one batch, never a table's whole index.
        const previousId = previous?.id ?? null;
        const writer = new CellWriter({
          table: table.name,
          columns: table.copyColumns,
          packs,
          keys,
          digestKey,
          previous: async (cellIds): Promise<ReadonlyMap<string, PreviousCell>> =>
            previousId === null ? new Map() : vault.getPreviousCells(previousId, table.name, cellIds),
          bufferBytes: options.cellBufferBytes,
          ...(options.signal === undefined ? {} : { signal: options.signal }),
        });
        const record = async (outcomes: readonly CellOutcome[]): Promise<void> => {
          for (const outcome of outcomes) {
            if (outcome.kind === 'shredded') {
              totals.shredded += 1;
              runLog.warn(
                { cell: outcome.cellId, destroyedKey: outcome.destroyedKey, rows: outcome.rows },
                'cell not backed up: a key it needs was destroyed (erased data is still in the chat store)',
              );
              continue;
            }
            const entry = outcome.entry;
            totals.cells += 1;
            totals.rows += entry.rows;
            totals.bytesPlain += entry.bytesPlain;
            if (outcome.kind === 'reused') totals.reused += 1;
            else {
              totals.written += 1;
              totals.bytesStored += entry.length;
              pendingDigests.push({ table: entry.table, id: entry.id, key: entry.key, pack: entry.pack, offset: entry.offset, digest: outcome.digest });
            }
            pendingRows.push(entry);
            if (pendingRows.length >= CELL_ROWS_BATCH) await flushRows();
            if (totals.cells % 500 === 0) {
              options.onProgress?.({ table: table.name, tablesDone: index, tables: ordered.length, cells: totals.cells, rows: totals.rows, bytesPlain: totals.bytesPlain });
            }
          }
        };
        const dataClass = classOf(options.mapping, table.name);
        const sql = buildCellQuery(options.mapping, table.name, table.copyColumns, options.granularity);
        const copy = chat.query(pgCopyStreams.to(`COPY (${sql}) TO STDOUT`));
        for await (const cell of groupCells(copy, dataClass)) {
          throwIfAborted(options.signal, 'backup');
          await record(await writer.add(cell));
        }
        await record(await writer.flush());
        options.onProgress?.({ table: table.name, tablesDone: index + 1, tables: ordered.length, cells: totals.cells, rows: totals.rows, bytesPlain: totals.bytesPlain });
        runLog.info({ table: table.name, cells: totals.cells }, 'table done');
      }
      const packsWritten = await packs.close();
      await flushRows();
      await chat.query('COMMIT');

      const keyFile = await writeKeyFile({ vault, store, snapshotId, ...(lock === undefined ? {} : { lock }) });
      const header: SnapshotHeader = {
        id: snapshotId,
        createdAt: createdAt.toISOString(),
        completedAt: now().toISOString(),
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
      const key = manifestKey(snapshotId);
      await vault.recordStoreObjects(store.description, [{ key, kind: 'manifest', snapshotId }]);
      const written = await store.put(
        key,
        manifestLines({
          header,
          schema,
          keyFiles: await vault.keyFilesForSnapshot(snapshotId, store.description),
          cells: manifestCells(vault, snapshotId),
          sign: (message) => ({ keyId: signer.id, value: signer.sign(message) }),
        }),
        lock === undefined ? {} : { lock },
      );
      const durationMs = Date.now() - started;
      const result: BackupResult = {
        snapshotId,
        previousId: previous?.id ?? null,
        cells: totals.cells,
        cellsReused: totals.reused,
        cellsWritten: totals.written,
        cellsSkippedShredded: totals.shredded,
        rows: totals.rows,
        bytesPlain: totals.bytesPlain,
        bytesStored: totals.bytesStored,
        packs: packsWritten.length,
        keysCreated: keys.created,
        manifest: key,
        durationMs,
      };
      await vault.completeSnapshot(snapshotId, {
        manifestKey: key,
        manifestSha256: written.sha256,
        stats: { ...result, keyFile, store: store.description },
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
      await packs.abort();
      // No ROLLBACK: a COPY may still be streaming on this connection, and a query queued
      // behind it would wait forever. Closing the connection (finally) ends the read-only
      // transaction just as well.
      await vault.abandonSnapshot(snapshotId).catch(() => undefined);
      throw wrapForeign(ErrorCode.DATABASE, 'backup', err);
    } finally {
      options.signal?.removeEventListener('abort', cancel);
      await chat.end().catch(() => undefined);
    }
  });
}
