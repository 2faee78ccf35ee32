import type pg from 'pg';
import type { Hold } from '../lifecycle/types.ts';
import { appendAuditInTransaction } from './audit-log.ts';
import type { AuditEntry, AuditInput } from './audit-hash.ts';
import { inTransaction, query, toSafeInt, type VaultContext } from './db.ts';
import type { SignedAct } from './approvers.ts';

/** One selector to store; the vault adds the id and placement time. */
export type NewHold = Pick<Hold, 'caseId' | 'tenant' | 'user' | 'conversation' | 'from' | 'to' | 'reason' | 'placedBy'> & {
  /** The placer's signed statement; absent for a typed name. */
  readonly proof?: SignedAct | null;
};

/** A holds row as pg returns it. */
export interface HoldRow {
  id: string;
  case_id: string;
  tenant: string;
  user_id: string | null;
  conversation: string | null;
  from_ts: Date | null;
  to_ts: Date | null;
  reason: string;
  placed_by: string;
  placed_at: Date;
  released_by: string | null;
  released_at: Date | null;
}

/** The columns of {@link HoldRow}, in order. */
export const HOLD_COLUMNS =
  'id, case_id, tenant, user_id, conversation, from_ts, to_ts, reason, placed_by, placed_at, released_by, released_at';

/** `"schema".holds`: the schema name was checked when the context was built. */
export function holdsTable(ctx: VaultContext): string {
  return `"${ctx.schema}".holds`;
}

/**
 * Stores the selectors of one placement and appends `audit(rows)` in the same transaction,
 * so a hold is never in force without its audit entry (nor the reverse). Returns the rows as
 * stored. The table's CHECKs (case id pattern, from <= to, non-empty reason and actor)
 * reject bad rows with DATABASE; callers validate first to give a better message.
 */
export async function placeHolds(
  ctx: VaultContext,
  holds: readonly NewHold[],
  audit: (rows: readonly Hold[]) => AuditInput,
): Promise<{ holds: Hold[]; audit: AuditEntry }> {
  const doing = 'placing a legal hold';
  return inTransaction(ctx.pool, doing, async (client) => {
    const stored: Hold[] = [];
    for (const h of holds) {
      const { rows } = await query<HoldRow>(
        client,
        doing,
        `INSERT INTO ${holdsTable(ctx)}
           (case_id, tenant, user_id, conversation, from_ts, to_ts, reason, placed_by, placed_key, place_statement, place_signature)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING ${HOLD_COLUMNS}`,
        [
          h.caseId,
          h.tenant,
          h.user,
          h.conversation,
          h.from,
          h.to,
          h.reason,
          h.placedBy,
          h.proof?.key ?? null,
          h.proof?.statement ?? null,
          h.proof?.signature ?? null,
        ],
      );
      for (const row of rows) stored.push(holdFromRow(row));
    }
    const entry = await appendAuditInTransaction(ctx, client, audit(stored));
    return { holds: stored, audit: entry };
  });
}

/**
 * Releases every active selector of `caseId` (in every tenant) and appends `audit(rows)` in
 * the same transaction; returns the rows released, [] when the case has no active selector
 * (then nothing is written, not even the audit entry).
 */
export async function releaseCase(
  ctx: VaultContext,
  caseId: string,
  actor: string,
  audit: (rows: readonly Hold[]) => AuditInput,
  proof: SignedAct | null = null,
): Promise<{ holds: Hold[]; audit: AuditEntry | null }> {
  const doing = `releasing legal hold case ${caseId}`;
  return inTransaction(ctx.pool, doing, async (client: pg.PoolClient) => {
    const { rows } = await query<HoldRow>(
      client,
      doing,
      `UPDATE ${holdsTable(ctx)} SET released_by = $2, released_at = now(),
              released_key = $3, release_statement = $4, release_signature = $5
        WHERE case_id = $1 AND released_at IS NULL RETURNING ${HOLD_COLUMNS}`,
      [caseId, actor, proof?.key ?? null, proof?.statement ?? null, proof?.signature ?? null],
    );
    const released = rows.map(holdFromRow).sort((a, b) => a.id - b.id);
    if (released.length === 0) return { holds: [], audit: null };
    const entry = await appendAuditInTransaction(ctx, client, audit(released));
    return { holds: released, audit: entry };
  });
}

/**
 * Every hold selector, released ones included, oldest first. A missing table is a DATABASE
 * error, never an empty list: destruction must fail closed.
 */
export async function listHolds(ctx: VaultContext): Promise<Hold[]> {
  const { rows } = await query<HoldRow>(
    ctx.pool,
    'listing legal holds',
    `SELECT ${HOLD_COLUMNS} FROM ${holdsTable(ctx)} ORDER BY id`,
  );
  return rows.map(holdFromRow);
}

/** A holds row as a Hold. */
export function holdFromRow(row: HoldRow): Hold {
  return {
    id: toSafeInt(row.id, 'hold id'),
    caseId: row.case_id,
    tenant: row.tenant,
    user: row.user_id,
    conversation: row.conversation,
    from: row.from_ts,
    to: row.to_ts,
    reason: row.reason,
    placedBy: row.placed_by,
    placedAt: row.placed_at,
    releasedAt: row.released_at,
    releasedBy: row.released_by,
  };
}
