import type { LoadProgress } from '../restore/index.ts';
import type { BackupProgress } from '../snapshot/index.ts';
import type { VaultTableProgress } from '../vaultbackup/index.ts';
import type { ProgressUpdate } from './progress.ts';

/**
 * The jobs' progress reports as progress lines: one mapping per kind of report, so every
 * command shows the same job the same way (the demo's backup like `lethe backup`'s).
 */

/**
 * A backup: cells, rows and bytes read; the rows the plans read as the total (growing until
 * every table is planned, so no ETA before that); the table at hand.
 */
export function backupUpdate(p: BackupProgress, step = 'backup'): ProgressUpdate {
  return {
    step,
    detail: p.tablesPlanned === undefined ? p.table : `table ${p.table} (${p.tablesDone}/${p.tables} done)`,
    cells: p.cells,
    rows: p.rows,
    rowsTotal: p.rowsPlanned,
    totalGrows: p.tablesPlanned !== undefined && p.tablesPlanned < p.tables,
    bytes: p.bytesPlain,
  };
}

/** A verify or restore: cells, rows and plaintext bytes against the manifest's totals. */
export function loadUpdate(step: string, p: LoadProgress): ProgressUpdate {
  return { step, cells: p.cells, cellsTotal: p.cellsTotal, rows: p.rows, rowsTotal: p.rowsTotal, bytes: p.bytes, bytesTotal: p.bytesTotal };
}

/** A vault dump or load: tables done of all, rows so far, the table at hand. */
export function vaultUpdate(step: string, p: VaultTableProgress): ProgressUpdate {
  return { step, detail: `table ${p.table}`, items: p.tablesDone, itemsTotal: p.tables, unit: 'tables', rows: p.rows };
}

/** Seeding: tables done of all, rows written so far, the table at hand. */
export function seedUpdate(p: { table: string; rowsAll: number; tablesDone: number; tables: number }): ProgressUpdate {
  return { step: 'seed', detail: `table ${p.table}`, items: p.tablesDone, itemsTotal: p.tables, unit: 'tables', rows: p.rowsAll };
}
