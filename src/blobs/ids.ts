import { cellId, type CellTuple } from '../cells/index.ts';

/**
 * Names of blob cells. A table's blobs form a companion table `<table>.blob`: a `.` is never
 * in a mapped table's name (a plain lower-case SQL identifier), so the name cannot meet a
 * real table's. A blob cell belongs to the same tuple as its row (the same tuple key, so
 * the same dimension keys), and its id adds the row's primary key as a sixth component, so
 * each blob has its own id and so its own cell key.
 */

/** Suffix of a companion blob table's name. */
export const BLOB_TABLE_SUFFIX = '.blob';

/** `<table>.blob` */
export function blobTableName(table: string): string {
  return `${table}${BLOB_TABLE_SUFFIX}`;
}

/** True for a companion blob table's name. */
export function isBlobTable(table: string): boolean {
  return table.endsWith(BLOB_TABLE_SUFFIX);
}

/** The mapped table a companion blob table belongs to. */
export function rowTableOf(blobTable: string): string {
  return blobTable.slice(0, -BLOB_TABLE_SUFFIX.length);
}

/**
 * `<table>.blob/<tenant>/<period>/<subjects>/<conversation>/<pk>`: the cell id of the row's
 * tuple in the companion table, and the row's primary-key values, each percent-encoded (a
 * `-` escaped too) and joined by `,` (which percent-encoding always escapes).
 */
export function blobCellId(table: string, tuple: CellTuple, primaryKey: readonly string[]): string {
  const pk = primaryKey.map((v) => encodeURIComponent(v).replaceAll('-', '%2D')).join(',');
  return `${cellId(blobTableName(table), tuple)}/${pk}`;
}
