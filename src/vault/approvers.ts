import { ErrorCode, LetheError } from '../errors/index.ts';
import { appendAuditInTransaction } from './audit-log.ts';
import type { AuditEntry, AuditInput } from './audit-hash.ts';
import { inTransaction, query, type VaultContext } from './db.ts';

/**
 * An act proven by a signature: the enrolled key's fingerprint, the exact statement it
 * signed and the armored SSHSIG (`ssh-keygen -Y sign -n lethe-approval`).
 */
export interface SignedAct {
  readonly key: string;
  readonly statement: string;
  readonly signature: string;
}

/** A person who may request, approve, place and release, by their SSH key. */
export interface Approver {
  /** `SHA256:…` as `ssh-keygen -l` prints it. */
  readonly fingerprint: string;
  readonly name: string;
  /** `ssh-ed25519 AAAA…`. */
  readonly publicKey: string;
  readonly enrolledAt: Date;
  /** The fingerprint of the person whose signature enrolled this one; null for the first (`lethe init --enrol`). */
  readonly enrolledBy: string | null;
  readonly enrolment: SignedAct | null;
  readonly revokedAt: Date | null;
  readonly revokedBy: string | null;
  readonly revocation: SignedAct | null;
}

interface ApproverRow {
  fingerprint: string;
  name: string;
  public_key: string;
  enrolled_at: Date;
  enrolled_by: string | null;
  enrol_statement: string | null;
  enrol_signature: string | null;
  revoked_at: Date | null;
  revoked_by: string | null;
  revoke_statement: string | null;
  revoke_signature: string | null;
}

const COLUMNS =
  'fingerprint, name, public_key, enrolled_at, enrolled_by, enrol_statement, enrol_signature, revoked_at, revoked_by, revoke_statement, revoke_signature';

function approversTable(ctx: VaultContext): string {
  return `"${ctx.schema}".approvers`;
}

function signedAct(key: string | null, statement: string | null, signature: string | null): SignedAct | null {
  return key === null || statement === null || signature === null ? null : { key, statement, signature };
}

function toApprover(row: ApproverRow): Approver {
  return {
    fingerprint: row.fingerprint,
    name: row.name,
    publicKey: row.public_key,
    enrolledAt: row.enrolled_at,
    enrolledBy: row.enrolled_by,
    enrolment: signedAct(row.enrolled_by, row.enrol_statement, row.enrol_signature),
    revokedAt: row.revoked_at,
    revokedBy: row.revoked_by,
    revocation: signedAct(row.revoked_by, row.revoke_statement, row.revoke_signature),
  };
}

/** Every enrolled key, revoked ones included, in enrolment order. */
export async function listApprovers(ctx: VaultContext): Promise<Approver[]> {
  const { rows } = await query<ApproverRow>(
    ctx.pool,
    'listing the people enrolled to approve',
    `SELECT ${COLUMNS} FROM ${approversTable(ctx)} ORDER BY enrolled_at, fingerprint`,
  );
  return rows.map(toApprover);
}

/** The enrolled key with that fingerprint (revoked or not), or null. */
export async function getApprover(ctx: VaultContext, fingerprint: string): Promise<Approver | null> {
  const { rows } = await query<ApproverRow>(
    ctx.pool,
    `reading enrolled key ${fingerprint}`,
    `SELECT ${COLUMNS} FROM ${approversTable(ctx)} WHERE fingerprint = $1`,
    [fingerprint],
  );
  const row = rows[0];
  return row === undefined ? null : toApprover(row);
}

export interface NewApprover {
  readonly fingerprint: string;
  readonly name: string;
  readonly publicKey: string;
  /** The enrolled person's signed statement; null only for the first person (`lethe init --enrol`). */
  readonly enrolment: SignedAct | null;
}

/**
 * Enrols a key and appends `audit(approver)` in the same transaction. With `enrolment`
 * null (the first person, by `lethe init`), refuses (REFUSED) when any active key exists:
 * the table is locked for the check, so two first enrolments cannot both pass. REFUSED
 * also for a key already enrolled and for a name an active key already has.
 */
export async function enrolApprover(
  ctx: VaultContext,
  input: NewApprover,
  audit: (approver: Approver) => AuditInput,
): Promise<{ approver: Approver; audit: AuditEntry }> {
  const doing = `enrolling ${input.name}'s key`;
  return inTransaction(ctx.pool, doing, async (client) => {
    await query(client, doing, `LOCK TABLE ${approversTable(ctx)} IN SHARE ROW EXCLUSIVE MODE`);
    const existing = await query<ApproverRow>(client, doing, `SELECT ${COLUMNS} FROM ${approversTable(ctx)}`);
    const all = existing.rows.map(toApprover);
    if (input.enrolment === null && all.some((a) => a.revokedAt === null)) {
      throw new LetheError(
        ErrorCode.REFUSED,
        'this vault already has enrolled people: a new one is enrolled with `lethe people enrol`, signed by one of them',
      );
    }
    const same = all.find((a) => a.fingerprint === input.fingerprint);
    if (same !== undefined) {
      throw new LetheError(
        ErrorCode.REFUSED,
        `key ${input.fingerprint} is already enrolled (as ${same.name}${same.revokedAt === null ? '' : `, revoked ${same.revokedAt.toISOString()}`}); ` +
          'a revoked key cannot come back: generate a new key',
        { details: { fingerprint: input.fingerprint } },
      );
    }
    const named = all.find((a) => a.revokedAt === null && a.name.toLowerCase() === input.name.toLowerCase());
    if (named !== undefined) {
      throw new LetheError(
        ErrorCode.REFUSED,
        `${named.name} is already enrolled with key ${named.fingerprint}: revoke that key first (\`lethe people revoke\`) or choose another name`,
        { details: { name: input.name } },
      );
    }
    const { rows } = await query<ApproverRow>(
      client,
      doing,
      `INSERT INTO ${approversTable(ctx)} (fingerprint, name, public_key, enrolled_by, enrol_statement, enrol_signature)
       VALUES ($1, $2, $3, $4, $5, $6) RETURNING ${COLUMNS}`,
      [
        input.fingerprint,
        input.name,
        input.publicKey,
        input.enrolment?.key ?? null,
        input.enrolment?.statement ?? null,
        input.enrolment?.signature ?? null,
      ],
    );
    const row = rows[0];
    if (row === undefined) throw new LetheError(ErrorCode.INTERNAL, `${doing}: no row returned`);
    const approver = toApprover(row);
    return { approver, audit: await appendAuditInTransaction(ctx, client, audit(approver)) };
  });
}

/**
 * Revokes an enrolled key with the revoker's signed act, and appends `audit(approver)` in
 * the same transaction. USAGE for an unknown fingerprint, REFUSED for a key already revoked.
 */
export async function revokeApprover(
  ctx: VaultContext,
  fingerprint: string,
  by: SignedAct,
  audit: (approver: Approver) => AuditInput,
): Promise<{ approver: Approver; audit: AuditEntry }> {
  const doing = `revoking enrolled key ${fingerprint}`;
  return inTransaction(ctx.pool, doing, async (client) => {
    const { rows } = await query<ApproverRow>(
      client,
      doing,
      `UPDATE ${approversTable(ctx)} SET revoked_at = now(), revoked_by = $2, revoke_statement = $3, revoke_signature = $4
        WHERE fingerprint = $1 AND revoked_at IS NULL RETURNING ${COLUMNS}`,
      [fingerprint, by.key, by.statement, by.signature],
    );
    const row = rows[0];
    if (row === undefined) {
      const known = await getApprover(ctx, fingerprint);
      if (known === null) {
        throw new LetheError(ErrorCode.USAGE, `no enrolled key has fingerprint ${JSON.stringify(fingerprint)}: see \`lethe people list\``);
      }
      throw new LetheError(ErrorCode.REFUSED, `key ${fingerprint} (${known.name}) is already revoked`);
    }
    const approver = toApprover(row);
    return { approver, audit: await appendAuditInTransaction(ctx, client, audit(approver)) };
  });
}
