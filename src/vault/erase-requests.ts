import { randomInt } from 'node:crypto';
import type { EraseRequest, EraseScope } from '../lifecycle/types.ts';
import { ErrorCode, LetheError } from '../errors/index.ts';
import { appendAuditInTransaction } from './audit-log.ts';
import type { AuditEntry, AuditInput } from './audit-hash.ts';
import { inTransaction, query, type VaultContext } from './db.ts';
import { holdsTable } from './holds.ts';
import type { SignedAct } from './approvers.ts';

/** `"schema".erase_requests`. */
function requestsTable(ctx: VaultContext): string {
  return `"${ctx.schema}".erase_requests`;
}

const ID_ALPHABET = '0123456789abcdefghijklmnopqrstuvwxyz';
const ID_CHARS = 16;

/** A fresh request id: `er-` and 16 random base-36 characters (~82 bits). */
export function newEraseRequestId(): string {
  let id = 'er-';
  for (let i = 0; i < ID_CHARS; i += 1) id += ID_ALPHABET[randomInt(ID_ALPHABET.length)] ?? '0';
  return id;
}

/** A request as stored, with its certificate once executed. */
export interface StoredEraseRequest extends EraseRequest {
  /** The signed destruction certificate (JSON) once executed, else null. */
  readonly certificate: unknown;
  /** The requester's signed statement; null for a typed name (before signed approvals, or approvals.allowUnsigned). */
  readonly requestProof: SignedAct | null;
  /** The approver's signed statement; null while pending or for a typed name. */
  readonly approvalProof: SignedAct | null;
}

export interface NewEraseRequest {
  /** Null for a person across every tenant (scope user; migration 10's CHECK). */
  readonly tenant: string | null;
  readonly scope: EraseScope;
  readonly subject: string | null;
  readonly reason: string;
  readonly requestedBy: string;
  /** The requester's signed statement, null for a typed name. */
  readonly requestProof?: SignedAct | null;
}

/** An erase_requests row as pg returns it. */
export interface RequestRow {
  id: string;
  tenant: string | null;
  scope: EraseScope;
  subject: string | null;
  reason: string;
  requested_by: string;
  requested_at: Date;
  status: 'pending' | 'approved' | 'executed';
  approved_by: string | null;
  approved_at: Date | null;
  executed_at: Date | null;
  certificate: unknown;
  requested_key: string | null;
  request_statement: string | null;
  request_signature: string | null;
  approved_key: string | null;
  approval_statement: string | null;
  approval_signature: string | null;
}

/** The columns of {@link RequestRow}, in order. */
export const ERASE_REQUEST_COLUMNS =
  'id, tenant, scope, subject, reason, requested_by, requested_at, status, approved_by, approved_at, executed_at, certificate, ' +
  'requested_key, request_statement, request_signature, approved_key, approval_statement, approval_signature';

/**
 * Stores a pending request under a fresh id and appends `audit(request)` in the same
 * transaction. The table's CHECKs refuse (DATABASE) an empty reason or actor and a subject
 * that does not fit the scope; callers validate first.
 */
export async function createEraseRequest(
  ctx: VaultContext,
  input: NewEraseRequest,
  audit: (request: StoredEraseRequest) => AuditInput,
): Promise<{ request: StoredEraseRequest; audit: AuditEntry }> {
  const doing = 'recording a deletion request';
  return inTransaction(ctx.pool, doing, async (client) => {
    const { rows } = await query<RequestRow>(
      client,
      doing,
      `INSERT INTO ${requestsTable(ctx)}
         (id, tenant, scope, subject, reason, requested_by, requested_key, request_statement, request_signature)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING ${ERASE_REQUEST_COLUMNS}`,
      [
        newEraseRequestId(),
        input.tenant,
        input.scope,
        input.subject,
        input.reason,
        input.requestedBy,
        input.requestProof?.key ?? null,
        input.requestProof?.statement ?? null,
        input.requestProof?.signature ?? null,
      ],
    );
    const request = toRequest(one(rows, doing));
    return { request, audit: await appendAuditInTransaction(ctx, client, audit(request)) };
  });
}

/** The request, or null when no request has that id. */
export async function getEraseRequest(
  ctx: VaultContext,
  id: string,
): Promise<StoredEraseRequest | null> {
  const { rows } = await query<RequestRow>(
    ctx.pool,
    `reading deletion request ${id}`,
    `SELECT ${ERASE_REQUEST_COLUMNS} FROM ${requestsTable(ctx)} WHERE id = $1`,
    [id],
  );
  const row = rows[0];
  return row === undefined ? null : toRequest(row);
}

/** Every request, oldest first. */
export async function listEraseRequests(ctx: VaultContext): Promise<StoredEraseRequest[]> {
  const { rows } = await query<RequestRow>(
    ctx.pool,
    'listing deletion requests',
    `SELECT ${ERASE_REQUEST_COLUMNS} FROM ${requestsTable(ctx)} ORDER BY requested_at, id`,
  );
  return rows.map(toRequest);
}

/**
 * pending → approved by `actor`, with `audit(request)` in the same transaction.
 *
 * Refuses (REFUSED) a request that is not pending and an approver who is the requester
 * (two-person rule; the table's CHECK refuses it too, should this check ever be bypassed);
 * USAGE when no request has that id. `check(request)` runs inside the transaction after the
 * request row is locked and the holds table is locked against new holds (SHARE mode: reads
 * go on), so a hold placed concurrently is either seen by `check` or placed after the
 * approval; it throws to refuse.
 */
export async function approveEraseRequest(
  ctx: VaultContext,
  id: string,
  actor: string,
  options: {
    check: (request: StoredEraseRequest) => Promise<void>;
    audit: (request: StoredEraseRequest) => AuditInput;
    /** The approver's signed statement; absent for a typed name. */
    proof?: SignedAct | null;
  },
): Promise<{ request: StoredEraseRequest; audit: AuditEntry }> {
  const doing = `approving deletion request ${id}`;
  const proof = options.proof ?? null;
  return inTransaction(ctx.pool, doing, async (client) => {
    const { rows } = await query<RequestRow>(
      client,
      doing,
      `SELECT ${ERASE_REQUEST_COLUMNS} FROM ${requestsTable(ctx)} WHERE id = $1 FOR UPDATE`,
      [id],
    );
    const row = rows[0];
    if (row === undefined) throw unknownRequest(id);
    const pending = toRequest(row);
    if (pending.status !== 'pending') {
      throw new LetheError(
        ErrorCode.REFUSED,
        `deletion request ${id} is already ${pending.status} (approved by ${pending.approvedBy ?? '?'}); ` +
          (pending.status === 'approved'
            ? 'its execution was interrupted: `lethe lifecycle apply` (or approving again) finishes it'
            : `see its certificate with \`lethe erase show ${id}\``),
        { details: { requestId: id, status: pending.status } },
      );
    }
    // Stricter than the table's CHECK: "Alice" may not approve what "alice" requested.
    if (samePerson(pending.requestedBy, actor)) {
      throw new LetheError(
        ErrorCode.REFUSED,
        `deletion request ${id} was requested by ${actor}, who cannot also approve it ` +
          '(two-person rule): ask a second authorised person to run `lethe erase approve`',
        { details: { requestId: id, rule: 'two-person', requestedBy: actor } },
      );
    }
    // The two-person rule on keys (the table's CHECK too): a second name is not a second person.
    if (proof !== null && pending.requestProof !== null && proof.key === pending.requestProof.key) {
      throw new LetheError(
        ErrorCode.REFUSED,
        `deletion request ${id} was signed by key ${proof.key}, which cannot also approve it ` +
          '(two-person rule): a second enrolled person signs the approval with their own key',
        { details: { requestId: id, rule: 'two-person', key: proof.key } },
      );
    }
    await query(client, doing, `LOCK TABLE ${holdsTable(ctx)} IN SHARE MODE`);
    await options.check(pending);
    const updated = await query<RequestRow>(
      client,
      doing,
      `UPDATE ${requestsTable(ctx)} SET status = 'approved', approved_by = $2, approved_at = now(),
              approved_key = $3, approval_statement = $4, approval_signature = $5
        WHERE id = $1 AND status = 'pending' RETURNING ${ERASE_REQUEST_COLUMNS}`,
      [id, actor, proof?.key ?? null, proof?.statement ?? null, proof?.signature ?? null],
    );
    const request = toRequest(one(updated.rows, doing));
    return { request, audit: await appendAuditInTransaction(ctx, client, options.audit(request)) };
  });
}

/**
 * approved → executed with its certificate, with `audit(request)` in the same transaction.
 * Returns the request as it is afterwards; a request already executed is returned as it is
 * (no second audit entry), so finishing twice is harmless. REFUSED when it is still pending.
 */
export async function markEraseRequestExecuted(
  ctx: VaultContext,
  id: string,
  done: { executedAt: Date; certificate: unknown },
  audit: (request: StoredEraseRequest) => AuditInput,
): Promise<StoredEraseRequest> {
  const doing = `recording the execution of deletion request ${id}`;
  return inTransaction(ctx.pool, doing, async (client) => {
    const { rows } = await query<RequestRow>(
      client,
      doing,
      `UPDATE ${requestsTable(ctx)} SET status = 'executed', executed_at = $2, certificate = $3::jsonb
        WHERE id = $1 AND status = 'approved' RETURNING ${ERASE_REQUEST_COLUMNS}`,
      [id, done.executedAt, JSON.stringify(done.certificate)],
    );
    const row = rows[0];
    if (row === undefined) {
      const current = await query<RequestRow>(
        client,
        doing,
        `SELECT ${ERASE_REQUEST_COLUMNS} FROM ${requestsTable(ctx)} WHERE id = $1`,
        [id],
      );
      const now = current.rows[0];
      if (now === undefined) throw unknownRequest(id);
      if (now.status === 'executed') return toRequest(now);
      throw new LetheError(
        ErrorCode.REFUSED,
        `deletion request ${id} is ${now.status}, not approved: it cannot be marked executed`,
      );
    }
    const request = toRequest(row);
    await appendAuditInTransaction(ctx, client, audit(request));
    return request;
  });
}

function samePerson(a: string, b: string): boolean {
  return a.trim().toLowerCase() === b.trim().toLowerCase();
}

function unknownRequest(id: string): LetheError {
  return new LetheError(
    ErrorCode.USAGE,
    `no deletion request has id ${JSON.stringify(id)}: see \`lethe erase list\` for the ids`,
    { details: { requestId: id } },
  );
}

function one(rows: readonly RequestRow[], doing: string): RequestRow {
  const row = rows[0];
  if (row === undefined) throw new LetheError(ErrorCode.INTERNAL, `${doing}: no row returned`);
  return row;
}

/** An erase_requests row as a StoredEraseRequest. */
export function toRequest(row: RequestRow): StoredEraseRequest {
  return {
    id: row.id,
    tenant: row.tenant,
    scope: row.scope,
    subject: row.subject,
    reason: row.reason,
    requestedBy: row.requested_by,
    requestedAt: row.requested_at,
    status: row.status,
    approvedBy: row.approved_by,
    approvedAt: row.approved_at,
    executedAt: row.executed_at,
    certificate: row.certificate,
    requestProof: proofOf(row.requested_key, row.request_statement, row.request_signature),
    approvalProof: proofOf(row.approved_key, row.approval_statement, row.approval_signature),
  };
}

function proofOf(key: string | null, statement: string | null, signature: string | null): SignedAct | null {
  return key === null || statement === null || signature === null ? null : { key, statement, signature };
}
