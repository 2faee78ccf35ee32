import { throwIfAborted } from '../errors/index.ts';
import { chunks, query, toSafeInt, type VaultContext } from './db.ts';

/**
 * One cell of a snapshot: where its ciphertext is and what its plaintext was. Field names
 * are the manifest's, so a manifest cell entry can be stored as it is.
 */
export interface SnapshotCell {
  /** The cell id, unique within (snapshot, table). */
  readonly id: string;
  readonly table: string;
  readonly tenant: string | null;
  /** Data class (`messages`, `attachments`, ...). */
  readonly class: string;
  readonly period: string | null;
  readonly author: string | null;
  /** The tuple (cell_keys.id) whose dimension keys the cell needs. */
  readonly key: string;
  /** The key encapsulation the ciphertext was written under (its snapshot's, for a reused cell). */
  readonly encapsulation: string;
  /** Pack object id, and the sealed cell's byte range in it. */
  readonly pack: string;
  readonly offset: number;
  readonly length: number;
  /** Hex SHA-256 of the ciphertext range. */
  readonly sha256: string;
  readonly rows: number;
  readonly bytesPlain: number;
  /** True when the ciphertext was written by an earlier snapshot and only referenced. */
  readonly reused: boolean;
}

/** A row of the snapshot_cells view (and, without `reused`, of cell_copies). */
export interface CellRow {
  table_name: string;
  cell_id: string;
  tenant: string | null;
  data_class: string;
  period: string | null;
  author: string | null;
  key_id: string;
  encapsulation: string;
  pack: string;
  pack_offset: string;
  pack_length: string;
  sha256: string;
  row_count: string;
  bytes_plain: string;
  reused: boolean;
}

const COLUMNS =
  'table_name, cell_id, tenant, data_class, period, author, key_id, encapsulation, pack, pack_offset, ' +
  'pack_length, sha256, row_count, bytes_plain, reused';

const PAGE_ROWS = 5000;

/**
 * The encapsulations the cells of each tuple in `keyIds` were written under, in complete
 * and expired snapshots (what a legal hold must keep readable), by cell key id.
 */
export async function encapsulationsOfKeys(ctx: VaultContext, keyIds: readonly string[]): Promise<Map<string, string[]>> {
  const found = new Map<string, string[]>();
  for (const batch of chunks([...new Set(keyIds)])) {
    const { rows } = await query<{ key_id: string; encapsulation: string }>(
      ctx.pool,
      'reading the encapsulations of held tuples',
      `SELECT DISTINCT c.key_id, c.encapsulation FROM ${ctx.t.snapshotCells} c
         JOIN ${ctx.t.snapshots} s ON s.id = c.snapshot_id AND s.status IN ('complete', 'expired')
        WHERE c.key_id = ANY($1::text[]) ORDER BY 1, 2`,
      [batch],
    );
    for (const r of rows) found.set(r.key_id, [...(found.get(r.key_id) ?? []), r.encapsulation]);
  }
  return found;
}

/**
 * Cell orders: `pack` walks each pack front to back; `table` groups a table's cells (by
 * cell id, in byte order), which is how restore loads them, one COPY per table.
 */
export type CellOrder = 'pack' | 'table';

const ORDERS: Readonly<Record<CellOrder, { columns: string; placeholders: string; arity: number; values: (r: CellRow) => unknown[] }>> = {
  pack: {
    columns: 'pack, pack_offset, table_name, cell_id',
    placeholders: '$2, $3::int8, $4, $5',
    arity: 4,
    values: (r) => [r.pack, r.pack_offset, r.table_name, r.cell_id],
  },
  table: {
    columns: 'table_name COLLATE "C", cell_id COLLATE "C"',
    placeholders: '$2 COLLATE "C", $3 COLLATE "C"',
    arity: 2,
    values: (r) => [r.table_name, r.cell_id],
  },
};

/**
 * Yields every cell of a snapshot in (pack, offset) order (or table order, see CellOrder), so a reader can walk each pack
 * front to back with ranged GETs. Keyset pagination: one page in memory at a time and no
 * connection held between pages (nothing to leak if the consumer stops early). Yields
 * nothing for an unknown snapshot; check it with getSnapshot first.
 */
export async function* iterateSnapshotCells(
  ctx: VaultContext,
  snapshotId: string,
  options: { pageRows?: number; signal?: AbortSignal; order?: CellOrder } = {},
): AsyncGenerator<SnapshotCell> {
  const order = ORDERS[options.order ?? 'pack'];
  const pageRows = options.pageRows ?? PAGE_ROWS;
  const doing = `reading the cells of snapshot ${snapshotId}`;
  let after: CellRow | undefined;
  for (;;) {
    throwIfAborted(options.signal, doing);
    // Two texts rather than `$2 IS NULL OR ...`, so every page is plainly an index range
    // scan starting after the last row, whatever the planner makes of a NULL parameter.
    const { rows } =
      after === undefined
        ? await query<CellRow>(
            ctx.pool,
            doing,
            `SELECT ${COLUMNS} FROM ${ctx.t.snapshotCells} WHERE snapshot_id = $1
              ORDER BY ${order.columns} LIMIT $2`,
            [snapshotId, pageRows],
          )
        : await query<CellRow>(
            ctx.pool,
            doing,
            `SELECT ${COLUMNS} FROM ${ctx.t.snapshotCells}
              WHERE snapshot_id = $1
                AND (${order.columns}) > (${order.placeholders})
              ORDER BY ${order.columns} LIMIT $${order.arity + 2}`,
            [snapshotId, ...order.values(after), pageRows],
          );
    for (const row of rows) yield toCell(row);
    after = rows.at(-1);
    if (after === undefined || rows.length < pageRows) return;
  }
}

export function toCell(row: CellRow): SnapshotCell {
  return {
    id: row.cell_id,
    table: row.table_name,
    tenant: row.tenant,
    class: row.data_class,
    period: row.period,
    author: row.author,
    key: row.key_id,
    encapsulation: row.encapsulation,
    pack: row.pack,
    offset: toSafeInt(row.pack_offset, `pack offset of cell ${row.cell_id}`),
    length: toSafeInt(row.pack_length, `length of cell ${row.cell_id}`),
    sha256: row.sha256,
    rows: toSafeInt(row.row_count, `row count of cell ${row.cell_id}`),
    bytesPlain: toSafeInt(row.bytes_plain, `plaintext bytes of cell ${row.cell_id}`),
    reused: row.reused,
  };
}
