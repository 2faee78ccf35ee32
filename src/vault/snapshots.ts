import { ErrorCode, LetheError } from '../errors/index.ts';
import { canonicalJson, type JsonObject } from './canonical-json.ts';
import { inTransaction, query, toSafeInt, type Queryable, type VaultContext } from './db.ts';

/**
 * `running` until the manifest is written; `abandoned` when a run died before that;
 * `expired` once snapshot retention removed it (its manifest is deleted first).
 */
export type SnapshotStatus = 'running' | 'complete' | 'abandoned' | 'expired';

/** A snapshot row in any status. */
export interface SnapshotRecord {
  readonly id: string;
  readonly status: SnapshotStatus;
  /** The vault database's clock when the run began. */
  readonly startedAt: Date;
  /** Set when complete; null while running and for abandoned runs. */
  readonly completedAt: Date | null;
  readonly previousId: string | null;
  /** Object key of the signed manifest; set when complete. */
  readonly manifestKey: string | null;
  readonly manifestSha256: string | null;
  /** Who ran it (e.g. `host:pid`), to explain a stale run. */
  readonly runOwner: string;
  readonly stats: JsonObject | null;
  /** Order of the runs (drawn when a run begins; backups of one vault are serial). */
  readonly seq: number;
  /** The object store (its description) the run writes to; null only for very old abandoned runs. */
  readonly store: string | null;
}

/** A snapshot whose manifest is in the bucket: the only kind that can be restored. */
export interface CompleteSnapshot extends SnapshotRecord {
  readonly status: 'complete';
  readonly completedAt: Date;
  readonly manifestKey: string;
  readonly manifestSha256: string;
  readonly stats: JsonObject;
}

interface SnapshotRow {
  id: string;
  status: SnapshotStatus; // guaranteed by the CHECK constraint
  started_at: Date;
  completed_at: Date | null;
  previous_id: string | null;
  manifest_key: string | null;
  manifest_sha256: string | null;
  run_owner: string;
  stats: JsonObject | null;
  seq: string;
  store: string | null;
}

const COLUMNS =
  'id, status, started_at, completed_at, previous_id, manifest_key, manifest_sha256, run_owner, stats, seq, store';

/**
 * Records the start of a run as a `running` snapshot. Throws VAULT when `id` exists
 * (ids are never reused) or is `latest` (reserved), and SNAPSHOT_NOT_FOUND when
 * `previousId` is not a complete snapshot.
 */
export async function beginSnapshot(
  ctx: VaultContext,
  run: { id: string; previousId: string | null; runOwner: string; store: string },
): Promise<SnapshotRecord> {
  if (run.id === '' || run.id === 'latest') {
    throw new LetheError(
      ErrorCode.VAULT,
      `snapshot id ${JSON.stringify(run.id)} is not allowed: ids must be non-empty and not "latest"`,
    );
  }
  if (run.previousId !== null) await getSnapshot(ctx, run.previousId);
  const { rows } = await query<SnapshotRow>(
    ctx.pool,
    `recording the start of snapshot ${run.id}`,
    `INSERT INTO ${ctx.t.snapshots} (id, previous_id, run_owner, store) VALUES ($1, $2, $3, $4)
     ON CONFLICT (id) DO NOTHING RETURNING ${COLUMNS}`,
    [run.id, run.previousId, run.runOwner, run.store],
  );
  const row = rows[0];
  if (row === undefined) {
    throw new LetheError(
      ErrorCode.VAULT,
      `snapshot id ${run.id} already exists: ids are never reused`,
    );
  }
  return toSnapshot(row);
}

/**
 * Marks a running snapshot complete, in one statement, once its manifest is stored (the
 * manifest is the commit point; this row only mirrors it). Throws SNAPSHOT_NOT_FOUND for
 * an unknown id and VAULT when the snapshot is not running (abandoned by a later run, or
 * already complete).
 */
export async function completeSnapshot(
  ctx: VaultContext,
  id: string,
  done: { manifestKey: string; manifestSha256: string; stats: Readonly<Record<string, unknown>> },
): Promise<CompleteSnapshot> {
  const doing = `marking snapshot ${id} complete`;
  const row = await inTransaction(ctx.pool, doing, async (client) => {
    const { rows } = await query<SnapshotRow>(
      client,
      doing,
      `UPDATE ${ctx.t.snapshots}
          SET status = 'complete', completed_at = now(),
              manifest_key = $2, manifest_sha256 = $3, stats = $4::jsonb
        WHERE id = $1 AND status = 'running'
        RETURNING ${COLUMNS}`,
      [id, done.manifestKey, done.manifestSha256, canonicalJson(done.stats)],
    );
    const completed = rows[0];
    if (completed === undefined) return undefined;
    // What the run left out ends where it begins.
    for (const table of [ctx.t.cellCopies, ctx.t.segments]) {
      await query(client, doing, `UPDATE ${table} SET to_seq = $2, superseding = NULL WHERE superseding = $1`, [id, completed.seq]);
    }
    return completed;
  });
  if (row !== undefined) return toCompleteSnapshot(row);
  const current = await findSnapshot(ctx, id);
  if (current === null) throw notFound(id);
  throw new LetheError(
    ErrorCode.VAULT,
    `snapshot ${id} is ${current.status}, not running, so it cannot be completed` +
      (current.status === 'abandoned' ? ' (another run abandoned it as stale)' : ''),
    { details: { snapshotId: id, status: current.status } },
  );
}

/** Deletes what running snapshots `ids` wrote to the vault and clears what they marked. */
async function forgetRuns(client: Queryable, ctx: VaultContext, ids: readonly string[], doing: string): Promise<void> {
  for (const table of [ctx.t.cellCopies, ctx.t.segments]) {
    await query(
      client,
      doing,
      `DELETE FROM ${table} t USING ${ctx.t.snapshots} s WHERE s.id = ANY($1::text[]) AND t.store = s.store AND t.from_seq = s.seq`,
      [ids],
    );
    await query(client, doing, `UPDATE ${table} SET superseding = NULL WHERE superseding = ANY($1::text[])`, [ids]);
  }
}

/**
 * Marks every `running` snapshot `abandoned` and deletes its cell rows (their packs become
 * unreferenced, for lifecycle to remove); returns their ids. Call only while holding the
 * backup job lock: then no run is live, so every `running` row is a run that died.
 */
export async function abandonStaleSnapshots(ctx: VaultContext): Promise<string[]> {
  const doing = 'abandoning stale snapshots';
  return inTransaction(ctx.pool, doing, async (client) => {
    const { rows } = await query<{ id: string }>(
      client,
      doing,
      `UPDATE ${ctx.t.snapshots} SET status = 'abandoned' WHERE status = 'running' RETURNING id`,
    );
    const ids = rows.map((r) => r.id).sort();
    if (ids.length > 0) await forgetRuns(client, ctx, ids, doing);
    return ids;
  });
}

/**
 * Marks one `running` snapshot `abandoned` and deletes its cell rows, for a run that fails
 * and cleans up after itself; returns false when it was not running (nothing changed).
 */
export async function abandonSnapshot(ctx: VaultContext, id: string): Promise<boolean> {
  const doing = `abandoning snapshot ${id}`;
  return inTransaction(ctx.pool, doing, async (client) => {
    const { rowCount } = await query(
      client,
      doing,
      `UPDATE ${ctx.t.snapshots} SET status = 'abandoned' WHERE id = $1 AND status = 'running'`,
      [id],
    );
    if (rowCount !== 1) return false;
    await forgetRuns(client, ctx, [id], doing);
    return true;
  });
}

/**
 * Marks a complete snapshot `expired` (snapshot retention, after its manifest was deleted).
 * Its cell rows stay: they still tell lifecycle and `export` where held cells are. Returns
 * false when it was not complete (already expired: nothing changed).
 */
export async function expireSnapshot(ctx: VaultContext, id: string): Promise<boolean> {
  const { rowCount } = await query(
    ctx.pool,
    `expiring snapshot ${id}`,
    `UPDATE ${ctx.t.snapshots} SET status = 'expired', expired_at = now() WHERE id = $1 AND status = 'complete'`,
    [id],
  );
  return rowCount === 1;
}

/** Snapshots, newest first; only complete ones unless `includeIncomplete`. */
export async function listSnapshots(
  ctx: VaultContext,
  options: { includeIncomplete?: boolean; limit?: number } = {},
): Promise<SnapshotRecord[]> {
  const { rows } = await query<SnapshotRow>(
    ctx.pool,
    'listing snapshots',
    `SELECT ${COLUMNS} FROM ${ctx.t.snapshots}
      WHERE $1::boolean OR status = 'complete'
      ORDER BY started_at DESC, id DESC LIMIT $2::integer`,
    [options.includeIncomplete === true, options.limit ?? null],
  );
  return rows.map(toSnapshot);
}

/**
 * The complete snapshot `idOrLatest` names; `latest` is the newest complete one. Throws
 * SNAPSHOT_NOT_FOUND, naming the id, when there is no such snapshot or it is not complete.
 */
export async function getSnapshot(
  ctx: VaultContext,
  idOrLatest: string,
): Promise<CompleteSnapshot> {
  if (idOrLatest === 'latest') {
    const latest = await latestCompleteSnapshot(ctx);
    if (latest === null) {
      throw new LetheError(
        ErrorCode.SNAPSHOT_NOT_FOUND,
        'there is no complete snapshot yet: run `lethe backup` first, or `lethe snapshots` to see what exists',
      );
    }
    return latest;
  }
  const found = await findSnapshot(ctx, idOrLatest);
  if (found === null) throw notFound(idOrLatest);
  if (!isComplete(found)) {
    throw new LetheError(
      ErrorCode.SNAPSHOT_NOT_FOUND,
      `snapshot ${idOrLatest} is ${found.status}, not complete, so it cannot be used: ` +
        'run `lethe snapshots` to list complete snapshots',
      { details: { snapshotId: idOrLatest, status: found.status } },
    );
  }
  return found;
}

/** The snapshot `id` in any status, or null. */
export async function findSnapshot(ctx: VaultContext, id: string): Promise<SnapshotRecord | null> {
  const { rows } = await query<SnapshotRow>(
    ctx.pool,
    `reading snapshot ${id}`,
    `SELECT ${COLUMNS} FROM ${ctx.t.snapshots} WHERE id = $1`,
    [id],
  );
  const row = rows[0];
  return row === undefined ? null : toSnapshot(row);
}

function notFound(id: string): LetheError {
  return new LetheError(
    ErrorCode.SNAPSHOT_NOT_FOUND,
    `snapshot ${JSON.stringify(id)} not found: run \`lethe snapshots\` to list them`,
    { details: { snapshotId: id } },
  );
}

/**
 * The newest complete snapshot (the one `latest` names), or null before the first. With
 * `store`, only snapshots whose stats record that object store (`stats.store`, the store's
 * description): a backup may reference cells only from a snapshot in the store it writes to.
 */
export async function latestCompleteSnapshot(ctx: VaultContext, store?: string): Promise<CompleteSnapshot | null> {
  const { rows } = await query<SnapshotRow>(
    ctx.pool,
    'finding the latest complete snapshot',
    `SELECT ${COLUMNS} FROM ${ctx.t.snapshots} WHERE status = 'complete'
        AND ($1::text IS NULL OR store = $1)
      ORDER BY seq DESC LIMIT 1`,
    [store ?? null],
  );
  const row = rows[0];
  return row === undefined ? null : toCompleteSnapshot(row);
}

/** True for a complete snapshot, narrowing its manifest fields to non-null. */
export function isComplete(snapshot: SnapshotRecord): snapshot is CompleteSnapshot {
  return (
    snapshot.status === 'complete' &&
    snapshot.completedAt !== null &&
    snapshot.manifestKey !== null &&
    snapshot.manifestSha256 !== null &&
    snapshot.stats !== null
  );
}

function toSnapshot(row: SnapshotRow): SnapshotRecord {
  return {
    id: row.id,
    status: row.status,
    startedAt: row.started_at,
    completedAt: row.completed_at,
    previousId: row.previous_id,
    manifestKey: row.manifest_key,
    manifestSha256: row.manifest_sha256,
    runOwner: row.run_owner,
    stats: row.stats,
    seq: toSafeInt(row.seq, 'a snapshot seq'),
    store: row.store,
  };
}

function toCompleteSnapshot(row: SnapshotRow): CompleteSnapshot {
  const snapshot = toSnapshot(row);
  // The snapshots_complete_has_manifest CHECK makes this hold for every complete row.
  if (!isComplete(snapshot)) {
    throw new LetheError(
      ErrorCode.VAULT,
      `snapshot ${row.id} is ${row.status}, or complete without a manifest`,
    );
  }
  return snapshot;
}
