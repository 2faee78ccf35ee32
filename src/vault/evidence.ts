import type pg from 'pg';
import { AUDIT_COLUMNS, auditEntryFromRow, type AuditRow } from './audit-log.ts';
import { HOLD_COLUMNS, holdFromRow, type HoldRow } from './holds.ts';
import type { Hold } from '../lifecycle/types.ts';
import { ErrorCode, LetheError, throwIfAborted } from '../errors/index.ts';
import { AuditChainChecker, type AuditAnchor, type AuditChainReport } from './audit-chain-check.ts';
import type { JsonObject, JsonValue } from './canonical-json.ts';
import { query, toSafeInt, type Queryable } from './db.ts';
import { checkSchemaName, vaultTables } from './schema-name.ts';
import type { SnapshotStatus } from './snapshots.ts';
import { ERASE_REQUEST_COLUMNS, toRequest, type RequestRow, type StoredEraseRequest } from './erase-requests.ts';

/**
 * What an evidence report reads from the vault for a period, in one REPEATABLE READ
 * snapshot (Vault.withReadSnapshot), so every count in a report describes the same instant.
 * Read only. Every function takes that transaction's client and the (checked) schema name.
 */

/** An inclusive interval on the vault clock. */
export interface EvidenceInterval {
  readonly from: Date;
  readonly to: Date;
}

/** A snapshot row as the report lists it. */
export interface EvidenceSnapshot {
  readonly id: string;
  readonly status: SnapshotStatus;
  readonly startedAt: Date;
  readonly completedAt: Date | null;
  readonly expiredAt: Date | null;
  /** The backup's result as recorded at completion (null while running or abandoned); unchecked. */
  readonly stats: JsonObject | null;
}

/** A restore drill (a `verifications` row), with the parts of its result the report uses. */
export interface EvidenceDrill {
  readonly id: number;
  readonly snapshotId: string;
  readonly startedAt: Date;
  readonly durationMs: number;
  readonly ok: boolean;
  /** `result` members as stored (unchecked): cells, cellsVerified, cellsFailed, cellsShredded, dataAgeSeconds. */
  readonly result: Readonly<Record<string, JsonValue>>;
  readonly findings: number;
  /** Distinct finding codes, sorted. */
  readonly findingCodes: readonly string[];
}

/** A destruction record (`destructions` row); `cause` is checked by the caller. */
export interface EvidenceDestruction {
  readonly keyId: string;
  readonly destroyedAt: Date;
  readonly actor: string;
  readonly reason: string;
  readonly cause: JsonValue;
  readonly auditSeq: number;
}

/** Audit facts: the whole chain checked, and the period's entries counted by action. */
export interface EvidenceAudit {
  readonly chain: AuditChainReport;
  readonly inPeriod: {
    readonly entries: number;
    readonly firstSeq: number | null;
    readonly lastSeq: number | null;
    /** Sorted by action. */
    readonly byAction: readonly { readonly action: string; readonly count: number }[];
  };
}

function table(schema: string, name: string): string {
  return `"${checkSchemaName(schema)}".${name}`;
}

/** The vault database's clock: the transaction's start, the instant a read snapshot shows. */
export async function vaultClock(db: Queryable): Promise<Date> {
  const { rows } = await query<{ now: Date }>(db, 'reading the vault clock', 'SELECT now() AS now');
  const now = rows[0]?.now;
  if (now === undefined)
    throw new LetheError(ErrorCode.INTERNAL, 'reading the vault clock: SELECT now() gave no row');
  return now;
}

const bounds = (period: EvidenceInterval): [Date, Date] => [period.from, period.to];

/** Snapshots whose run started in the period, oldest first: complete, running, abandoned and expired. */
export async function snapshotsStarted(
  db: Queryable,
  schema: string,
  period: EvidenceInterval,
): Promise<EvidenceSnapshot[]> {
  const { rows } = await query<{
    id: string;
    status: SnapshotStatus;
    started_at: Date;
    completed_at: Date | null;
    expired_at: Date | null;
    stats: JsonObject | null;
  }>(
    db,
    'reading the snapshots of the report period',
    `SELECT id, status, started_at, completed_at, expired_at, stats FROM ${vaultTables(schema).snapshots}
      WHERE started_at BETWEEN $1 AND $2 ORDER BY started_at, id`,
    bounds(period),
  );
  return rows.map((r) => ({
    id: r.id,
    status: r.status,
    startedAt: r.started_at,
    completedAt: r.completed_at,
    expiredAt: r.expired_at,
    stats: r.stats,
  }));
}

/**
 * The snapshots that completed (and may have expired since) by `period.to`: those that
 * completed inside the period, and the one with the newest start among those that completed
 * before it (where the period's RPO starts). Oldest completion first.
 */
export async function restorePoints(
  db: Queryable,
  schema: string,
  period: EvidenceInterval,
): Promise<{ id: string; startedAt: Date; completedAt: Date }[]> {
  const snapshots = vaultTables(schema).snapshots;
  const { rows } = await query<{ id: string; started_at: Date; completed_at: Date }>(
    db,
    'reading the restore points of the report period',
    `(SELECT id, started_at, completed_at FROM ${snapshots}
       WHERE status IN ('complete', 'expired') AND completed_at < $1
       ORDER BY started_at DESC, id DESC LIMIT 1)
     UNION ALL
     (SELECT id, started_at, completed_at FROM ${snapshots}
       WHERE status IN ('complete', 'expired') AND completed_at BETWEEN $1 AND $2)
     ORDER BY completed_at, id`,
    bounds(period),
  );
  return rows.map((r) => ({ id: r.id, startedAt: r.started_at, completedAt: r.completed_at }));
}

/** Restore drills started in the period, oldest first, each with its finding count and codes. */
export async function drillsStarted(
  db: Queryable,
  schema: string,
  period: EvidenceInterval,
): Promise<EvidenceDrill[]> {
  const { rows } = await query<{
    id: string;
    snapshot_id: string;
    started_at: Date;
    duration_ms: string;
    ok: boolean;
    summary: Record<string, JsonValue> | null;
    findings: number | null;
    codes: string[] | null;
  }>(
    db,
    'reading the restore drills of the report period',
    // Only the counts leave the database: a failed drill's result holds up to 1,000 findings.
    `SELECT v.id, v.snapshot_id, v.started_at, v.duration_ms, v.ok,
            jsonb_build_object(
              'cells', v.result->'cells', 'cellsVerified', v.result->'cellsVerified',
              'cellsFailed', v.result->'cellsFailed', 'cellsShredded', v.result->'cellsShredded',
              'dataAgeSeconds', v.result->'dataAgeSeconds', 'rows', v.result->'rows') AS summary,
            CASE WHEN jsonb_typeof(v.result->'findings') = 'array' THEN jsonb_array_length(v.result->'findings') END AS findings,
            (SELECT array_agg(DISTINCT f->>'code' ORDER BY f->>'code')
               FROM jsonb_array_elements(CASE WHEN jsonb_typeof(v.result->'findings') = 'array'
                                              THEN v.result->'findings' ELSE '[]'::jsonb END) f
              WHERE jsonb_typeof(f->'code') = 'string') AS codes
       FROM ${vaultTables(schema).verifications} v
      WHERE v.started_at BETWEEN $1 AND $2 ORDER BY v.started_at, v.id`,
    bounds(period),
  );
  return rows.map((r) => ({
    id: toSafeInt(r.id, 'verification id'),
    snapshotId: r.snapshot_id,
    startedAt: r.started_at,
    durationMs: toSafeInt(r.duration_ms, 'verification duration'),
    ok: r.ok,
    result: r.summary ?? {},
    findings: r.findings ?? 0,
    findingCodes: r.codes ?? [],
  }));
}


/**
 * Hold selectors in force at some instant of the period: placed by its end and not released
 * before its start. That is every selector placed or released in the period, and those in
 * force throughout it. Oldest first.
 */
export async function holdsInForce(
  db: Queryable,
  schema: string,
  period: EvidenceInterval,
): Promise<Hold[]> {
  const { rows } = await query<HoldRow>(
    db,
    'reading the legal holds of the report period',
    `SELECT ${HOLD_COLUMNS} FROM ${table(schema, 'holds')}
      WHERE placed_at <= $2 AND (released_at IS NULL OR released_at >= $1)
      ORDER BY placed_at, id`,
    bounds(period),
  );
  return rows.map(holdFromRow);
}

/**
 * Deletion requests open at some instant of the period: requested by its end and not
 * executed before its start (so every request made, approved or executed in the period, and
 * those waiting throughout it), with their certificates. Oldest first.
 */
export async function eraseRequestsOpen(
  db: Queryable,
  schema: string,
  period: EvidenceInterval,
): Promise<StoredEraseRequest[]> {
  const { rows } = await query<RequestRow>(
    db,
    'reading the deletion requests of the report period',
    `SELECT ${ERASE_REQUEST_COLUMNS}
       FROM ${table(schema, 'erase_requests')}
      WHERE requested_at <= $2 AND (executed_at IS NULL OR executed_at >= $1)
      ORDER BY requested_at, id`,
    bounds(period),
  );
  return rows.map(toRequest);
}

/** Dimension keys destroyed in the period, oldest first (then by key id). */
export async function destructionsIn(
  db: Queryable,
  schema: string,
  period: EvidenceInterval,
): Promise<EvidenceDestruction[]> {
  const { rows } = await query<{
    key_id: string;
    destroyed_at: Date;
    actor: string;
    reason: string;
    cause: JsonValue;
    audit_seq: string;
  }>(
    db,
    'reading the key destructions of the report period',
    `SELECT key_id, destroyed_at, actor, reason, cause, audit_seq FROM ${table(schema, 'destructions')}
      WHERE destroyed_at BETWEEN $1 AND $2 ORDER BY destroyed_at, key_id`,
    bounds(period),
  );
  return rows.map((r) => ({
    keyId: r.key_id,
    destroyedAt: r.destroyed_at,
    actor: r.actor,
    reason: r.reason,
    cause: r.cause,
    auditSeq: toSafeInt(r.audit_seq, 'destruction audit seq'),
  }));
}

const AUDIT_PAGE_ROWS = 1000;

/**
 * Walks the whole audit chain from its first entry (a break before the period makes every
 * later entry doubtful too), checking it against `anchors`, and counts the period's entries
 * by action. Streams a page at a time.
 */
export async function auditEvidence(
  db: pg.PoolClient,
  schema: string,
  period: EvidenceInterval,
  options: { anchors?: readonly AuditAnchor[]; signal?: AbortSignal } = {},
): Promise<EvidenceAudit> {
  const checker = new AuditChainChecker(options.anchors);
  const byAction = new Map<string, number>();
  let entries = 0;
  let firstSeq: number | null = null;
  let lastSeq: number | null = null;
  const from = period.from.getTime();
  const to = period.to.getTime();
  let next = 1;
  for (;;) {
    throwIfAborted(options.signal, 'checking the audit chain');
    const { rows } = await query<AuditRow>(
      db,
      'checking the audit chain',
      `SELECT ${AUDIT_COLUMNS} FROM ${vaultTables(schema).auditLog} WHERE seq >= $1 ORDER BY seq LIMIT $2`,
      [next, AUDIT_PAGE_ROWS],
    );
    for (const row of rows) {
      const entry = auditEntryFromRow(row);
      checker.add(entry);
      const at = entry.at.getTime();
      if (at >= from && at <= to) {
        entries += 1;
        firstSeq ??= entry.seq;
        lastSeq = entry.seq;
        byAction.set(entry.action, (byAction.get(entry.action) ?? 0) + 1);
      }
    }
    const last = rows.at(-1);
    if (last === undefined || rows.length < AUDIT_PAGE_ROWS) break;
    next = toSafeInt(last.seq, 'audit seq') + 1;
  }
  return {
    chain: checker.finish(),
    inPeriod: {
      entries,
      firstSeq,
      lastSeq,
      byAction: [...byAction]
        .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
        .map(([action, count]) => ({ action, count })),
    },
  };
}
