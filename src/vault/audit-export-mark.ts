import { ErrorCode, LetheError } from '../errors/index.ts';
import { query, toSafeInt, type VaultContext } from './db.ts';

const KEY = 'audit_exported_seq';

/**
 * The highest audit seq known to be copied to the bucket (0 when none), so an export
 * resumes where the last one stopped instead of rewriting WORM objects.
 */
export async function auditExportedSeq(ctx: VaultContext): Promise<number> {
  const { rows } = await query<{ seq: string | null }>(
    ctx.pool,
    'reading the audit export position',
    `SELECT value #>> '{}' AS seq FROM ${ctx.t.meta} WHERE key = $1`,
    [KEY],
  );
  const seq = rows[0]?.seq;
  return seq === undefined || seq === null ? 0 : toSafeInt(seq, 'the audit export position');
}

/**
 * Records that entries up to `seq` are in the bucket. Only ever moves forward, so two
 * exporters finishing out of order cannot make the next export skip entries.
 */
export async function setAuditExportedSeq(ctx: VaultContext, seq: number): Promise<void> {
  if (!Number.isSafeInteger(seq) || seq < 0) {
    throw new LetheError(
      ErrorCode.INTERNAL,
      `audit export position ${seq} is not a non-negative integer`,
    );
  }
  await query(
    ctx.pool,
    'recording the audit export position',
    `INSERT INTO ${ctx.t.meta} AS m (key, value) VALUES ($1, to_jsonb($2::bigint))
     ON CONFLICT (key) DO UPDATE
       SET value = to_jsonb(GREATEST((m.value #>> '{}')::bigint, $2::bigint))`,
    [KEY, seq],
  );
}
