import type pg from 'pg';
import { ErrorCode, LetheError, throwIfAborted } from '../errors/index.ts';
import { AuditChainChecker, type AuditAnchor, type AuditChainReport } from './audit-chain-check.ts';
import { GENESIS_HASH, auditEntryHash, type AuditEntry, type AuditInput } from './audit-hash.ts';
import { canonicalJson, toJsonValue, type JsonObject } from './canonical-json.ts';
import { inTransaction, query, toSafeInt, type VaultContext } from './db.ts';
import { lockKeyText } from './schema-name.ts';

const PAGE_ROWS = 1000;

/** The columns of {@link AuditRow}, in order. */
export const AUDIT_COLUMNS = 'seq, at, actor, action, subject, details, prev_hash, hash';

/** An audit_log row as pg returns it. */
export interface AuditRow {
  seq: string;
  at: Date;
  actor: string;
  action: string;
  subject: string;
  details: JsonObject;
  prev_hash: string;
  hash: string;
}

/**
 * Appends one entry and returns it as stored. Appends are serialised by a transaction-scoped
 * advisory lock for this vault's audit log, held to commit (reads are not blocked), so
 * concurrent appenders queue up and the chain never forks (and were it ever bypassed, the
 * primary key on seq refuses the second entry with a seq). `at` comes from the database
 * clock, read after the lock, so it never runs backwards along the chain on one server.
 *
 * `details` is stored as it will read back from jsonb (see canonicalJson); if a value
 * would not survive that round trip unchanged the append is refused (INTERNAL), because
 * its hash could never be verified again.
 */
export async function appendAudit(ctx: VaultContext, input: AuditInput): Promise<AuditEntry> {
  return inTransaction(ctx.pool, `appending "${input.action}" to the audit log`, (client) =>
    appendAuditInTransaction(ctx, client, input),
  );
}

/**
 * {@link appendAudit} inside the caller's open transaction on `client`, so the entry
 * commits or rolls back with the caller's other writes (a key destruction and its entry,
 * a hold and its entry). The lock is then held until the caller commits: keep
 * such transactions short. Must not be called outside a transaction (the lock would be
 * released at once and the chain could fork).
 */
export async function appendAuditInTransaction(
  ctx: VaultContext,
  client: pg.PoolClient,
  input: AuditInput,
): Promise<AuditEntry> {
  const details = jsonObject(input.details ?? {}, input.action);
  const doing = `appending "${input.action}" to the audit log`;
  // Not LOCK TABLE … EXCLUSIVE: PostgreSQL allows that only to roles that may UPDATE or
  // DELETE the table, and no job's vault role may (src/vault/role-grants.ts).
  await query(client, doing, 'SELECT pg_advisory_xact_lock(hashtextextended($1, 0))', [lockKeyText(ctx.schema, 'audit')]);
  const { rows } = await query<{ at: Date; seq: string | null; hash: string | null }>(
    client,
    doing,
    `SELECT date_trunc('milliseconds', clock_timestamp()) AS at, head.seq, head.hash
       FROM (SELECT 1) AS one
       LEFT JOIN LATERAL (SELECT seq, hash FROM ${ctx.t.auditLog} ORDER BY seq DESC LIMIT 1) AS head
         ON true`,
  );
  const head = rows[0];
  if (head === undefined) throw new LetheError(ErrorCode.INTERNAL, `${doing}: no clock row`);
  const unhashed = {
    seq: head.seq === null ? 1 : toSafeInt(head.seq, 'the last audit seq') + 1,
    at: head.at,
    actor: input.actor,
    action: input.action,
    subject: input.subject,
    details,
    prevHash: head.hash ?? GENESIS_HASH,
  };
  const entry: AuditEntry = { ...unhashed, hash: auditEntryHash(unhashed) };
  const stored = await query<{ details: unknown }>(
    client,
    doing,
    `INSERT INTO ${ctx.t.auditLog} (seq, at, actor, action, subject, details, prev_hash, hash)
     VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8) RETURNING details`,
    [
      entry.seq,
      entry.at,
      entry.actor,
      entry.action,
      entry.subject,
      canonicalJson(details),
      entry.prevHash,
      entry.hash,
    ],
  );
  if (canonicalJson(stored.rows[0]?.details) !== canonicalJson(details)) {
    throw new LetheError(
      ErrorCode.INTERNAL,
      `${doing}: details changed when stored as jsonb, so the entry could not be verified later; ` +
        'use plain strings, finite numbers, booleans, arrays and objects',
    );
  }
  return entry;
}

/** The newest entry's seq and hash (its chain position), or null for an empty log. */
export async function auditHead(ctx: VaultContext): Promise<{ seq: number; hash: string } | null> {
  const { rows } = await query<{ seq: string; hash: string }>(
    ctx.pool,
    'reading the head of the audit log',
    `SELECT seq, hash FROM ${ctx.t.auditLog} ORDER BY seq DESC LIMIT 1`,
  );
  const row = rows[0];
  return row === undefined ? null : { seq: toSafeInt(row.seq, 'audit seq'), hash: row.hash };
}

/**
 * Yields entries with seq >= `fromSeq` in seq order, a page at a time (keyset
 * pagination: no client or transaction is held between pages). Entries appended while it
 * runs may be included. For export to the bucket and for {@link verifyAuditChain}.
 */
export async function* iterateAudit(
  ctx: VaultContext,
  fromSeq = 1,
  options: { pageRows?: number; signal?: AbortSignal } = {},
): AsyncGenerator<AuditEntry> {
  const pageRows = options.pageRows ?? PAGE_ROWS;
  let next = fromSeq;
  for (;;) {
    throwIfAborted(options.signal, 'reading the audit log');
    const { rows } = await query<AuditRow>(
      ctx.pool,
      'reading the audit log',
      `SELECT ${AUDIT_COLUMNS} FROM ${ctx.t.auditLog} WHERE seq >= $1 ORDER BY seq LIMIT $2`,
      [next, pageRows],
    );
    for (const row of rows) yield auditEntryFromRow(row);
    const last = rows.at(-1);
    if (last === undefined || rows.length < pageRows) return;
    next = toSafeInt(last.seq, 'audit seq') + 1;
  }
}

/**
 * Walks the whole chain, streaming, and reports every break it finds (modified, deleted,
 * reordered or re-hashed entries; anchors that do not match). Returns a report rather
 * than throwing, so one run shows everything; callers turn `ok: false` into AUDIT_CHAIN.
 */
export async function verifyAuditChain(
  ctx: VaultContext,
  options: { anchors?: readonly AuditAnchor[]; signal?: AbortSignal } = {},
): Promise<AuditChainReport> {
  const checker = new AuditChainChecker(options.anchors);
  const walk = options.signal === undefined ? {} : { signal: options.signal };
  for await (const entry of iterateAudit(ctx, 1, walk)) checker.add(entry);
  return checker.finish();
}

/** An audit_log row as an entry; `seq` checked to be a safe integer. */
export function auditEntryFromRow(row: AuditRow): AuditEntry {
  return {
    seq: toSafeInt(row.seq, 'audit seq'),
    at: row.at,
    actor: row.actor,
    action: row.action,
    subject: row.subject,
    details: row.details,
    prevHash: row.prev_hash,
    hash: row.hash,
  };
}

function jsonObject(details: Readonly<Record<string, unknown>>, action: string): JsonObject {
  const value = toJsonValue(details);
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new LetheError(
      ErrorCode.INTERNAL,
      `audit entry "${action}": details must serialise to a JSON object`,
    );
  }
  return value;
}
