import type { CellKeyFacts, CellKeyUsage, HeldCellKeyFacts, KeyUsage, SnapshotFacts } from '../lifecycle/types.ts';
import { query, toSafeInt, type VaultContext } from './db.ts';

/**
 * Read-only queries the lifecycle planner's loader needs: the whole state it decides on, in
 * a few statements, without reading any wrapped key material. Each list is sorted by id
 * (code-unit order) so plans built from it are deterministic.
 */

export interface LifecycleDimensionKey {
  readonly id: string;
  readonly kind: 'tenant' | 'user' | 'conversation' | 'period' | 'case' | 'system';
  readonly tenant: string | null;
  readonly destroyed: boolean;
}

export interface LifecycleCellKey extends CellKeyFacts {
  /** Over the cells of complete snapshots only. */
  readonly usage: CellKeyUsage;
}

export type LifecycleHeldCellKey = HeldCellKeyFacts;

export type LifecycleSnapshot = SnapshotFacts;

/** An object (a pack or a segment) and the snapshots and tenants whose cells need it. */
export interface LifecycleObjectRefs {
  readonly key: string;
  /** Snapshot ids in any status, sorted. */
  readonly snapshots: readonly string[];
  /** Tenants, sorted; `''` for system cells. */
  readonly tenants: readonly string[];
}

const t = (ctx: VaultContext, table: string): string => `"${ctx.schema}".${table}`;

/** Every dimension key's public facts (never its wrapped identity), by id. */
export async function lifecycleDimensionKeys(ctx: VaultContext): Promise<LifecycleDimensionKey[]> {
  const { rows } = await query<{ id: string; kind: LifecycleDimensionKey['kind']; tenant: string | null; destroyed: boolean }>(
    ctx.pool,
    'reading dimension keys for lifecycle planning',
    `SELECT id, kind, tenant, destroyed_at IS NOT NULL AS destroyed
       FROM ${t(ctx, 'dimension_keys')} ORDER BY id COLLATE "C"`,
  );
  return rows.map((r) => ({ id: r.id, kind: r.kind, tenant: r.tenant, destroyed: r.destroyed }));
}

/**
 * The cell keys legal holds concern, with their usage by complete snapshots (cell rows,
 * plaintext bytes, distinct snapshots), by id: those an active hold's tenant, user and
 * conversation select (the planner checks the dates), and those already re-wrapped for a
 * case. Only these are ever re-wrapped or weighed against a case key, so memory follows the
 * held data, not the store: a vault with no holds loads none. Keys no complete snapshot
 * uses have zero usage.
 */
export async function lifecycleCellKeys(ctx: VaultContext): Promise<LifecycleCellKey[]> {
  const { rows } = await query<{
    id: string;
    tenant: string | null;
    data_class: string;
    period: string | null;
    author: string | null;
    conversation: string | null;
    dimension_ids: string[];
    cells: string;
    bytes_plain: string;
    snapshots: string;
  }>(
    ctx.pool,
    'reading cell keys and their usage for lifecycle planning',
    `SELECT k.id, k.tenant, k.data_class, k.period, k.author, k.conversation, k.dimension_ids,
            coalesce(u.cells, 0) AS cells, coalesce(u.bytes_plain, 0) AS bytes_plain,
            coalesce(u.snapshots, 0) AS snapshots
       FROM ${t(ctx, 'cell_keys')} k
       LEFT JOIN (SELECT c.key_id, count(*) AS cells, sum(c.bytes_plain) AS bytes_plain,
                         count(DISTINCT c.snapshot_id) AS snapshots
                    FROM ${t(ctx, 'snapshot_cells')} c
                    JOIN ${t(ctx, 'snapshots')} s ON s.id = c.snapshot_id AND s.status = 'complete'
                   WHERE c.tenant IN (SELECT tenant FROM ${t(ctx, 'holds')})
                   GROUP BY c.key_id) u ON u.key_id = k.id
      WHERE k.id IN (SELECT key_id FROM ${t(ctx, 'held_cell_keys')})
         OR EXISTS (SELECT 1 FROM ${t(ctx, 'holds')} h
                     WHERE h.released_at IS NULL AND h.tenant = k.tenant
                       -- A cell with several subjects (or an escaped id) is read and
                       -- matched in full by holdCovers; this only narrows the read.
                       AND (h.user_id IS NULL OR h.user_id = k.author OR strpos(k.author, chr(92)) > 0
                            OR strpos(k.author, ',') > 0)
                       AND (h.conversation IS NULL OR h.conversation = k.conversation))
      ORDER BY k.id COLLATE "C"`,
  );
  return rows.map((r) => ({
    id: r.id,
    tenant: r.tenant,
    class: r.data_class,
    period: r.period,
    author: r.author,
    conversation: r.conversation,
    dimensionIds: r.dimension_ids,
    usage: {
      cells: toSafeInt(r.cells, 'a cell count'),
      bytesPlain: toSafeInt(r.bytes_plain, 'a byte count'),
      snapshots: toSafeInt(r.snapshots, 'a snapshot count'),
    },
  }));
}

/**
 * Every tuple kept for a case (without the wrapped bytes), by case then key: a tuple counts
 * as kept only when every encapsulation its cells were written under (in any snapshot) has
 * its held wrapping, so cells written after an earlier re-wrap are re-wrapped too.
 */
export async function lifecycleHeldCellKeys(ctx: VaultContext): Promise<LifecycleHeldCellKey[]> {
  const { rows } = await query<{ case_id: string; key_id: string; dimension_ids: string[] }>(
    ctx.pool,
    'reading held cell keys for lifecycle planning',
    `WITH kept AS (
       SELECT case_id, key_id, min(dimension_ids) AS dimension_ids, array_agg(encapsulation) AS encs
         FROM ${t(ctx, 'held_cell_keys')} GROUP BY case_id, key_id)
     SELECT k.case_id, k.key_id, k.dimension_ids FROM kept k
      WHERE NOT EXISTS (SELECT 1 FROM ${t(ctx, 'snapshot_cells')} c
                          JOIN ${t(ctx, 'snapshots')} s ON s.id = c.snapshot_id AND s.status IN ('complete', 'expired')
                         WHERE c.key_id = k.key_id AND c.encapsulation <> ALL (k.encs))
      ORDER BY k.case_id COLLATE "C", k.key_id COLLATE "C"`,
  );
  return rows.map((r) => ({ caseId: r.case_id, keyId: r.key_id, dimensionIds: r.dimension_ids }));
}

/** Every snapshot in every status, by id. */
export async function lifecycleSnapshots(ctx: VaultContext): Promise<LifecycleSnapshot[]> {
  const { rows } = await query<{
    id: string;
    status: LifecycleSnapshot['status'];
    started_at: Date;
    completed_at: Date | null;
    manifest_key: string | null;
  }>(
    ctx.pool,
    'reading snapshots for lifecycle planning',
    `SELECT id, status, started_at, completed_at, manifest_key FROM ${t(ctx, 'snapshots')}
      ORDER BY id COLLATE "C"`,
  );
  return rows.map((r) => ({
    id: r.id,
    status: r.status,
    startedAt: r.started_at,
    completedAt: r.completed_at,
    manifestKey: r.manifest_key,
  }));
}

/**
 * Per pack and per segment object, the snapshots (any status but abandoned) that need it and
 * the tenants with cells in it. Counted on segments: a snapshot needs the segment objects
 * whose interval holds it and the packs those segments list. Snapshots of an older lethe
 * (no segments) and running ones (whose segments are not all recorded yet) are counted on
 * their cell copies instead.
 */
export async function lifecycleObjectRefs(ctx: VaultContext): Promise<LifecycleObjectRefs[]> {
  const { rows } = await query<{ key: string; snapshots: string[]; tenants: string[] }>(
    ctx.pool,
    'reading pack and segment references for lifecycle planning',
    `WITH live AS (
       SELECT g.key, g.packs, coalesce(g.tenant, '') AS tenant, s.id AS snapshot_id
         FROM ${t(ctx, 'segments')} g
         JOIN ${t(ctx, 'snapshots')} s ON s.store = g.store AND s.seq >= g.from_seq AND (g.to_seq IS NULL OR s.seq < g.to_seq)
        WHERE s.status <> 'abandoned'),
     refs AS (
       SELECT key, snapshot_id, tenant FROM live
       UNION ALL
       SELECT p.pack, l.snapshot_id, l.tenant FROM live l CROSS JOIN LATERAL unnest(l.packs) AS p(pack)
       UNION ALL
       SELECT c.pack, s.id, coalesce(c.tenant, '')
         FROM ${t(ctx, 'cell_copies')} c
         JOIN ${t(ctx, 'snapshots')} s ON s.store = c.store AND s.seq >= c.from_seq AND (c.to_seq IS NULL OR s.seq < c.to_seq)
        WHERE s.status = 'running' OR (s.status IN ('complete', 'expired') AND NOT (s.stats ? 'segments')))
     SELECT key, array_agg(DISTINCT snapshot_id) AS snapshots, array_agg(DISTINCT tenant) AS tenants
       FROM refs GROUP BY key ORDER BY key COLLATE "C"`,
  );
  return rows.map((r) => ({ key: r.key, snapshots: sorted(r.snapshots), tenants: sorted(r.tenants) }));
}

function sorted(xs: readonly string[]): string[] {
  return [...xs].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
}

export type LifecycleKeyUsage = KeyUsage;

/**
 * Per live period key, the cell keys that need it and their usage by complete snapshots,
 * aggregated by the database: what a retention shred would make unreadable, without
 * reading every cell key into memory. Sorted by key id.
 */
export async function lifecyclePeriodKeyUsage(ctx: VaultContext): Promise<LifecycleKeyUsage[]> {
  const { rows } = await query<{ key_id: string; cell_keys: string; cells: string; bytes_plain: string; snapshots: string }>(
    ctx.pool,
    'aggregating what each period key protects, for lifecycle planning',
    `SELECT d.key_id, count(*) AS cell_keys, coalesce(sum(u.cells), 0) AS cells,
            coalesce(sum(u.bytes_plain), 0) AS bytes_plain, coalesce(max(u.snapshots), 0) AS snapshots
       FROM ${t(ctx, 'cell_keys')} k
       CROSS JOIN LATERAL unnest(k.dimension_ids) AS d(key_id)
       LEFT JOIN (SELECT c.key_id, count(*) AS cells, sum(c.bytes_plain) AS bytes_plain,
                         count(DISTINCT c.snapshot_id) AS snapshots
                    FROM ${t(ctx, 'snapshot_cells')} c
                    JOIN ${t(ctx, 'snapshots')} s ON s.id = c.snapshot_id AND s.status = 'complete'
                   GROUP BY c.key_id) u ON u.key_id = k.id
      WHERE d.key_id IN (SELECT id FROM ${t(ctx, 'dimension_keys')} WHERE kind = 'period' AND destroyed_at IS NULL)
      GROUP BY d.key_id
      ORDER BY d.key_id COLLATE "C"`,
  );
  return rows.map((r) => ({
    keyId: r.key_id,
    cellKeys: toSafeInt(r.cell_keys, 'a cell key count'),
    cells: toSafeInt(r.cells, 'a cell count'),
    bytesPlain: toSafeInt(r.bytes_plain, 'a byte count'),
    snapshots: toSafeInt(r.snapshots, 'a snapshot count'),
  }));
}
