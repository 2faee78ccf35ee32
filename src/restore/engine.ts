import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { finished } from 'node:stream/promises';
import type pg from 'pg';
import pgCopyStreams from 'pg-copy-streams';
import { copySessionStatements } from '../cells/index.ts';
import { ErrorCode, LetheError, isLetheError, throwIfAborted } from '../errors/index.ts';
import type { KeyOpener } from '../keys/index.ts';
import type { CellEntry, SegmentProblem, SnapshotHeader, Totals, TrustedManifest } from '../manifest/index.ts';
import { schemaToDdl, type SchemaDescription } from '../mapping/index.ts';
import type { ObjectStore } from '../storage/index.ts';
import type { Vault } from '../vault/index.ts';
import type { DestructionRecord } from '../lifecycle/types.ts';
import { IN_MEMORY_CELL_BYTES, readCell, type ReadCell } from './cell-reader.ts';
import { equalConstantTime } from '../crypto/index.ts';
import { compareNatural } from '../util/tenant-order.ts';
import { isBlobTable, splitBlobPlaintext, type BlobTarget } from '../blobs/index.ts';
import { tripOnRejection, type Tripwire } from '../util/tripwire.ts';

/** One problem found while reading a snapshot. */
export interface Finding {
  /** The cell, object or check concerned. */
  readonly subject: string;
  readonly code: string;
  readonly problem: string;
}

export interface CellTally {
  cells: number;
  verified: number;
  shredded: number;
  failed: number;
  skipped: number;
  rows: number;
}

export interface LoadResult {
  readonly header: SnapshotHeader;
  readonly totals: Totals | null;
  readonly tally: CellTally;
  readonly findings: Finding[];
  /** Rows loaded per table (cells that passed every check). */
  readonly rowsByTable: Map<string, number>;
  /**
   * Cells that could not be opened because a dimension key was destroyed on purpose, per
   * destroyed key, with its destruction record (what, when, who, why).
   */
  readonly shredded: ShreddedByKey[];
  /**
   * Foreign keys added NOT VALID because rows refer to shredded rows (a reply to an erased
   * user's message): the rest of the data is intact, the reference dangles by design.
   */
  readonly constraintsNotValidated: string[];
}

/** The cells one destroyed key made unreadable, with the record that accounts for them. */
export interface ShreddedByKey {
  readonly keyId: string;
  readonly cells: number;
  /** Up to {@link SHREDDED_SAMPLE} cell ids, as examples. */
  readonly sampleCells: string[];
  readonly record: DestructionRecord;
}

const SHREDDED_SAMPLE = 5;

export interface LoadOptions {
  readonly store: ObjectStore;
  readonly vault: Vault;
  readonly opener: KeyOpener;
  /** The snapshot's manifest, authenticated by openManifest before anything here uses it. */
  readonly manifest: TrustedManifest;
  readonly snapshot: {
    readonly id: string;
    /**
     * Cells the backup itself left out because a key they needed was already destroyed
     * (erased data still in the chat store): rows referring to them dangle by design.
     */
    readonly cellsLeftOut?: number;
  };
  /** Connected, inside a transaction the caller commits or rolls back. */
  readonly target: pg.Client;
  /** PostgreSQL schema to create the tables in. */
  readonly targetSchema: string;
  /** `verify` carries on past failures and reports them all; `restore` stops at the first. */
  readonly mode: 'verify' | 'restore';
  /** Restore only this tenant's cells (and system cells). */
  readonly tenant?: string;
  readonly concurrency: number;
  /** Called after the header is read and before anything is created in the target. */
  readonly beforeLoad?: (header: SnapshotHeader, schema: SchemaDescription) => Promise<void>;
  readonly onProgress?: (p: LoadProgress) => void;
  readonly signal?: AbortSignal;
  /**
   * Where blob cells (files outside the database) are written back, each at its location.
   * Without it, verify checks each blob cell (sha256, AEAD) and discards the bytes; a
   * restore refuses blob cells (runRestore asks for a target first).
   */
  readonly blobs?: BlobTarget;
}

/**
 * How far a load has got: cells taken from the manifest (loaded, shredded or failed), rows
 * loaded, and the plaintext bytes of the cells taken; with the manifest's totals when the
 * whole snapshot is loaded (a `--tenant` restore knows no total before it ends).
 */
export interface LoadProgress {
  readonly cells: number;
  readonly rows: number;
  readonly bytes: number;
  readonly cellsTotal?: number;
  readonly rowsTotal?: number;
  readonly bytesTotal?: number;
}

const BATCH = 1024;
/** Ciphertext bytes a batch holds at most (large cells stream and count only their cap). */
const BATCH_BYTES = 32 << 20;
/** Longest ranged read of neighbouring cells. */
const RUN_BYTES = 8 << 20;

class TableCopy {
  private readonly stream: ReturnType<typeof pgCopyStreams.from>;
  private readonly done: Promise<void>;
  /** Trips when the COPY fails, so that a wait for drain does not hang on a dead stream. */
  private readonly failed: Tripwire;

  constructor(client: pg.Client, sql: string) {
    this.stream = client.query(pgCopyStreams.from(sql));
    this.done = finished(this.stream);
    this.done.catch(() => undefined);
    this.failed = tripOnRejection(this.done);
  }

  async write(chunk: Uint8Array): Promise<void> {
    if (!this.stream.write(chunk)) await this.failed.wait(once(this.stream, 'drain'));
  }

  async end(): Promise<void> {
    this.stream.end();
    await this.done;
  }

  /**
   * Abandons the COPY: the server gets CopyFail, which aborts the statement (and so the
   * transaction). Until then the connection is in COPY mode and every later query on it,
   * ROLLBACK included, would wait forever.
   */
  async abort(reason: string): Promise<void> {
    this.stream.destroy(new Error(reason));
    await this.done.catch(() => undefined);
  }
}

function quoteIdent(name: string): string {
  return `"${name.replaceAll('"', '""')}"`;
}

/**
 * Runs one DDL statement built from the manifest's schema with the extended query protocol,
 * which executes exactly one statement: even a definition that slipped past every check
 * could not append a second one.
 */
async function runDdl(client: pg.Client, statement: string): Promise<void> {
  await client.query({ text: statement, queryMode: 'extended' } as pg.QueryConfig);
}

/**
 * Streams a snapshot into `target` from its authenticated manifest (see openManifest: the
 * signature, sha256 and chain are checked before this runs): the schema created from it,
 * each table's cells fetched (several ahead), checked and loaded with one COPY per table,
 * then constraints and indexes added. Every check lethe can make without the source is made:
 * range sha256 before decryption, the AEAD and row count after, and the totals against
 * what was loaded.
 *
 * In `restore` mode the first failure throws (the caller rolls back). In `verify` mode
 * failures become findings and loading carries on where it is safe.
 */
export async function loadSnapshot(options: LoadOptions): Promise<LoadResult> {
  const { store, vault, opener, target, mode, manifest } = options;
  const findings: Finding[] = [];
  const tally: CellTally = { cells: 0, verified: 0, shredded: 0, failed: 0, skipped: 0, rows: 0 };
  const rowsByTable = new Map<string, number>();
  const shreddedByKey = new Map<string, { keyId: string; cells: number; sampleCells: string[]; record: DestructionRecord }>();
  const destructionRecords = new Map<string, DestructionRecord | null>();
  const constraintsNotValidated: string[] = [];
  const header: SnapshotHeader = manifest.header;
  const totals: Totals = manifest.totals;
  const fail = (subject: string, code: string, problem: string): void => {
    if (mode === 'restore') throw new LetheError(ErrorCode.INTEGRITY, `${subject}: ${problem}`);
    findings.push({ subject, code, problem });
  };

  let ddl: { preData: string[]; postData: string[] } = { preData: [], postData: [] };
  const columnsOf = new Map<string, readonly string[]>();
  let copy: { table: string; stream: TableCopy } | undefined;
  let copyBroken = false;
  let batch: CellEntry[] = [];
  let batchBytes = 0;
  let bytesTaken = 0;
  const progressTotals =
    options.tenant === undefined ? { cellsTotal: totals.cells, rowsTotal: totals.rows, bytesTotal: totals.bytesPlain } : {};

  const load = async (cell: CellEntry, read: ReadCell): Promise<void> => {
    tally.cells += 1;
    if (read.status === 'shredded') {
      // Shredded on purpose only if a destroyed key has a destruction record; a key that is
      // gone without one is damage (or tampering), and the cell is a failure.
      const accounted = read.destroyed.find((id) => (destructionRecords.get(id) ?? null) !== null);
      if (accounted === undefined) {
        tally.failed += 1;
        fail(`cell ${cell.id}`, 'KEY_DESTROYED_WITHOUT_RECORD', `its key needs ${read.destroyed.join(', ')}, destroyed with no destruction record in the vault`);
        return;
      }
      tally.shredded += 1;
      const record = destructionRecords.get(accounted) as DestructionRecord;
      const entry = shreddedByKey.get(accounted) ?? { keyId: accounted, cells: 0, sampleCells: [], record };
      entry.cells += 1;
      if (entry.sampleCells.length < SHREDDED_SAMPLE) entry.sampleCells.push(cell.id);
      shreddedByKey.set(accounted, entry);
      return;
    }
    if (read.status === 'failed') {
      tally.failed += 1;
      fail(`cell ${cell.id}`, 'CELL_UNREADABLE', read.problem);
      return;
    }
    if (isBlobTable(cell.table)) {
      await loadBlob(cell, read.plaintext);
      return;
    }
    if (copy?.table !== cell.table) {
      await copy?.stream.end();
      const columns = columnsOf.get(cell.table);
      if (columns === undefined) throw new LetheError(ErrorCode.MANIFEST_INVALID, `cell ${cell.id} names table ${cell.table}, which the manifest header does not list`);
      const sql = `COPY ${quoteIdent(options.targetSchema)}.${quoteIdent(cell.table)} (${columns.map(quoteIdent).join(', ')}) FROM STDIN`;
      copy = { table: cell.table, stream: new TableCopy(target, sql) };
    }
    const chunks = read.plaintext instanceof Uint8Array ? [read.plaintext] : read.plaintext;
    for await (const chunk of chunks) await copy.stream.write(chunk);
    tally.verified += 1;
    tally.rows += read.rows;
    rowsByTable.set(cell.table, (rowsByTable.get(cell.table) ?? 0) + read.rows);
  };

  /**
   * A blob cell: its plaintext is the location header and the file's bytes
   * (src/blobs/plaintext.ts), checked to the end (the AEAD tag comes last), and written to
   * the blob target at its location when there is one. A cell whose check fails leaves no
   * file (the target writes a temp file and renames it only at the end).
   */
  const loadBlob = async (cell: CellEntry, plaintext: AsyncIterable<Uint8Array> | Uint8Array): Promise<void> => {
    try {
      const { location, body } = await splitBlobPlaintext(plaintext instanceof Uint8Array ? [plaintext] : plaintext);
      if (options.blobs !== undefined) {
        await options.blobs.write(location, body, options.signal);
      } else if (mode === 'restore') {
        throw new LetheError(ErrorCode.USAGE, `cell ${cell.id} is a file outside the database and the restore has no blob target: pass --blob-target URL`);
      } else {
        let drained = 0;
        for await (const chunk of body) drained += chunk.length;
        if (drained < 0) throw new LetheError(ErrorCode.INTERNAL, 'unreachable');
      }
    } catch (err) {
      if (mode === 'restore' || (isLetheError(err) && err.code === ErrorCode.ABORTED)) throw err;
      tally.failed += 1;
      fail(`cell ${cell.id}`, 'BLOB_UNREADABLE', isLetheError(err) ? `${err.code}: ${err.message}` : (err as Error).message);
      return;
    }
    tally.verified += 1;
    // Counted per table (the manifest's rowsByTable counts a blob cell as one row), not in tally.rows.
    rowsByTable.set(cell.table, (rowsByTable.get(cell.table) ?? 0) + 1);
  };

  /** Encapsulations whose manifest copy was checked against the vault's (null: they agree). */
  const encapsulationProblems = new Map<string, string | null>();
  const checkEncapsulations = async (ids: readonly string[]): Promise<void> => {
    const unknown = [...new Set(ids)].filter((id) => !encapsulationProblems.has(id));
    if (unknown.length === 0) return;
    const stored = await vault.getEncapsulations(unknown);
    for (const id of unknown) {
      const listed = manifest.encapsulations.get(id);
      const known = stored.get(id);
      encapsulationProblems.set(
        id,
        listed === undefined
          ? `its encapsulation ${id} is not listed in the manifest`
          : known === undefined
            ? `its encapsulation ${id} is not in the vault`
            : !equalConstantTime(listed.ephemeral, Buffer.from(known.ephemeral).toString('hex')) ||
                listed.kem !== known.kem ||
                (listed.kem === 'x25519-mlkem768' && !sameCiphertexts(listed.ciphertexts, await vault.listEncapsulationCiphertexts(id)))
              ? `the manifest and the vault disagree on encapsulation ${id}`
              : null,
      );
    }
  };

  const runBatch = async (): Promise<void> => {
    const cells = batch;
    batch = [];
    batchBytes = 0;
    if (cells.length === 0) return;
    await opener.prefetch(cells.map((c) => ({ key: c.key, encapsulation: c.enc })));
    await checkEncapsulations(cells.map((c) => c.enc));
    const destroyed = new Set<string>();
    for (const cell of cells) {
      const key = await opener.open(cell.key, cell.enc);
      if (!key.ok && 'destroyed' in key) for (const id of key.destroyed) if (!destructionRecords.has(id)) destroyed.add(id);
    }
    if (destroyed.size > 0) {
      const records = await vault.getDestructions([...destroyed]);
      for (const id of destroyed) destructionRecords.set(id, records.get(id) ?? null);
    }
    // Neighbouring cells of one pack are fetched with one ranged read (up to RUN_BYTES),
    // `concurrency` reads at a time, ahead of the loading, which keeps manifest order.
    const runs: { pack: string; offset: number; length: number; cells: number[] }[] = [];
    for (const [i, cell] of cells.entries()) {
      if (cell.length > IN_MEMORY_CELL_BYTES) continue;
      const run = runs.at(-1);
      if (run !== undefined && run.pack === cell.pack && run.offset + run.length === cell.offset && run.length + cell.length <= RUN_BYTES) {
        run.length += cell.length;
        run.cells.push(i);
      } else {
        runs.push({ pack: cell.pack, offset: cell.offset, length: cell.length, cells: [i] });
      }
    }
    const ciphertexts = new Map<number, Promise<Uint8Array>>();
    const signalOpt = options.signal === undefined ? {} : { signal: options.signal };
    let started = 0;
    const startRuns = (upTo: number): void => {
      for (; started < Math.min(upTo, runs.length); started++) {
        const run = runs[started] as (typeof runs)[number];
        const read = store.getRange(run.pack, run.offset, run.length, signalOpt);
        read.catch(() => undefined);
        for (const i of run.cells) {
          const cell = cells[i] as CellEntry;
          const slice = read.then((bytes) => bytes.subarray(cell.offset - run.offset, cell.offset - run.offset + cell.length));
          slice.catch(() => undefined);
          ciphertexts.set(i, slice);
        }
      }
    };
    let runIndex = 0;
    for (let i = 0; i < cells.length; i++) {
      throwIfAborted(options.signal, 'loading a snapshot');
      const cell = cells[i] as CellEntry;
      while (runIndex < runs.length && ((runs[runIndex] as (typeof runs)[number]).cells.at(-1) ?? -1) < i) runIndex += 1;
      startRuns(runIndex + options.concurrency);
      const key = await opener.open(cell.key, cell.enc);
      const problem = encapsulationProblems.get(cell.enc) ?? null;
      let read: ReadCell;
      if (problem !== null) {
        read = { status: 'failed', problem };
      } else if (key.ok && key.dimensionIds.join('\n') !== cell.dims.join('\n')) {
        read = { status: 'failed', problem: `the manifest says it needs ${cell.dims.join(', ')}, the vault ${key.dimensionIds.join(', ')}` };
      } else {
        let ciphertext: Uint8Array | undefined;
        let fetchProblem: string | null = null;
        try {
          ciphertext = await ciphertexts.get(i);
        } catch (err) {
          fetchProblem = isLetheError(err) ? `${err.code}: ${err.message}` : (err as Error).message;
        }
        read = fetchProblem !== null && key.ok
          ? { status: 'failed', problem: fetchProblem }
          : await readCell(cell, { store, key, ciphertext, signal: options.signal });
        // A shredded cell's rows are gone whatever its bytes hold, so a restore passes over it;
        // verify still checks the bytes it fetched anyway, because a pack that rots or is
        // altered there is damaged storage the operator must hear of.
        if (mode === 'verify' && read.status === 'shredded' && cell.length <= IN_MEMORY_CELL_BYTES) {
          const damage =
            fetchProblem ??
            (ciphertext === undefined
              ? null
              : createHash('sha256').update(ciphertext).digest('hex') === cell.sha256
                ? null
                : `ciphertext sha256 does not match the manifest (${cell.sha256}): the pack was modified`);
          if (damage !== null) fail(`cell ${cell.id}`, 'SHREDDED_CELL_DAMAGED', `(shredded, its rows are gone either way) ${damage}`);
        }
      }
      await load(cell, read);
      bytesTaken += cell.bytesPlain;
      options.onProgress?.({ cells: tally.cells, rows: tally.rows, bytes: bytesTaken, ...progressTotals });
    }
  };

  for (const statement of copySessionStatements()) await target.query(statement);
  for (const table of header.tables) columnsOf.set(table.name, table.columns);
  try {
    await options.beforeLoad?.(header, manifest.schema);
    ddl = schemaToDdl(manifest.schema, { pgSchema: options.targetSchema });
    for (const statement of ddl.preData) await runDdl(target, statement);
    const cells = manifest.cells({
      ...(options.tenant === undefined ? {} : { tenant: options.tenant }),
      ...(options.signal === undefined ? {} : { signal: options.signal }),
      // In verify mode a segment that cannot be used is a finding, and the others are still
      // checked; a restore stops at it (the caller rolls back).
      ...(mode === 'verify'
        ? {
            onProblem: (p: SegmentProblem): void => {
              tally.cells += p.cells;
              tally.failed += p.cells;
              findings.push({ subject: `segment ${p.segment}`, code: p.code, problem: p.problem });
            },
          }
        : {}),
    });
    for await (const cell of cells) {
      if (options.tenant !== undefined && cell.tenant !== null && cell.tenant !== options.tenant) {
        tally.skipped += 1;
        continue;
      }
      batch.push(cell);
      batchBytes += Math.min(cell.length, IN_MEMORY_CELL_BYTES);
      if (batch.length >= BATCH || batchBytes >= BATCH_BYTES) await runBatch();
    }
    await runBatch();
    await copy?.stream.end();
  } catch (err) {
    copyBroken = true;
    await copy?.stream.abort('lethe: loading the snapshot failed');
    if (mode === 'restore' || !isLetheError(err) || err.code === ErrorCode.ABORTED) throw err;
    findings.push({ subject: manifest.key, code: err.code, problem: err.message });
  }

  if (!copyBroken) {
    for (const statement of ddl.postData) {
      const foreignKey = (tally.shredded > 0 || (options.snapshot.cellsLeftOut ?? 0) > 0) && FOREIGN_KEY.test(statement);
      if (mode === 'restore' && !foreignKey) {
        await runDdl(target, statement);
        continue;
      }
      await target.query('SAVEPOINT post_data');
      try {
        await runDdl(target, statement);
        await target.query('RELEASE SAVEPOINT post_data');
      } catch (err) {
        await target.query('ROLLBACK TO SAVEPOINT post_data');
        if (foreignKey) {
          // Rows that refer to shredded rows (another user's reply to an erased message)
          // are kept; the constraint still guards every new row.
          await runDdl(target, `${statement} NOT VALID`);
          await target.query('RELEASE SAVEPOINT post_data');
          constraintsNotValidated.push(statement.replace(/^ALTER TABLE /, ''));
          continue;
        }
        if (mode === 'restore') throw err;
        findings.push({ subject: 'schema', code: 'CONSTRAINT_FAILED', problem: `${statement.slice(0, 120)}: ${(err as Error).message}` });
      }
    }
  }
  if (options.tenant === undefined && tally.shredded === 0 && tally.failed === 0 && !copyBroken) {
    for (const [table, rows] of Object.entries(totals.rowsByTable)) {
      const loaded = rowsByTable.get(table) ?? 0;
      if (loaded !== rows) fail(`table ${table}`, 'ROW_COUNT', `loaded ${loaded} rows, the manifest totals say ${rows}`);
    }
    if (totals.cells !== tally.cells) fail('manifest', 'CELL_COUNT', `lists ${tally.cells} cells, its totals say ${totals.cells}`);
  }
  const shredded = [...shreddedByKey.values()].sort((a, b) => compareNatural(a.keyId, b.keyId));
  return { header, totals, tally, findings, rowsByTable, shredded, constraintsNotValidated };
}

const FOREIGN_KEY = /^ALTER TABLE .* ADD CONSTRAINT .* FOREIGN KEY /s;

/** How many cells a snapshot's backup left out as shredded, from the vault's stats of it. */
export function leftOut(stats: Readonly<Record<string, unknown>> | null): number {
  const n = stats?.['cellsSkippedShredded'];
  return typeof n === 'number' && Number.isSafeInteger(n) && n > 0 ? n : 0;
}

/** True when a manifest's ML-KEM ciphertexts (base64, by dimension key) are exactly the vault's. */
function sameCiphertexts(listed: Readonly<Record<string, string>>, stored: ReadonlyMap<string, Uint8Array>): boolean {
  const ids = Object.keys(listed);
  return ids.length === stored.size && ids.every((id) => {
    const bytes = stored.get(id);
    return bytes !== undefined && equalConstantTime(listed[id] ?? '', Buffer.from(bytes).toString('base64'));
  });
}
