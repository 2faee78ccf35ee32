import { ErrorCode, LetheError, throwIfAborted } from '../errors/index.ts';
import { insertCellKeys, type CellKey } from './cell-keys.ts';
import { chunks, inTransaction, query, toSafeInt, type VaultContext } from './db.ts';

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

interface CellRow {
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

/**
 * The keyed digest of a cell's plaintext (HMAC-SHA-256 under the backup's digest key) and
 * the copy it describes: the backup compares the next snapshot's plaintext with it to find
 * unchanged cells. Only the newest copy's digest is kept, and destroying a dimension key
 * deletes the digests of every cell that needed it (destructions.ts).
 */
export interface CellDigestRecord {
  readonly table: string;
  readonly id: string;
  readonly key: string;
  readonly pack: string;
  readonly offset: number;
  readonly digest: string;
}

/** A previous snapshot's cell with the digest of its copy, when the vault still has it. */
export type PreviousCellRecord = SnapshotCell & { readonly digest: string | null };

const PAGE_ROWS = 5000;

/**
 * Adds cells to a running snapshot, in multi-row batches inside one transaction, with the
 * facts of the tuples they name that are not recorded yet (`cellKeys`) and the digests of
 * the cells it wrote anew (replacing the digests of their older copies). The
 * snapshot row is share-locked meanwhile, so a concurrent abandon cannot leave these rows
 * behind. Throws SNAPSHOT_NOT_FOUND for an unknown snapshot, VAULT when it is not running,
 * DATABASE for a duplicate (table, cell) or an unknown key id.
 */
export async function addSnapshotCells(
  ctx: VaultContext,
  snapshotId: string,
  cells: readonly SnapshotCell[],
  digests: readonly CellDigestRecord[] = [],
  cellKeys: readonly CellKey[] = [],
): Promise<void> {
  if (cells.length === 0 && cellKeys.length === 0) return;
  const doing = `recording cells of snapshot ${snapshotId}`;
  await inTransaction(ctx.pool, doing, async (client) => {
    // Not waiting for the WAL flush here is safe: completeSnapshot's commit is synchronous
    // and flushes the WAL up to it, these rows included; a crash before it loses rows of a
    // snapshot that is then abandoned anyway.
    await query(client, doing, 'SET LOCAL synchronous_commit = off');
    await insertCellKeys(ctx, cellKeys, client);
    const { rows } = await query<{ status: string }>(
      client,
      doing,
      `SELECT status FROM ${ctx.t.snapshots} WHERE id = $1 FOR SHARE`,
      [snapshotId],
    );
    const status = rows[0]?.status;
    if (status === undefined) {
      throw new LetheError(
        ErrorCode.SNAPSHOT_NOT_FOUND,
        `${doing}: there is no snapshot ${snapshotId}`,
      );
    }
    if (status !== 'running') {
      throw new LetheError(ErrorCode.VAULT, `${doing}: the snapshot is ${status}, not running`);
    }
    for (const batch of chunks(cells)) {
      await query(
        client,
        doing,
        `INSERT INTO ${ctx.t.snapshotCells} (snapshot_id, ${COLUMNS})
         SELECT $1, * FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                                  $7::text[], $8::text[], $9::text[], $10::text[], $11::int8[], $12::int8[],
                                  $13::text[], $14::int8[], $15::int8[], $16::boolean[])`,
        [
          snapshotId,
          batch.map((c) => c.table),
          batch.map((c) => c.id),
          batch.map((c) => c.tenant),
          batch.map((c) => c.class),
          batch.map((c) => c.period),
          batch.map((c) => c.author),
          batch.map((c) => c.key),
          batch.map((c) => c.encapsulation),
          batch.map((c) => c.pack),
          batch.map((c) => c.offset),
          batch.map((c) => c.length),
          batch.map((c) => c.sha256),
          batch.map((c) => c.rows),
          batch.map((c) => c.bytesPlain),
          batch.map((c) => c.reused),
        ],
      );
    }
    for (const batch of chunks(digests)) {
      await query(
        client,
        doing,
        `INSERT INTO ${ctx.t.cellDigests} AS d (table_name, cell_id, key_id, pack, pack_offset, digest)
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int8[], $6::text[])
         ON CONFLICT (table_name, cell_id) DO UPDATE
           SET key_id = excluded.key_id, pack = excluded.pack, pack_offset = excluded.pack_offset, digest = excluded.digest`,
        [
          batch.map((d) => d.table),
          batch.map((d) => d.id),
          batch.map((d) => d.key),
          batch.map((d) => d.pack),
          batch.map((d) => d.offset),
          batch.map((d) => d.digest),
        ],
      );
    }
  });
}

/**
 * The cells of one table in a snapshot, by cell id. The backup asks table by table, so
 * memory holds one table's index, never a whole snapshot's.
 */
export async function cellIndexForTable(
  ctx: VaultContext,
  snapshotId: string,
  tableName: string,
): Promise<Map<string, SnapshotCell>> {
  const { rows } = await query<CellRow>(
    ctx.pool,
    `reading the cell index of ${tableName} in snapshot ${snapshotId}`,
    `SELECT ${COLUMNS} FROM ${ctx.t.snapshotCells} WHERE snapshot_id = $1 AND table_name = $2`,
    [snapshotId, tableName],
  );
  return new Map(rows.map((r) => [r.cell_id, toCell(r)]));
}

/**
 * The cells among `cellIds` that one table has in a snapshot, by cell id (absent ids are
 * absent from the map). The backup asks once per batch of cells, by primary key, so its
 * memory holds one batch, never a whole table's index.
 */
export async function getSnapshotCells(
  ctx: VaultContext,
  snapshotId: string,
  tableName: string,
  cellIds: readonly string[],
): Promise<Map<string, SnapshotCell>> {
  const found = new Map<string, SnapshotCell>();
  for (const batch of chunks([...new Set(cellIds)])) {
    const { rows } = await query<CellRow>(
      ctx.pool,
      `reading cells of ${tableName} in snapshot ${snapshotId}`,
      `SELECT ${COLUMNS} FROM ${ctx.t.snapshotCells}
        WHERE snapshot_id = $1 AND table_name = $2 AND cell_id = ANY($3::text[])`,
      [snapshotId, tableName, batch],
    );
    for (const row of rows) found.set(row.cell_id, toCell(row));
  }
  return found;
}

/**
 * The cells among `cellIds` that one table has in a snapshot, each with the digest of that
 * very copy when the vault still has it (null once the digest was replaced by a newer copy's,
 * or deleted because a key the cell needs was destroyed). For the backup, once per batch.
 */
export async function getPreviousCells(
  ctx: VaultContext,
  snapshotId: string,
  tableName: string,
  cellIds: readonly string[],
): Promise<Map<string, PreviousCellRecord>> {
  const found = new Map<string, PreviousCellRecord>();
  const columns = COLUMNS.split(', ').map((c) => `c.${c}`).join(', ');
  for (const batch of chunks([...new Set(cellIds)])) {
    const { rows } = await query<CellRow & { digest: string | null }>(
      ctx.pool,
      `reading cells of ${tableName} in snapshot ${snapshotId}`,
      `SELECT ${columns}, d.digest FROM ${ctx.t.snapshotCells} c
         LEFT JOIN ${ctx.t.cellDigests} d
           ON d.table_name = c.table_name AND d.cell_id = c.cell_id AND d.key_id = c.key_id
          AND d.pack = c.pack AND d.pack_offset = c.pack_offset
        WHERE c.snapshot_id = $1 AND c.table_name = $2 AND c.cell_id = ANY($3::text[])`,
      [snapshotId, tableName, batch],
    );
    for (const row of rows) found.set(row.cell_id, { ...toCell(row), digest: row.digest });
  }
  return found;
}

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

function toCell(row: CellRow): SnapshotCell {
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
