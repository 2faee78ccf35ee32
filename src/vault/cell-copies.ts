import { ErrorCode, LetheError } from '../errors/index.ts';
import { insertCellKeys, type CellKey } from './cell-keys.ts';
import { chunks, inTransaction, query, toSafeInt, type Queryable, type VaultContext } from './db.ts';
import { toCell, type CellRow, type SnapshotCell } from './snapshot-cells.ts';

/**
 * The vault's record of snapshots as trees (docs/architecture.md, "Snapshots that cost what
 * changed"). A cell copy (one ciphertext in a pack) and a segment object each live from the
 * snapshot that wrote them (`from_seq`) to the first complete snapshot of the same store
 * that no longer has them (`to_seq`, NULL while current). A running backup writes rows only
 * for what it changes: new copies and segments, and a `superseding` mark on the current ones
 * it leaves out, which become `to_seq` when it completes and are cleared if it is abandoned.
 */

/** The running snapshot a backup writes to: its id, order and store. */
export interface RunningSnapshot {
  readonly id: string;
  readonly seq: number;
  readonly store: string;
}

/** A new cell copy, with the keyed digest of its plaintext and keyed fingerprint of its rows. */
export interface NewCellCopy extends Omit<SnapshotCell, 'reused'> {
  readonly segment: string;
  readonly digest: string;
  readonly fingerprint: string;
}

/** A current copy as the backup compares with it. */
export interface CurrentCopy extends Omit<SnapshotCell, 'reused'> {
  readonly copyId: string;
  readonly segment: string;
  /** Null once a key the cell needs was destroyed (or not known, for copies of an older lethe). */
  readonly digest: string | null;
  readonly fingerprint: string | null;
  /** The seq of the snapshot that wrote it. */
  readonly fromSeq: number;
  /** Its tuple's dimension keys in derivation order, where the query joined them (cellsOfNewSegments). */
  readonly dimensionIds?: readonly string[];
}

/** A cell_copies row: the columns of a snapshot's cell (without `reused`) and the copy's own. */
interface CopyRow extends Omit<CellRow, 'reused'> {
  id: string;
  segment: string;
  digest: string | null;
  fingerprint: string | null;
  from_seq: string;
  dimension_ids?: string[];
}

const COPY_COLUMNS =
  'id, segment, table_name, cell_id, tenant, data_class, period, author, key_id, encapsulation, pack, pack_offset, ' +
  'pack_length, sha256, row_count, bytes_plain, digest, fingerprint, from_seq';

function toCopy(r: CopyRow): CurrentCopy {
  const { reused: _, ...cell } = toCell({ ...r, reused: false });
  return {
    ...cell,
    copyId: r.id,
    segment: r.segment,
    digest: r.digest,
    fingerprint: r.fingerprint,
    fromSeq: toSafeInt(r.from_seq, 'a snapshot seq'),
    ...(r.dimension_ids === undefined ? {} : { dimensionIds: r.dimension_ids }),
  };
}

/** Throws unless `snapshotId` is running; share-locks its row for the transaction. */
async function checkRunning(client: Queryable, ctx: VaultContext, snapshotId: string, doing: string): Promise<void> {
  const { rows } = await query<{ status: string }>(client, doing, `SELECT status FROM ${ctx.t.snapshots} WHERE id = $1 FOR SHARE`, [snapshotId]);
  const status = rows[0]?.status;
  if (status === undefined) throw new LetheError(ErrorCode.SNAPSHOT_NOT_FOUND, `${doing}: there is no snapshot ${snapshotId}`);
  if (status !== 'running') throw new LetheError(ErrorCode.VAULT, `${doing}: the snapshot is ${status}, not running`);
}

/** What one batch of a running backup changes in the vault. */
export interface CopyChanges {
  /** New copies, written by this snapshot. */
  readonly copies: readonly NewCellCopy[];
  /** Current copies this snapshot leaves out (rewritten, deleted or shredded since). */
  readonly superseded: readonly string[];
  /** New keyed fingerprints of current copies that were read again and found unchanged. */
  readonly fingerprints: readonly { readonly copyId: string; readonly fingerprint: string }[];
  /** Facts of tuples not recorded yet. */
  readonly cellKeys: readonly CellKey[];
}

/**
 * Records one batch of a running backup's changes in one transaction, the snapshot row
 * share-locked meanwhile so that a concurrent abandon cannot leave rows behind. Throws
 * SNAPSHOT_NOT_FOUND / VAULT when the snapshot is not running.
 */
export async function recordCopyChanges(ctx: VaultContext, run: RunningSnapshot, changes: CopyChanges): Promise<void> {
  const { copies, superseded, fingerprints, cellKeys } = changes;
  if (copies.length + superseded.length + fingerprints.length + cellKeys.length === 0) return;
  const doing = `recording cells of snapshot ${run.id}`;
  await inTransaction(ctx.pool, doing, async (client) => {
    // completeSnapshot's commit is synchronous and flushes the WAL up to it, these rows
    // included; a crash before it loses rows of a snapshot that is then abandoned anyway.
    await query(client, doing, 'SET LOCAL synchronous_commit = off');
    await insertCellKeys(ctx, cellKeys, client);
    await checkRunning(client, ctx, run.id, doing);
    for (const batch of chunks(copies)) {
      await query(
        client,
        doing,
        `INSERT INTO ${ctx.t.cellCopies} (store, from_seq, segment, table_name, cell_id, tenant, data_class, period, author,
                                          key_id, encapsulation, pack, pack_offset, pack_length, sha256, row_count, bytes_plain,
                                          digest, fingerprint)
         SELECT $1, $2, * FROM unnest($3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[],
                                      $10::text[], $11::text[], $12::text[], $13::int8[], $14::int8[], $15::text[], $16::int8[],
                                      $17::int8[], $18::text[], $19::text[])`,
        [
          run.store,
          run.seq,
          batch.map((c) => c.segment),
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
          batch.map((c) => c.digest),
          batch.map((c) => c.fingerprint),
        ],
      );
    }
    for (const batch of chunks(superseded)) {
      await query(
        client,
        doing,
        `UPDATE ${ctx.t.cellCopies} SET superseding = $1
          WHERE id = ANY($2::int8[]) AND store = $3 AND to_seq IS NULL AND from_seq < $4`,
        [run.id, batch, run.store, run.seq],
      );
    }
    for (const batch of chunks(fingerprints)) {
      await query(
        client,
        doing,
        `UPDATE ${ctx.t.cellCopies} c SET fingerprint = f.fingerprint
           FROM unnest($1::int8[], $2::text[]) AS f(id, fingerprint)
          WHERE c.id = f.id AND c.store = $3 AND c.to_seq IS NULL`,
        [batch.map((f) => f.copyId), batch.map((f) => f.fingerprint), run.store],
      );
    }
  });
}

/**
 * The current copies (written by snapshots before `run`) of the cells among `cellIds`, by
 * cell id: what the backup compares a batch of cells with.
 */
export async function currentCopies(ctx: VaultContext, run: RunningSnapshot, cellIds: readonly string[]): Promise<Map<string, CurrentCopy>> {
  const found = new Map<string, CurrentCopy>();
  for (const batch of chunks([...new Set(cellIds)])) {
    const { rows } = await query<CopyRow>(
      ctx.pool,
      `reading the current copies of cells for snapshot ${run.id}`,
      `SELECT ${COPY_COLUMNS} FROM ${ctx.t.cellCopies}
        WHERE store = $1 AND to_seq IS NULL AND from_seq < $2 AND cell_id = ANY($3::text[])`,
      [run.store, run.seq, batch],
    );
    for (const row of rows) found.set(row.cell_id, toCopy(row));
  }
  return found;
}

/**
 * The current copies (written before `run`) of every cell in `segments`, ordered by
 * segment then cell id (byte order). Callers ask for a few dozen segments at a time: the
 * answer is those segments' cells, in memory.
 */
export async function currentCopiesOfSegments(ctx: VaultContext, run: RunningSnapshot, segments: readonly string[]): Promise<CurrentCopy[]> {
  const { rows } = await query<CopyRow>(
    ctx.pool,
    `reading the current cells of segments for snapshot ${run.id}`,
    `SELECT ${COPY_COLUMNS} FROM ${ctx.t.cellCopies}
      WHERE store = $1 AND to_seq IS NULL AND from_seq < $2 AND segment = ANY($3::text[])
      ORDER BY segment COLLATE "C", cell_id COLLATE "C"`,
    [run.store, run.seq, segments],
  );
  return rows.map(toCopy);
}

/**
 * The cells `run` has in one segment so far: its own new copies and the current copies it
 * does not supersede, with their tuples' dimension keys, by cell id (byte order); one page
 * of at most `limit` after `afterCellId`. One segment per query, so each page reads that
 * segment's range of the index and sorts nothing else.
 */
export async function cellsOfNewSegment(
  ctx: VaultContext,
  run: RunningSnapshot,
  segment: string,
  afterCellId: string | null,
  limit: number,
): Promise<CurrentCopy[]> {
  const columns = COPY_COLUMNS.split(', ').map((c) => `c.${c}`).join(', ');
  const { rows } = await query<CopyRow>(
    ctx.pool,
    `reading the cells of segment ${segment} for snapshot ${run.id}`,
    `SELECT ${columns}, k.dimension_ids FROM ${ctx.t.cellCopies} c JOIN ${ctx.t.cellKeys} k ON k.id = c.key_id
      WHERE c.store = $1 AND c.segment = $3 AND c.to_seq IS NULL
        AND (c.from_seq = $2 OR (c.from_seq < $2 AND c.superseding IS DISTINCT FROM $4))
        AND ($5::text IS NULL OR c.cell_id COLLATE "C" > $5 COLLATE "C")
      ORDER BY c.cell_id COLLATE "C" LIMIT $6`,
    [run.store, run.seq, segment, run.id, afterCellId, limit],
  );
  return rows.map(toCopy);
}

/**
 * Marks the current copies (written before `run`) of `segments` superseded by `run`,
 * except `keep`: what a run that read those segments whole does not reference again.
 */
export async function supersedeCopiesExcept(ctx: VaultContext, run: RunningSnapshot, segments: readonly string[], keep: readonly string[]): Promise<void> {
  const doing = `recording cells of snapshot ${run.id}`;
  await inTransaction(ctx.pool, doing, async (client) => {
    await checkRunning(client, ctx, run.id, doing);
    await query(
      client,
      doing,
      `UPDATE ${ctx.t.cellCopies} SET superseding = $1
        WHERE store = $2 AND segment = ANY($3::text[]) AND to_seq IS NULL AND from_seq < $4 AND superseding IS NULL
          AND NOT (id = ANY($5::int8[]))`,
      [run.id, run.store, segments, run.seq, keep],
    );
  });
}

/** A segment object as the vault records it. */
export interface SegmentRecord {
  readonly key: string;
  /** `<table>/<tenant>/<period>`, percent-encoded components. */
  readonly segment: string;
  readonly table: string;
  readonly tenant: string | null;
  readonly period: string;
  readonly sha256: string;
  readonly size: number;
  readonly cells: number;
  readonly rows: number;
  readonly bytesPlain: number;
  /** Cells of its rows left out because a key they need was destroyed. */
  readonly shredded: number;
  readonly packs: readonly string[];
  readonly encapsulations: readonly string[];
  /** Keyed fingerprint of the chat-store rows it was made from; null when unknown. */
  readonly fingerprint: string | null;
  /** The snapshot that wrote it. */
  readonly snapshotId: string;
}

interface SegmentRow {
  key: string;
  segment: string;
  table_name: string;
  tenant: string | null;
  period: string;
  sha256: string;
  size: string;
  cells: string;
  row_count: string;
  bytes_plain: string;
  shredded: string;
  packs: string[];
  encapsulations: string[];
  fingerprint: string | null;
  snapshot_id: string;
}

const SEGMENT_COLUMNS =
  'key, segment, table_name, tenant, period, sha256, size, cells, row_count, bytes_plain, shredded, packs, encapsulations, fingerprint, snapshot_id';

function toSegment(r: SegmentRow): SegmentRecord {
  return {
    key: r.key,
    segment: r.segment,
    table: r.table_name,
    tenant: r.tenant,
    period: r.period,
    sha256: r.sha256,
    size: toSafeInt(r.size, `size of segment ${r.key}`),
    cells: toSafeInt(r.cells, `cells of segment ${r.key}`),
    rows: toSafeInt(r.row_count, `rows of segment ${r.key}`),
    bytesPlain: toSafeInt(r.bytes_plain, `bytes of segment ${r.key}`),
    shredded: toSafeInt(r.shredded, `shredded cells of segment ${r.key}`),
    packs: r.packs,
    encapsulations: r.encapsulations,
    fingerprint: r.fingerprint,
    snapshotId: r.snapshot_id,
  };
}

/** The current segments (written before `run`) of one table, by segment id. */
export async function currentSegments(ctx: VaultContext, run: RunningSnapshot, table: string): Promise<Map<string, SegmentRecord>> {
  const { rows } = await query<SegmentRow>(
    ctx.pool,
    `reading the current segments of ${table} for snapshot ${run.id}`,
    `SELECT ${SEGMENT_COLUMNS} FROM ${ctx.t.segments}
      WHERE store = $1 AND to_seq IS NULL AND from_seq < $2 AND table_name = $3`,
    [run.store, run.seq, table],
  );
  return new Map(rows.map((r) => [r.segment, toSegment(r)]));
}

/** The segment tables of the current segments (before `run`) whose table is not in `tables`. */
export async function currentSegmentsOutside(ctx: VaultContext, run: RunningSnapshot, tables: readonly string[]): Promise<SegmentRecord[]> {
  const { rows } = await query<SegmentRow>(
    ctx.pool,
    `reading segments of tables no longer backed up, for snapshot ${run.id}`,
    `SELECT ${SEGMENT_COLUMNS} FROM ${ctx.t.segments}
      WHERE store = $1 AND to_seq IS NULL AND from_seq < $2 AND table_name <> ALL($3::text[])`,
    [run.store, run.seq, tables],
  );
  return rows.map(toSegment);
}

/** Segment changes of a running backup: new segment objects, and current ones it leaves out. */
export interface SegmentChanges {
  readonly added: readonly Omit<SegmentRecord, 'snapshotId'>[];
  readonly superseded: readonly string[];
  /** Current segments found unchanged on a full read: their new keyed fingerprint. */
  readonly fingerprints: readonly { readonly key: string; readonly fingerprint: string | null }[];
  /** Current copies of the superseded segments' tables this run leaves out (a table dropped). */
  readonly supersedeCopiesOf?: readonly string[];
}

/** Records segment changes of a running snapshot in one transaction. */
export async function recordSegmentChanges(ctx: VaultContext, run: RunningSnapshot, changes: SegmentChanges): Promise<void> {
  const doing = `recording segments of snapshot ${run.id}`;
  if (changes.added.length + changes.superseded.length + changes.fingerprints.length === 0) return;
  await inTransaction(ctx.pool, doing, async (client) => {
    await checkRunning(client, ctx, run.id, doing);
    for (const s of changes.added) {
      await query(
        client,
        doing,
        `INSERT INTO ${ctx.t.segments} (store, key, segment, table_name, tenant, period, sha256, size, cells, row_count,
                                        bytes_plain, shredded, packs, encapsulations, fingerprint, snapshot_id, from_seq)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)`,
        [run.store, s.key, s.segment, s.table, s.tenant, s.period, s.sha256, s.size, s.cells, s.rows, s.bytesPlain, s.shredded,
          s.packs, s.encapsulations, s.fingerprint, run.id, run.seq],
      );
    }
    for (const batch of chunks(changes.superseded)) {
      await query(
        client,
        doing,
        `UPDATE ${ctx.t.segments} SET superseding = $1 WHERE store = $2 AND key = ANY($3::text[]) AND to_seq IS NULL AND from_seq < $4`,
        [run.id, run.store, batch, run.seq],
      );
    }
    for (const batch of chunks(changes.supersedeCopiesOf ?? [])) {
      await query(
        client,
        doing,
        `UPDATE ${ctx.t.cellCopies} SET superseding = $1
          WHERE store = $2 AND segment = ANY($3::text[]) AND to_seq IS NULL AND from_seq < $4`,
        [run.id, run.store, batch, run.seq],
      );
    }
    for (const f of changes.fingerprints) {
      await query(client, doing, `UPDATE ${ctx.t.segments} SET fingerprint = $3 WHERE store = $1 AND key = $2`, [run.store, f.key, f.fingerprint]);
    }
  });
}

/**
 * The segments a snapshot holds, by table then segment id (byte order). For a running one,
 * what it holds so far: its own and the current ones it does not supersede.
 */
export async function segmentsOfSnapshot(ctx: VaultContext, snapshotId: string): Promise<SegmentRecord[]> {
  const { rows } = await query<SegmentRow>(
    ctx.pool,
    `reading the segments of snapshot ${snapshotId}`,
    `SELECT ${SEGMENT_COLUMNS.split(', ').map((c) => `g.${c}`).join(', ')}
       FROM ${ctx.t.segments} g JOIN ${ctx.t.snapshots} s ON s.id = $1 AND s.store = g.store
      WHERE s.seq >= g.from_seq AND (g.to_seq IS NULL OR s.seq < g.to_seq)
        AND (s.status <> 'running' OR g.from_seq = s.seq OR g.superseding IS DISTINCT FROM s.id)
      ORDER BY g.table_name COLLATE "C", g.segment COLLATE "C"`,
    [snapshotId],
  );
  return rows.map(toSegment);
}

/**
 * Deletes the copies and segments no snapshot needs any more: those whose interval holds no
 * running or complete snapshot, unless their tenant is under an active legal hold (export
 * and the hold re-wrap still read expired snapshots' cells of held tenants). Returns counts.
 */
export async function pruneTrees(ctx: VaultContext): Promise<{ copies: number; segments: number }> {
  const doing = 'pruning cell copies and segments that no snapshot needs';
  return inTransaction(ctx.pool, doing, async (client) => {
    const dead = (alias: string): string =>
      `NOT EXISTS (SELECT 1 FROM ${ctx.t.snapshots} s
                    WHERE s.store = ${alias}.store AND s.status IN ('running', 'complete')
                      AND s.seq >= ${alias}.from_seq AND (${alias}.to_seq IS NULL OR s.seq < ${alias}.to_seq))
       AND ${alias}.to_seq IS NOT NULL
       AND (${alias}.tenant IS NULL OR ${alias}.tenant NOT IN (SELECT tenant FROM "${ctx.schema}".holds WHERE released_at IS NULL))`;
    const copies = await query(client, doing, `DELETE FROM ${ctx.t.cellCopies} c WHERE ${dead('c')}`);
    const segments = await query(client, doing, `DELETE FROM ${ctx.t.segments} g WHERE ${dead('g')}`);
    return { copies: copies.rowCount ?? 0, segments: segments.rowCount ?? 0 };
  });
}
