import { randomBytes } from 'node:crypto';
import { createWriteStream, type WriteStream } from 'node:fs';
import { mkdir, readdir, rename, rm, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { once } from 'node:events';
import { copyLines, decodeCopyField } from '../cells/copy-text.ts';
import { ErrorCode, LetheError, isLetheError, throwIfAborted } from '../errors/index.ts';
import { KeyOpener, type MasterKeyring } from '../keys/index.ts';
import { cellEntryOf } from '../manifest/index.ts';
import type { Mapping } from '../mapping/index.ts';
import { readCell } from '../restore/cell-reader.ts';
import { openSnapshotManifest } from '../restore/manifest-source.ts';
import type { ObjectStore } from '../storage/index.ts';
import type { SnapshotCell, Vault } from '../vault/index.ts';
import { holdCovers } from './hold-match.ts';
import { isBlobTable, openBlobTarget, rowTableOf, splitBlobPlaintext, type BlobTarget } from '../blobs/index.ts';
import { holdToJson } from './holds.ts';
import type { CellKeyFacts, Hold } from './types.ts';

export interface ExportOptions {
  readonly vault: Vault;
  readonly store: ObjectStore;
  readonly mapping: Mapping;
  /** Opens dimension-key wraps: a keyring by master epoch (keys/master.ts), or one age identity. */
  readonly masterIdentity: string | MasterKeyring;
  readonly caseId: string;
  /** Directory to create; refused when it exists and is not empty. */
  readonly outDir: string;
  readonly actor: string;
  readonly signal?: AbortSignal;
  readonly onProgress?: (p: { cells: number; rows: number }) => void;
}

export interface ExportResult {
  readonly caseId: string;
  readonly outDir: string;
  readonly holds: number;
  /** Snapshots the cells were read from, newest first. */
  readonly snapshots: string[];
  readonly cells: number;
  readonly rowsByTable: Record<string, number>;
  /** Held cells that could not be read (with why): an e-discovery export must say so. */
  readonly unreadable: { cell: string; snapshot: string; problem: string }[];
  readonly durationMs: number;
}

const BATCH = 256;

/**
 * `lethe export --case ID --out DIR`: the data a legal hold keeps, as NDJSON per table (one
 * JSON object per row, column name → value in PostgreSQL's text form, null for NULL).
 *
 * Every snapshot lethe still knows (complete or expired, newest first) is searched for
 * cells the case's selectors cover; each cell is taken from the newest snapshot holding
 * it. Cells are opened through their own keys or, once a period was shredded, through the
 * case's re-wrap. Rows are then filtered to the selectors' dates when the table's
 * timestamp is one of its own columns (a cell spans a whole period). Held files outside the
 * database go to `files/<table>/<location>` (`rowsByTable["<table>.blob"]` counts them). The files are written
 * to a temporary directory beside DIR and renamed into place at the end, so DIR never
 * holds half an export. Files are readable by the owner only: this is the case's data in
 * clear.
 */
export async function exportCase(options: ExportOptions): Promise<ExportResult> {
  const started = Date.now();
  const { vault, store } = options;
  const holds = (await vault.listHolds()).filter((h) => h.caseId === options.caseId);
  if (holds.length === 0) {
    throw new LetheError(ErrorCode.NOT_FOUND, `no legal hold has case id ${options.caseId}; see \`lethe hold list\``);
  }
  const outDir = resolve(options.outDir);
  await refuseNonEmpty(outDir);
  const work = join(dirname(outDir), `.${randomBytes(6).toString('hex')}.lethe-export-partial`);
  await mkdir(work, { recursive: true, mode: 0o700 });
  const files = new Map<string, WriteStream>();
  const opener = new KeyOpener(vault, options.masterIdentity);
  const tenants = new Set(holds.map((h) => h.tenant));
  const seen = new Set<string>();
  const rowsByTable: Record<string, number> = {};
  const unreadable: ExportResult['unreadable'] = [];
  const used: string[] = [];
  const blobTargets = new Map<string, BlobTarget>();
  let cells = 0;
  let rows = 0;
  try {
    const columns = await tableColumns(vault, store);
    const snapshots = (await vault.listSnapshots({ includeIncomplete: true })).filter((s) => s.status === 'complete' || s.status === 'expired');
    for (const snapshot of snapshots) {
      let batch: SnapshotCell[] = [];
      const found = { any: false };
      const flush = async (): Promise<void> => {
        const pending = batch;
        batch = [];
        if (pending.length === 0) return;
        const facts = await vault.getCellKeys([...new Set(pending.map((c) => c.key))]);
        const held = pending.filter((c) => {
          const key = facts.get(c.key);
          return key !== undefined && holds.some((h) => holdCovers(h, key));
        });
        if (held.length === 0) return;
        await opener.prefetch(held.map((c) => ({ key: c.key, encapsulation: c.encapsulation })));
        for (const cell of held) {
          throwIfAborted(options.signal, 'exporting held data');
          seen.add(`${cell.table}\0${cell.id}`);
          const tableColumns = columns.get(cell.table);
          const read = await readCell(cellEntryOf(cell, facts.get(cell.key)?.dimensionIds ?? []), { store, key: await opener.open(cell.key, cell.encapsulation) });
          if (isBlobTable(cell.table) && read.status === 'ok') {
            // A held file outside the database: written under files/<table>/<its location>.
            const table = rowTableOf(cell.table);
            let target = blobTargets.get(table);
            if (target === undefined) {
              target = await openBlobTarget(join(work, 'files', table));
              blobTargets.set(table, target);
            }
            try {
              const { location, body } = await splitBlobPlaintext(read.plaintext instanceof Uint8Array ? [read.plaintext] : read.plaintext);
              await target.write(location, body, options.signal);
            } catch (err) {
              if (isLetheError(err, ErrorCode.ABORTED)) throw err;
              unreadable.push({ cell: cell.id, snapshot: snapshot.id, problem: (err as Error).message });
              continue;
            }
            found.any = true;
            cells += 1;
            rowsByTable[cell.table] = (rowsByTable[cell.table] ?? 0) + 1;
            options.onProgress?.({ cells, rows });
            continue;
          }
          if (read.status !== 'ok' || tableColumns === undefined) {
            const problem = read.status === 'shredded'
              ? `its keys were destroyed (${read.destroyed.join(', ')})`
              : read.status === 'failed' ? read.problem : `no manifest names the columns of table ${cell.table}`;
            unreadable.push({ cell: cell.id, snapshot: snapshot.id, problem });
            continue;
          }
          found.any = true;
          cells += 1;
          const key = facts.get(cell.key) as CellKeyFacts;
          const selectors = holds.filter((h) => holdCovers(h, key));
          const inRange = rowFilter(options.mapping, cell.table, tableColumns, selectors);
          const out = await fileFor(files, work, cell.table);
          const source = read.plaintext instanceof Uint8Array ? [read.plaintext] : read.plaintext;
          for await (const line of copyLines(toAsync(source))) {
            const fields = line.subarray(0, line.length - 1).toString('utf8').split('\t').map(decodeCopyField);
            if (!inRange(fields)) continue;
            const row: Record<string, string | null> = {};
            tableColumns.forEach((name, i) => (row[name] = fields[i] ?? null));
            if (!out.write(`${JSON.stringify(row)}\n`)) await once(out, 'drain');
            rowsByTable[cell.table] = (rowsByTable[cell.table] ?? 0) + 1;
            rows += 1;
          }
          options.onProgress?.({ cells, rows });
        }
      };
      for await (const cell of vault.iterateSnapshotCells(snapshot.id, { order: 'table' })) {
        if (cell.tenant === null || !tenants.has(cell.tenant) || seen.has(`${cell.table}\0${cell.id}`)) continue;
        batch.push(cell);
        if (batch.length >= BATCH) await flush();
      }
      await flush();
      if (found.any) used.push(snapshot.id);
    }
    for (const stream of files.values()) {
      stream.end();
      await once(stream, 'finish');
    }
    const result: ExportResult = {
      caseId: options.caseId,
      outDir,
      holds: holds.length,
      snapshots: used,
      cells,
      rowsByTable,
      unreadable,
      durationMs: Date.now() - started,
    };
    const summary = {
      format: 'lethe.export.v1',
      caseId: options.caseId,
      exportedAt: new Date().toISOString(),
      selectors: holds.map(holdToJson),
      snapshots: used,
      cells,
      rowsByTable,
      unreadable,
    };
    await writeFile(join(work, 'export.json'), `${JSON.stringify(summary, null, 2)}\n`, { mode: 0o600 });
    await rm(outDir, { recursive: true, force: true }); // empty or absent: checked above
    await rename(work, outDir);
    await vault.appendAudit({
      actor: options.actor,
      action: 'hold.export',
      subject: options.caseId,
      details: { cells, rows, tables: Object.keys(rowsByTable).length, unreadable: unreadable.length, snapshots: used.length },
    });
    return result;
  } catch (err) {
    for (const stream of files.values()) stream.destroy();
    await rm(work, { recursive: true, force: true });
    throw err;
  }
}


async function refuseNonEmpty(dir: string): Promise<void> {
  let entries: string[];
  try {
    entries = await readdir(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw new LetheError(ErrorCode.USAGE, `--out ${dir} cannot be used: ${(err as Error).message}`);
  }
  if (entries.length > 0) {
    throw new LetheError(ErrorCode.USAGE, `--out ${dir} is not empty; give a new directory so that no earlier export is overwritten`);
  }
}

async function fileFor(files: Map<string, WriteStream>, dir: string, table: string): Promise<WriteStream> {
  let stream = files.get(table);
  if (stream === undefined) {
    stream = createWriteStream(join(dir, `${table}.ndjson`), { mode: 0o600 });
    await once(stream, 'open');
    files.set(table, stream);
  }
  return stream;
}

/**
 * Table → COPY columns, from the newest manifest still in the bucket, authenticated like
 * every manifest read (sha256 against the vault, signature, chain) before its header is
 * used. A manifest that fails authentication stops the export (INTEGRITY): the column
 * layout of a legal hold's export must not come from an object anyone could have written.
 * A manifest that is gone (expired) is skipped for the next newest.
 */
async function tableColumns(vault: Vault, store: ObjectStore): Promise<Map<string, readonly string[]>> {
  const columns = new Map<string, readonly string[]>();
  for (const snapshot of await vault.listSnapshots({ limit: 5 })) {
    if (snapshot.status !== 'complete' || snapshot.manifestKey === null || snapshot.manifestSha256 === null) continue;
    let manifest;
    try {
      manifest = await openSnapshotManifest(vault, store, { ...snapshot, manifestKey: snapshot.manifestKey, manifestSha256: snapshot.manifestSha256 });
    } catch (err) {
      if (isLetheError(err, ErrorCode.NOT_FOUND)) continue;
      throw err;
    }
    try {
      for (const table of manifest.header.tables) columns.set(table.name, table.columns);
      return columns;
    } finally {
      await manifest.close();
    }
  }
  return columns;
}

/**
 * Keeps a row when some selector's dates include its timestamp. Only a timestamp in the
 * table's own column can be read here; otherwise the whole cell (its period) is exported.
 */
function rowFilter(mapping: Mapping, table: string, columns: readonly string[], selectors: readonly Hold[]): (fields: (string | null)[]) => boolean {
  const ts = mapping.tables[table]?.timestamp;
  if (ts === undefined || ts.column.includes('.') || selectors.some((h) => h.from === null && h.to === null)) return () => true;
  const index = columns.indexOf(ts.column);
  if (index < 0) return () => true;
  return (fields) => {
    const at = parseTimestamp(fields[index] ?? null, ts.type);
    if (at === null) return true;
    return selectors.some((h) => (h.from === null || at >= h.from.getTime()) && (h.to === null || at <= h.to.getTime()));
  };
}

function parseTimestamp(value: string | null, type: string): number | null {
  if (value === null) return null;
  if (type === 'epoch_ms') return Number(value);
  if (type === 'epoch_s') return Number(value) * 1000;
  // COPY writes timestamptz as `2025-03-01 12:00:00.123+00` under the pinned UTC session.
  const iso = value.replace(' ', 'T').replace(/([+-]\d{2})$/, '$1:00');
  const at = Date.parse(type === 'timestamp' ? `${iso}Z` : iso);
  return Number.isNaN(at) ? null : at;
}

async function* toAsync(source: Iterable<Uint8Array> | AsyncIterable<Uint8Array>): AsyncGenerator<Uint8Array> {
  for await (const chunk of source) yield chunk;
}
