import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import pg from 'pg';
import pgCopyStreams from 'pg-copy-streams';
import { copySessionStatements, groupCells } from '../cells/index.ts';
import { ErrorCode, LetheError, isLetheError, throwIfAborted, wrapForeign } from '../errors/index.ts';
import { Encapsulator, type SecretObserver, type Signer } from '../keys/index.ts';
import type { Logger } from '../log/index.ts';
import { ManifestWriter, manifestKey, type EncapsulationEntry, type SnapshotHeader } from '../manifest/index.ts';
import {
  buildCellQuery,
  buildOrphanCheckQuery,
  checkCoverage,
  classOf,
  readSchema,
  type Mapping,
} from '../mapping/index.ts';
import type { ObjectLock, ObjectStore } from '../storage/index.ts';
import type { CellDigestRecord, SnapshotCell, Vault } from '../vault/index.ts';
import { CellWriter, type CellOutcome, type PreviousCell } from './cell-writer.ts';
import { PackWriter } from './pack-writer.ts';
import { exportAudit } from '../audit/index.ts';

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
  /** The clock; tests inject one. */
  readonly now?: () => Date;
  /** Test hook: sees every secret the run makes (it must be found nowhere afterwards). */
  readonly observeSecrets?: SecretObserver;
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
  /** Dimension keys this run created. */
  readonly keysCreated: number;
  /** Key encapsulations (one per tenant with new cells) this run created. */
  readonly encapsulations: number;
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
    const keys = new Encapsulator(vault, masterRecipient, snapshotId, options.observeSecrets);
    // The digest key never leaves this process: the vault stores only digests, and only the
    // newest of each cell, deleted when a key the cell needs is destroyed.
    const digestKey = signer.derive(CELL_DIGEST_KEY_LABEL);
    let manifest: ManifestWriter | undefined;

    const totals = { cells: 0, reused: 0, written: 0, shredded: 0, rows: 0, bytesPlain: 0, bytesStored: 0 };
    /** Cells left out because a key they need is destroyed, per destroyed key (logged once, summed up). */
    const shreddedByKey = new Map<string, { cells: number; rows: number }>();
    /** Encapsulations of earlier snapshots that reused cells still derive their keys from. */
    const referenced = new Set<string>();
    let pendingRows: SnapshotCell[] = [];
    let pendingDigests: CellDigestRecord[] = [];
    // Cell rows go to the vault while the next batch is read and sealed: one batch in flight.
    let recording: Promise<void> = Promise.resolve();
    const flushRows = async (): Promise<void> => {
      // Cell rows name their tuples (recorded in the same transaction, or by an earlier one,
      // committed before this one starts) and encapsulations (stored when first drawn).
      const tuples = keys.takeTupleFacts();
      if (pendingRows.length === 0 && tuples.length === 0) return;
      const batch = pendingRows;
      const digests = pendingDigests;
      pendingRows = [];
      pendingDigests = [];
      await recording;
      recording = vault.addSnapshotCells(snapshotId, batch, digests, tuples);
      recording.catch(() => undefined);
    };

    // Two readers in one snapshot: the second imports the first's exported snapshot, so both
    // see exactly the same rows. While one table's cells are grouped, sealed and uploaded,
    // the server already sorts the next table's rows on the other connection (sorting is
    // most of what the server does for a cell query); the paused COPY holds only what fits
    // in the socket and the stream's buffer until it is read.
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
      // The manifest streams to the store as cells are written; the store makes it visible
      // only when the upload completes, after the last line (the signature).
      const key = manifestKey(snapshotId);
      await vault.recordStoreObjects(store.description, [{ key, kind: 'manifest', snapshotId }]);
      const writing = new ManifestWriter(header, schema);
      manifest = writing;
      const upload = store.put(key, writing.stream, {
        ...(lock === undefined ? {} : { lock }),
        ...(options.signal === undefined ? {} : { signal: options.signal }),
      });
      upload.catch(() => undefined);

      /** Checks table `index` for rows the mapping would lose, then starts its COPY on its reader. */
      const startTable = async (index: number): Promise<CopyStream> => {
        const table = ordered[index];
        const reader = readers[index % readers.length];
        if (table === undefined || reader === undefined) throw new LetheError(ErrorCode.INTERNAL, `no table ${index}`);
        const orphans = await reader.query<{ dropped: string; tenantless: string }>(
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
        const sql = buildCellQuery(options.mapping, table.name, table.copyColumns, options.granularity);
        return reader.query(pgCopyStreams.to(`COPY (${sql}) TO STDOUT`));
      };
      let next: Promise<CopyStream> | undefined = ordered.length > 0 ? startTable(0) : undefined;
      next?.catch(() => undefined);

      for (const [index, table] of ordered.entries()) {
        throwIfAborted(options.signal, 'backup');
        const copy = await (next as Promise<CopyStream>);
        next = index + 1 < ordered.length ? startTable(index + 1) : undefined;
        next?.catch(() => undefined);
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
              const seen = shreddedByKey.get(outcome.destroyedKey) ?? { cells: 0, rows: 0 };
              seen.cells += 1;
              seen.rows += outcome.rows;
              shreddedByKey.set(outcome.destroyedKey, seen);
              continue;
            }
            const { entry, tuple } = outcome;
            totals.cells += 1;
            totals.rows += entry.rows;
            totals.bytesPlain += entry.bytesPlain;
            if (outcome.kind === 'reused') {
              totals.reused += 1;
              referenced.add(entry.enc);
            } else {
              totals.written += 1;
              totals.bytesStored += entry.length;
              pendingDigests.push({ table: entry.table, id: entry.id, key: entry.key, pack: entry.pack, offset: entry.offset, digest: outcome.digest });
            }
            await writing.cell(entry);
            pendingRows.push({
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
              reused: entry.reused,
            });
            if (pendingRows.length >= CELL_ROWS_BATCH) await flushRows();
            if (totals.cells % 500 === 0) {
              options.onProgress?.({ table: table.name, tablesDone: index, tables: ordered.length, cells: totals.cells, rows: totals.rows, bytesPlain: totals.bytesPlain });
            }
          }
        };
        const dataClass = classOf(options.mapping, table.name);
        for await (const cell of groupCells(copy, dataClass)) {
          throwIfAborted(options.signal, 'backup');
          await record(await writer.add(cell));
        }
        await record(await writer.flush());
        options.onProgress?.({ table: table.name, tablesDone: index + 1, tables: ordered.length, cells: totals.cells, rows: totals.rows, bytesPlain: totals.bytesPlain });
        runLog.info({ table: table.name, cells: totals.cells }, 'table done');
      }
      for (const client of readers) await client.query('COMMIT');
      const packsWritten = await packs.close();
      await flushRows();
      await recording;
      for (const [destroyedKey, seen] of shreddedByKey) {
        runLog.warn({ destroyedKey, cells: seen.cells, rows: seen.rows }, 'cells not backed up: a key they need was destroyed (erased data is still in the chat store)');
      }

      // Every encapsulation a cell's key derives from: this run's, and earlier snapshots'
      // for the cells it references.
      const created = keys.created();
      const ownIds = new Set(created.map((e) => e.id));
      const earlier = await vault.getEncapsulations([...referenced].filter((id) => !ownIds.has(id)));
      const encapsulations: EncapsulationEntry[] = [
        ...created.map((e) => ({ id: e.id, tenant: e.tenant, kem: 'x25519' as const, ephemeral: Buffer.from(e.ephemeral).toString('hex') })),
        ...[...earlier.values()].map((e) => ({ id: e.id, tenant: e.tenant, kem: e.kem, ephemeral: Buffer.from(e.ephemeral).toString('hex') })),
      ].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
      const lost = [...referenced].filter((id) => !ownIds.has(id) && !earlier.has(id));
      if (lost.length > 0) {
        throw new LetheError(ErrorCode.VAULT, `encapsulation(s) ${lost.slice(0, 3).join(', ')} that reused cells derive their keys from are missing from the vault`);
      }
      keys.forget();
      writing.finish(encapsulations, now(), (message) => ({ keyId: signer.id, value: signer.sign(message) }));
      const written = await upload;
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
        keysCreated: keys.dimensionKeysCreated,
        encapsulations: created.length,
        manifest: key,
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
