import { ErrorCode, LetheError } from '../errors/index.ts';
import { canonicalJson, type JsonObject } from './canonical-json.ts';
import { query, type VaultContext } from './db.ts';

/** One shard of a coordinated backup, as the vault records it. */
export interface BackupShard {
  readonly snapshotId: string;
  readonly shard: number;
  readonly shards: number;
  /** What every worker follows (see the backup's ShardPlan). */
  readonly plan: JsonObject;
  readonly status: 'pending' | 'running' | 'done' | 'failed';
  readonly owner: string | null;
  readonly result: JsonObject | null;
  readonly error: string | null;
}

interface ShardRow {
  snapshot_id: string;
  shard: number;
  shards: number;
  plan: JsonObject;
  status: BackupShard['status'];
  owner: string | null;
  result: JsonObject | null;
  error: string | null;
}

const COLUMNS = 'snapshot_id, shard, shards, plan, status, owner, result, error';

function toShard(r: ShardRow): BackupShard {
  return { snapshotId: r.snapshot_id, shard: r.shard, shards: r.shards, plan: r.plan, status: r.status, owner: r.owner, result: r.result, error: r.error };
}

/** Records the `shards` shards of a running snapshot, all pending, with the plan. */
export async function createBackupShards(ctx: VaultContext, snapshotId: string, shards: number, plan: JsonObject): Promise<void> {
  await query(
    ctx.pool,
    `recording the shards of snapshot ${snapshotId}`,
    `INSERT INTO "${ctx.schema}".backup_shards (snapshot_id, shard, shards, plan)
     SELECT $1, s, $2, $3::jsonb FROM generate_series(0, $2 - 1) AS s`,
    [snapshotId, shards, canonicalJson(plan)],
  );
}

/**
 * The newest running coordinated snapshot whose shard `shard` of `shards` is still pending
 * (without claiming it); null when none is offered (yet).
 */
export async function offeredBackupShard(ctx: VaultContext, shard: number, shards: number): Promise<BackupShard | null> {
  const { rows } = await query<ShardRow>(
    ctx.pool,
    `looking for backup shard ${shard}/${shards}`,
    `SELECT ${COLUMNS.split(', ').map((c) => `x.${c}`).join(', ')} FROM "${ctx.schema}".backup_shards x
       JOIN ${ctx.t.snapshots} s ON s.id = x.snapshot_id AND s.status = 'running'
      WHERE x.shard = $1 AND x.shards = $2 AND x.status = 'pending'
      ORDER BY s.seq DESC LIMIT 1`,
    [shard, shards],
  );
  const row = rows[0];
  return row === undefined ? null : toShard(row);
}

/** Claims a pending shard of a running snapshot; false when it is no longer pending. */
export async function claimBackupShard(ctx: VaultContext, snapshotId: string, shard: number, owner: string): Promise<boolean> {
  const { rowCount } = await query(
    ctx.pool,
    `claiming backup shard ${shard} of ${snapshotId}`,
    `UPDATE "${ctx.schema}".backup_shards b SET status = 'running', owner = $3, claimed_at = now()
      FROM ${ctx.t.snapshots} s
     WHERE b.snapshot_id = $1 AND b.shard = $2 AND b.status = 'pending' AND s.id = b.snapshot_id AND s.status = 'running'`,
    [snapshotId, shard, owner],
  );
  return rowCount === 1;
}

/** Records how a claimed shard ended. Throws VAULT when it was not running (the coordinator gave up on it). */
export async function finishBackupShard(
  ctx: VaultContext,
  snapshotId: string,
  shard: number,
  outcome: { result: JsonObject } | { error: string },
): Promise<void> {
  const { rowCount } = await query(
    ctx.pool,
    `recording the end of backup shard ${shard} of ${snapshotId}`,
    `UPDATE "${ctx.schema}".backup_shards SET status = $3, finished_at = now(), result = $4::jsonb, error = $5
      WHERE snapshot_id = $1 AND shard = $2 AND status = 'running'`,
    [snapshotId, shard, 'result' in outcome ? 'done' : 'failed', 'result' in outcome ? canonicalJson(outcome.result) : null, 'error' in outcome ? outcome.error : null],
  );
  if (rowCount !== 1) throw new LetheError(ErrorCode.VAULT, `shard ${shard} of snapshot ${snapshotId} is no longer running: the coordinator gave up on it`);
}

/** Every shard of a snapshot, by shard number. */
export async function backupShards(ctx: VaultContext, snapshotId: string): Promise<BackupShard[]> {
  const { rows } = await query<ShardRow>(
    ctx.pool,
    `reading the shards of snapshot ${snapshotId}`,
    `SELECT ${COLUMNS} FROM "${ctx.schema}".backup_shards WHERE snapshot_id = $1 ORDER BY shard`,
    [snapshotId],
  );
  return rows.map(toShard);
}
