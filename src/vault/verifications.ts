import { ErrorCode, LetheError } from '../errors/index.ts';
import { canonicalJson, type JsonObject } from './canonical-json.ts';
import { query, toSafeInt, type VaultContext } from './db.ts';

/** One restore drill or verify run of a snapshot. */
export interface VerificationInput {
  readonly snapshotId: string;
  readonly startedAt: Date;
  readonly durationMs: number;
  readonly ok: boolean;
  /** The per-cell report (counts, findings, RTO, RPO); never secret values. */
  readonly result: Readonly<Record<string, unknown>>;
}

/** A verification as stored. */
export interface Verification {
  readonly id: number;
  readonly snapshotId: string;
  readonly startedAt: Date;
  readonly durationMs: number;
  readonly ok: boolean;
  readonly result: JsonObject;
}

interface VerificationRow {
  id: string;
  snapshot_id: string;
  started_at: Date;
  duration_ms: string;
  ok: boolean;
  result: JsonObject;
}

const COLUMNS = 'id, snapshot_id, started_at, duration_ms, ok, result';

/** Records a verification; throws DATABASE when the snapshot does not exist. */
export async function recordVerification(
  ctx: VaultContext,
  run: VerificationInput,
): Promise<Verification> {
  const { rows } = await query<VerificationRow>(
    ctx.pool,
    `recording a verification of snapshot ${run.snapshotId}`,
    `INSERT INTO ${ctx.t.verifications} (snapshot_id, started_at, duration_ms, ok, result)
     VALUES ($1, $2, $3, $4, $5::jsonb) RETURNING ${COLUMNS}`,
    [run.snapshotId, run.startedAt, Math.round(run.durationMs), run.ok, canonicalJson(run.result)],
  );
  const [row] = rows.map(toVerification);
  if (row === undefined) {
    throw new LetheError(
      ErrorCode.INTERNAL,
      'recording a verification: INSERT ... RETURNING gave no row',
    );
  }
  return row;
}

/** The most recently started verification of `snapshotId`, or null if it never ran. */
export async function lastVerification(
  ctx: VaultContext,
  snapshotId: string,
): Promise<Verification | null> {
  const { rows } = await query<VerificationRow>(
    ctx.pool,
    `reading the last verification of snapshot ${snapshotId}`,
    `SELECT ${COLUMNS} FROM ${ctx.t.verifications} WHERE snapshot_id = $1
      ORDER BY started_at DESC, id DESC LIMIT 1`,
    [snapshotId],
  );
  return rows.map(toVerification)[0] ?? null;
}

function toVerification(row: VerificationRow): Verification {
  return {
    id: toSafeInt(row.id, 'verification id'),
    snapshotId: row.snapshot_id,
    startedAt: row.started_at,
    durationMs: toSafeInt(row.duration_ms, 'verification duration'),
    ok: row.ok,
    result: row.result,
  };
}

/** Verifications newest first, at most `limit`, optionally started at or after `since`. */
export async function listVerifications(ctx: VaultContext, options: { limit?: number; since?: Date } = {}): Promise<Verification[]> {
  const { rows } = await query<VerificationRow>(
    ctx.pool,
    'listing verifications',
    `SELECT ${COLUMNS} FROM ${ctx.t.verifications}
      WHERE $1::timestamptz IS NULL OR started_at >= $1
      ORDER BY started_at DESC, id DESC LIMIT $2::integer`,
    [options.since ?? null, options.limit ?? null],
  );
  return rows.map(toVerification);
}
