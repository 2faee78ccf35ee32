import { tenantKeyId } from '../cells/ids.ts';
import { calendarFieldsValid } from '../util/calendar.ts';
import { sortTenants } from '../util/tenant-order.ts';
import { ErrorCode, LetheError } from '../errors/index.ts';
import type { Vault } from '../vault/index.ts';
import type { Hold } from './types.ts';
import { actStatement, attest, type Act, type Attestation } from './approvals.ts';

/** What `lethe hold place` asks for. Dates are ISO-8601 strings or Dates. */
export interface PlaceHoldInput {
  readonly caseId: string;
  readonly tenant: string;
  readonly user?: string | undefined;
  readonly conversation?: string | undefined;
  readonly from?: string | Date | undefined;
  readonly to?: string | Date | undefined;
  readonly reason: string;
  /** The placer's SSHSIG over the placement's statement (see approvals.ts), or… */
  readonly signature?: string | undefined;
  /** …a typed name, accepted only with `allowUnsigned` (config approvals.allowUnsigned). */
  readonly actor?: string | undefined;
  readonly allowUnsigned?: boolean | undefined;
}

const PLACE_USAGE = 'hold place --case ID --tenant T [--user U] [--conversation C] [--from DATE] [--to DATE] --reason TEXT (--signature FILE | --print-statement)';
const RELEASE_USAGE = 'hold release --case ID [--reason TEXT] (--signature FILE | --print-statement)';

/** The case id pattern the holds table enforces. */
export const CASE_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

const DATE_ONLY = /^\d{4}-\d{2}-\d{2}$/;
const ISO_INSTANT = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:?\d{2})$/;
const DAY_MS = 86_400_000;

/**
 * Parses a hold bound. A date without a time is a whole UTC day: as `from` it means that
 * day's first instant, as `to` its last millisecond, so `--from 2026-03-01 --to 2026-03-31`
 * covers all of March. A full instant needs a zone (`Z` or `+01:00`): a hold's edge must
 * not depend on the machine's time zone. Throws USAGE naming the option.
 */
export function parseHoldDate(value: string | Date, edge: 'from' | 'to'): Date {
  if (value instanceof Date) {
    if (Number.isNaN(value.getTime())) throw badDate(edge, String(value));
    return value;
  }
  const text = value.trim();
  if (DATE_ONLY.test(text)) {
    const start = new Date(`${text}T00:00:00.000Z`);
    if (Number.isNaN(start.getTime()) || start.toISOString().slice(0, 10) !== text) throw badDate(edge, value);
    return edge === 'from' ? start : new Date(start.getTime() + DAY_MS - 1);
  }
  if (ISO_INSTANT.test(text) && calendarFieldsValid(text)) {
    const at = new Date(text);
    if (!Number.isNaN(at.getTime())) return at;
  }
  throw badDate(edge, value);
}

function badDate(edge: 'from' | 'to', value: string): LetheError {
  return new LetheError(
    ErrorCode.USAGE,
    `--${edge} ${JSON.stringify(value)} is not a date: use YYYY-MM-DD (a whole UTC day) or an ISO-8601 instant with a zone, e.g. 2026-03-01T00:00:00Z`,
  );
}

function required(value: string | undefined, option: string, what: string): string {
  const v = value?.trim() ?? '';
  if (v === '') throw new LetheError(ErrorCode.USAGE, `a legal hold needs ${option} (${what})`);
  return v;
}

/** A chat-store id as given (surrounding spaces are part of it: trimming would name another key); blank is refused. */
function requiredId(value: string | undefined, option: string, what: string): string {
  required(value, option, what);
  return value as string;
}

function optional(value: string | undefined, option: string): string | null {
  if (value === undefined) return null;
  if (value.trim() === '') throw new LetheError(ErrorCode.USAGE, `${option} is empty: give an id or leave the option out`);
  return value;
}

/**
 * Places a legal hold selector for a case and appends `hold.place` (same transaction).
 *
 * Validates: the case id (letters, digits, `.`, `_`, `-`, at most 64, starting with a letter
 * or digit), tenant, reason and actor non-empty, dates parse with from <= to. The tenant
 * must be known to the VAULT, i.e. at least one backup has stored data of it (its tenant key
 * exists): a hold only ever protects backed-up data, lifecycle commands do not need the chat
 * store, and this catches a mistyped tenant id. A tenant whose key was destroyed (erased) is
 * refused too: nothing of it is left to hold. Refusals are USAGE errors that say what to fix.
 *
 * One case may hold several selectors (custodians, tenants): place it again with another
 * selector. The same case id in another tenant gets its own case key.
 */
export async function placeHold(vault: Vault, input: PlaceHoldInput): Promise<Hold> {
  const act = placeAct(input);
  const { caseId, tenant, reason } = act;
  const user = act.user;
  const conversation = act.conversation;
  const from = act.from === null ? null : new Date(act.from);
  const to = act.to === null ? null : new Date(act.to);
  const key = (await vault.getDimensionKeys([tenantKeyId(tenant)])).get(tenantKeyId(tenant));
  if (key === undefined) {
    throw new LetheError(
      ErrorCode.USAGE,
      `tenant ${JSON.stringify(tenant)} has no backed-up data in this vault: check the tenant id ` +
        '(as the chat store writes it), or take a backup first (`lethe backup`)',
      { details: { tenant } },
    );
  }
  if (key.destroyed) {
    throw new LetheError(
      ErrorCode.USAGE,
      `tenant ${JSON.stringify(tenant)} was erased (its tenant key is destroyed): there is no data left to hold`,
      { details: { tenant } },
    );
  }
  const by = await attest(vault, act.signed, input, PLACE_USAGE);
  const actor = by.name;
  const { holds } = await vault.placeHolds(
    [{ caseId, tenant, user, conversation, from, to, reason, placedBy: actor, proof: by.proof }],
    (rows) => ({
      actor,
      action: 'hold.place',
      subject: caseId,
      details: {
        caseId,
        tenant,
        user,
        conversation,
        from: from?.toISOString() ?? null,
        to: to?.toISOString() ?? null,
        reason,
        holdIds: rows.map((r) => r.id),
        signedBy: by.proof?.key ?? null,
      },
    }),
  );
  const hold = holds[0];
  if (hold === undefined) throw new LetheError(ErrorCode.INTERNAL, `placing hold ${caseId}: no row stored`);
  return hold;
}

/** The statement the placer of `input` signs (`hold place ... --print-statement`); USAGE as placeHold for bad input. */
export async function placeStatement(vault: Vault, input: Omit<PlaceHoldInput, 'actor' | 'signature'>): Promise<string> {
  return actStatement(vault, placeAct(input).signed);
}

/** The statement the releaser of case `caseId` signs (`hold release ... --print-statement`). */
export async function releaseStatement(vault: Vault, caseId: string, reason?: string): Promise<string> {
  return actStatement(vault, releaseAct(caseId, reason).signed);
}

function releaseAct(caseId: string, reason: string | undefined): { id: string; why: string | null; signed: Act } {
  const id = required(caseId, '--case ID', 'the case to release');
  const why = reason?.trim() ?? '';
  return { id, why: why === '' ? null : why, signed: { action: 'hold.release', case: id, reason: why === '' ? null : why } };
}

/** The validated placement and the act its placer signs (dates as ISO instants). */
export function placeAct(input: Omit<PlaceHoldInput, 'actor' | 'signature'>): {
  caseId: string;
  tenant: string;
  user: string | null;
  conversation: string | null;
  from: string | null;
  to: string | null;
  reason: string;
  signed: Act;
} {
  const caseId = required(input.caseId, '--case ID', 'the legal case it serves');
  if (!CASE_ID_PATTERN.test(caseId)) {
    throw new LetheError(
      ErrorCode.USAGE,
      `case id ${JSON.stringify(caseId)} is not allowed: use letters, digits, '.', '_' and '-' ` +
        '(at most 64 characters, starting with a letter or digit), e.g. CASE-2026-017',
    );
  }
  const tenant = requiredId(input.tenant, '--tenant T', 'the chat-store tenant id');
  const reason = required(input.reason, '--reason TEXT', 'why the data must be kept');
  const user = optional(input.user, '--user');
  const conversation = optional(input.conversation, '--conversation');
  const from = input.from === undefined ? null : parseHoldDate(input.from, 'from');
  const to = input.to === undefined ? null : parseHoldDate(input.to, 'to');
  if (from !== null && to !== null && from.getTime() > to.getTime()) {
    throw new LetheError(
      ErrorCode.USAGE,
      `--from ${from.toISOString()} is after --to ${to.toISOString()}: swap them or fix the dates`,
    );
  }
  const placed = { caseId, tenant, user, conversation, from: from?.toISOString() ?? null, to: to?.toISOString() ?? null, reason };
  return {
    ...placed,
    signed: { action: 'hold.place', case: caseId, tenant, user, conversation, from: placed.from, to: placed.to, reason },
  };
}

/**
 * Releases every active selector of case `caseId` (in every tenant) and appends
 * `hold.release` (same transaction); returns the released selectors. The case keys become
 * due for destruction at the next `lethe lifecycle apply`. Throws USAGE naming the case
 * when no hold has that case id, REFUSED when all of its selectors are already released.
 */
export async function releaseHold(
  vault: Vault,
  caseId: string,
  by: Attestation,
  reason?: string,
): Promise<Hold[]> {
  const { id, why, signed } = releaseAct(caseId, reason);
  const known = (await vault.listHolds()).filter((h) => h.caseId === id);
  if (known.length === 0) {
    throw new LetheError(
      ErrorCode.USAGE,
      `no legal hold has case id ${JSON.stringify(id)}: see \`lethe hold list\` for the cases`,
      { details: { caseId: id } },
    );
  }
  const attested = await attest(vault, signed, by, RELEASE_USAGE);
  const who = attested.name;
  const { holds } = await vault.releaseCase(id, who, (rows) => ({
    actor: who,
    action: 'hold.release',
    subject: id,
    details: {
      caseId: id,
      tenants: sortTenants(new Set(rows.map((r) => r.tenant))),
      holdIds: rows.map((r) => r.id),
      reason: why,
      signedBy: attested.proof?.key ?? null,
    },
  }), attested.proof);
  if (holds.length > 0) return holds;
  const last = known.reduce((a, b) => ((a.releasedAt?.getTime() ?? 0) >= (b.releasedAt?.getTime() ?? 0) ? a : b));
  throw new LetheError(
    ErrorCode.REFUSED,
    `case ${id} is already released (by ${last.releasedBy ?? '?'} at ${last.releasedAt?.toISOString() ?? '?'}); nothing to do`,
    { details: { caseId: id } },
  );
}

/** Every hold selector, released ones included, oldest first; `activeOnly` drops released ones. */
export async function listHolds(vault: Vault, options: { activeOnly?: boolean } = {}): Promise<Hold[]> {
  const all = await vault.listHolds();
  return options.activeOnly === true ? all.filter((h) => h.releasedAt === null) : all;
}

/** A hold as JSON: what `hold list --json` prints and `export` records for each selector. */
export function holdToJson(h: Hold): Record<string, unknown> {
  return {
    id: h.id,
    caseId: h.caseId,
    tenant: h.tenant,
    user: h.user,
    conversation: h.conversation,
    from: h.from?.toISOString() ?? null,
    to: h.to?.toISOString() ?? null,
    reason: h.reason,
    placedBy: h.placedBy,
    placedAt: h.placedAt.toISOString(),
    releasedBy: h.releasedBy,
    releasedAt: h.releasedAt?.toISOString() ?? null,
    active: h.releasedAt === null,
  };
}
