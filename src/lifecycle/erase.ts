import { conversationKeyId, tenantKeyId, userKeyId } from '../cells/ids.ts';
import { ErrorCode, LetheError, isLetheError } from '../errors/index.ts';
import type { ObjectStore } from '../storage/index.ts';
import type { StoredEraseRequest, Vault } from '../vault/index.ts';
import type { Signer } from '../keys/index.ts';
import type { ObjectLock } from '../storage/index.ts';
import { buildCertificate, verifyCertificate, type DestructionCertificate } from './certificate.ts';
import { destroyKeys, type ForeignTombstone } from './destroy.ts';
import type { SubjectColumns } from './certificate.ts';
import { BUILTIN_MAPPING, parseMapping, subjectColumns } from '../mapping/index.ts';
import { holdsBlockingDestruction } from './hold-match.ts';
import { describeEraseTarget } from './erase-subject.ts';
import { failpoint } from '../util/failpoint.ts';
import type { EraseScope, Hold } from './types.ts';
import { actStatement, attest, type Act, type Attestation } from './approvals.ts';

/** What executing a request needs. `now` is injectable so tests can move the clock. */
export interface EraseContext {
  readonly vault: Vault;
  readonly store: ObjectStore;
  readonly graceWindowDays: number;
  readonly now: () => Date;
  /** The lifecycle signing key: tombstones and the certificate are signed with it. */
  readonly signer: Signer;
  /** Lock for the tombstones and the certificate, when the store locks objects. */
  readonly lock?: ObjectLock;
  /** Receives objects found where a tombstone belongs that lethe did not write (reported, never trusted). */
  readonly onForeignTombstone?: (found: ForeignTombstone) => void;
  /**
   * The mapping's subject columns per table (mapping `author`), for the certificate of a user
   * erasure to state which columns it covers; absent when the caller has no mapping.
   */
  readonly subjectColumns?: readonly SubjectColumns[] | undefined;
}

export interface EraseRequestInput {
  /** The tenant; null for a person across every tenant (scope user only: `--all-tenants`). */
  readonly tenant: string | null;
  readonly scope: EraseScope;
  /** The user or conversation id; must be absent for a whole tenant. */
  readonly subject?: string | null | undefined;
  readonly reason: string;
  /** The requester's SSHSIG over the request's statement (see approvals.ts), or… */
  readonly signature?: string | undefined;
  /** …a typed name, accepted only with `allowUnsigned` (config approvals.allowUnsigned). */
  readonly actor?: string | undefined;
  readonly allowUnsigned?: boolean | undefined;
}

const REQUEST_USAGE =
  'erase request (--tenant T (--user U | --conversation C | --all) | --subject U --all-tenants) --reason TEXT (--signature FILE | --print-statement)';
const APPROVE_USAGE = 'erase approve ID (--signature FILE | --print-statement)';

/** The act a requester signs: what is to be erased and why. */
export function requestAct(input: { tenant: string | null; scope: EraseScope; subject?: string | null | undefined; reason: string }): Act {
  const { tenant, reason, subject } = checkedRequest(input);
  // `tenants: "all"` spells the scope out in the signed text, so no signature over a one-tenant
  // statement (tenant: "7") can stand for an all-tenant one (tenant: null), and the signer reads it.
  if (tenant === null) return { action: 'erase.request', tenant, tenants: 'all', scope: input.scope, subject, reason };
  return { action: 'erase.request', tenant, scope: input.scope, subject, reason };
}

/** The act an approver signs: this request, as recorded, and who requested it. */
export function approvalAct(request: StoredEraseRequest): Act {
  return {
    action: 'erase.approve',
    request: request.id,
    tenant: request.tenant,
    ...(request.tenant === null ? { tenants: 'all' as const } : {}),
    scope: request.scope,
    subject: request.subject,
    reason: request.reason,
    requestedBy: request.requestedBy,
    requestedKey: request.requestProof?.key ?? null,
  };
}

/**
 * The statement the approver of request `id` signs (`erase approve ID --print-statement`).
 * USAGE for an unknown id; REFUSED when it is no longer pending.
 */
export async function approvalStatement(vault: Vault, id: string): Promise<string> {
  const request = await vault.getEraseRequest(id);
  if (request === null) {
    throw new LetheError(ErrorCode.USAGE, `no deletion request has id ${JSON.stringify(id)}: see \`lethe erase list\` for the ids`);
  }
  if (request.status !== 'pending') {
    throw new LetheError(ErrorCode.REFUSED, `deletion request ${id} is already ${request.status}: there is nothing to approve`);
  }
  return actStatement(vault, approvalAct(request));
}

/** The bucket key of a request's certificate. */
export function certificateKey(requestId: string): string {
  return `certificates/${requestId}.json`;
}

/**
 * The dimension key whose destruction erases the request's subject: `user:T/U` for a user
 * (every cell they authored), `conversation:T/C` for a conversation (every cell wrapped to
 * it: its messages, edits, attachments and memberships, whoever wrote them), `tenant:T` for
 * a tenant (everything of the tenant). A person across every tenant has one such key per
 * tenant: see {@link personKeys}.
 */
export function erasureKeyId(request: { tenant: string; scope: EraseScope; subject: string | null }): string {
  switch (request.scope) {
    case 'tenant':
      return tenantKeyId(request.tenant);
    case 'user':
      return userKeyId(request.tenant, subjectOf(request));
    case 'conversation':
      return conversationKeyId(request.tenant, subjectOf(request));
  }
}

function subjectOf(request: { scope: EraseScope; subject: string | null }): string {
  if (request.subject === null) throw new LetheError(ErrorCode.INTERNAL, `a ${request.scope} erasure has no subject`);
  return request.subject;
}

function nonEmpty(value: string | undefined, option: string, what: string): string {
  const v = value?.trim() ?? '';
  if (v === '') throw new LetheError(ErrorCode.USAGE, `a deletion request needs ${option} (${what})`);
  return v;
}

/**
 * A chat-store id as given: blank is refused, but surrounding spaces are kept, since they are
 * part of the id; trimming them would name another key and erase nothing.
 */
function idGiven(value: string | undefined, option: string, what: string): string {
  nonEmpty(value, option, what);
  return value as string;
}

/**
 * The subject columns of a config's chat-store mapping (`chatStore.mapping`: `builtin` or a
 * mapping), for the certificates of user erasures that lifecycle apply finishes. Undefined
 * when the mapping does not parse: the certificate then leaves them out (the CLI's approve
 * warns about it; apply has no chat store to check against).
 */
export function configSubjectColumns(rawMapping: unknown): SubjectColumns[] | undefined {
  try {
    return subjectColumns(rawMapping === 'builtin' ? BUILTIN_MAPPING : parseMapping(rawMapping, 'config field `chatStore.mapping`'));
  } catch (err) {
    if (isLetheError(err)) return undefined;
    throw err;
  }
}

/** Where a person has a key: one `user:T/U` per tenant, with what destroying it would reach. */
export interface PersonTenantReach {
  readonly tenant: string;
  readonly keyId: string;
  /** Already destroyed (an earlier erasure in that tenant): nothing is left to reach there. */
  readonly destroyed: boolean;
  /** Cell keys wrapped to it (one per tuple: period, conversation). */
  readonly cellKeys: number;
  /** Cells (one per table and tuple) across the snapshots below. */
  readonly cells: number;
  /** Complete and expired snapshots holding such cells. */
  readonly snapshots: number;
}

/**
 * The user keys of `user` in every tenant of the vault (`user:T/U`, matched exactly on the
 * percent-encoded id), by tenant. Empty when no backup ever stored data authored by them.
 */
export async function personKeys(vault: Vault, user: string): Promise<{ tenant: string; keyId: string; destroyed: boolean }[]> {
  const keys = await vault.userKeysOf(user);
  return keys.flatMap((k) => (k.tenant === null ? [] : [{ tenant: k.tenant, keyId: k.id, destroyed: k.destroyed }]));
}

/**
 * Where `user` has data across every tenant: one entry per `user:T/U` key with the cells and
 * snapshots destroying it reaches (what `erase request --subject U --all-tenants` shows).
 */
export async function personReach(vault: Vault, user: string): Promise<PersonTenantReach[]> {
  const found: PersonTenantReach[] = [];
  for (const key of await personKeys(vault, user)) {
    const cellKeyIds = (await vault.cellKeysNeeding([key.keyId])).map((k) => k.id);
    const snapshots = await vault.snapshotsUsingCellKeys(cellKeyIds);
    found.push({
      ...key,
      cellKeys: cellKeyIds.length,
      cells: snapshots.reduce((n, s) => n + s.cells, 0),
      snapshots: snapshots.length,
    });
  }
  return found;
}

/** The USAGE error for an all-tenant request that finds no `user:T/U` key of `user` anywhere. */
export function noPersonFound(user: string): LetheError {
  return new LetheError(
    ErrorCode.USAGE,
    `no tenant of this vault has data of user ${JSON.stringify(user)} (no user:T/U key): check the id exactly as the ` +
      'chat store writes it (ids are matched exactly, not as a pattern); for a person lethe never backed up, request ' +
      'per tenant with --tenant T --user U, whose certificate then says that no key existed',
    { details: { subject: user } },
  );
}

/**
 * Records a pending deletion request and appends `erase.request` (same transaction). Nothing
 * is destroyed until a second person approves it. For one tenant, whether the subject was
 * ever backed up is not checked: a request for data lethe never held is still recorded, and
 * its certificate says that no key existed. For a person across every tenant (`tenant:
 * null`), at least one `user:T/U` key must exist (USAGE otherwise: most likely a mistyped
 * id); the audit entry lists the keys found. USAGE for a missing tenant, reason or actor, or
 * a subject that does not fit the scope.
 */
export async function requestErasure(vault: Vault, input: EraseRequestInput): Promise<StoredEraseRequest> {
  const { tenant, reason, subject } = checkedRequest(input);
  const found = tenant === null ? await personKeys(vault, subject ?? '') : null;
  if (found !== null && found.length === 0) throw noPersonFound(subject ?? '');
  const by = await attest(vault, requestAct(input), input, REQUEST_USAGE);
  const actor = by.name;
  const { request } = await vault.createEraseRequest(
    { tenant, scope: input.scope, subject, reason, requestedBy: actor, requestProof: by.proof },
    (r) => ({
      actor,
      action: 'erase.request',
      subject: r.id,
      details: {
        requestId: r.id,
        tenant,
        scope: input.scope,
        subject,
        reason,
        keyId: r.tenant === null ? null : erasureKeyId({ ...r, tenant: r.tenant }),
        ...(found === null ? {} : { allTenants: true, keysFound: found.map((k) => k.keyId) }),
        signedBy: by.proof?.key ?? null,
      },
    }),
  );
  return request;
}

function checkedRequest(input: { tenant: string | null; scope: EraseScope; subject?: string | null | undefined; reason: string }): {
  tenant: string | null;
  reason: string;
  subject: string | null;
} {
  if (input.tenant === null && input.scope !== 'user') {
    throw new LetheError(ErrorCode.USAGE, `only a person can be erased across every tenant: --all-tenants takes --subject U, not a ${input.scope}`);
  }
  const tenant = input.tenant === null ? null : idGiven(input.tenant, '--tenant T', 'the chat-store tenant id');
  const reason = nonEmpty(input.reason, '--reason TEXT', 'why, e.g. "GDPR Art. 17 request #123"');
  const rawSubject = input.subject ?? null;
  let subject: string | null = null;
  if (input.scope === 'tenant') {
    if (rawSubject !== null) throw new LetheError(ErrorCode.USAGE, 'a whole-tenant erasure (--all) takes no --user or --conversation');
  } else {
    subject = idGiven(rawSubject ?? undefined, tenant === null ? '--subject U' : `--${input.scope} ID`, `the ${input.scope} to erase`);
  }
  return { tenant, reason, subject };
}

/**
 * The active holds that forbid erasing `request` now: those covering a cell whose only
 * readable wrapping needs the key the request destroys. Empty when it may go ahead. For a
 * person across every tenant, see {@link personErasurePlan}.
 */
export async function holdsBlockingRequest(
  vault: Vault,
  request: { tenant: string; scope: EraseScope; subject: string | null },
): Promise<Hold[]> {
  const holds = (await vault.listHolds()).filter((h) => h.tenant === request.tenant && h.releasedAt === null);
  if (holds.length === 0) return [];
  const keyId = erasureKeyId(request);
  const cellKeys = await vault.cellKeysNeeding([keyId]);
  const held = await vault.getHeldCellKeys(cellKeys.map((k) => k.id));
  const wrappings = new Map<string, string[][]>();
  for (const [id, list] of held) wrappings.set(id, list.map((w) => w.dimensionIds));
  return holdsBlockingDestruction(keyId, holds, cellKeys, wrappings);
}

/** A person's key in one tenant that a legal hold keeps from an all-tenant erasure. */
export interface KeptKey {
  readonly tenant: string;
  readonly keyId: string;
  readonly holds: readonly Hold[];
}

/**
 * What erasing `user` across every tenant does now: the `user:T/U` keys found (re-resolved,
 * so a tenant the person joined after the request is included), split per tenant exactly as
 * a one-tenant request is judged: a key whose destruction an active hold forbids
 * ({@link holdsBlockingRequest}) is kept, with its holds; every other key is destroyed.
 */
export async function personErasurePlan(vault: Vault, user: string): Promise<{ destroy: string[]; kept: KeptKey[] }> {
  const destroy: string[] = [];
  const kept: KeptKey[] = [];
  for (const key of await personKeys(vault, user)) {
    const blocking = key.destroyed ? [] : await holdsBlockingRequest(vault, { tenant: key.tenant, scope: 'user', subject: user });
    if (blocking.length > 0) kept.push({ tenant: key.tenant, keyId: key.keyId, holds: blocking });
    else destroy.push(key.keyId);
  }
  return { destroy, kept };
}

function refusedByHolds(request: StoredEraseRequest, holds: readonly Hold[]): LetheError {
  const cases = [...new Set(holds.map((h) => h.caseId))].sort();
  const what = describeEraseTarget(request);
  return new LetheError(
    ErrorCode.REFUSED,
    `deletion request ${request.id} is refused: ${what} is under legal hold (case ${cases.join(', ')}). ` +
      'Holds win over erasure; approve the request again once legal has released the case (`lethe hold release`).',
    { details: { requestId: request.id, rule: 'legal-hold', cases } },
  );
}

/**
 * The holds that refuse `request` as a whole now: for one tenant, every hold blocking its
 * key; for a person across every tenant, the holds of every key found when every one of them
 * is held (with at least one unheld key the request goes ahead and keeps the held ones).
 */
async function holdsRefusing(vault: Vault, request: StoredEraseRequest): Promise<Hold[]> {
  if (request.tenant !== null) return holdsBlockingRequest(vault, { ...request, tenant: request.tenant });
  const plan = await personErasurePlan(vault, subjectOf(request));
  return plan.destroy.length === 0 ? plan.kept.flatMap((k) => k.holds) : [];
}

/**
 * Approves request `id` as `actor` and executes it: destroys the subject's key, writes the
 * signed certificate to `certificates/<id>.json` and into the vault, and returns it. Audit:
 * `erase.approve`, `key.destroy`, `erase.execute`.
 *
 * Refuses with REFUSED (nothing changes): the requester as approver (two-person rule), a
 * request an active legal hold covers (the message names the case(s)), an already executed
 * request. USAGE for an unknown id. A request a crash left approved is finished (the same
 * as {@link executeApprovedRequest}), whoever asks. A person across every tenant is refused
 * only when a hold covers them in every tenant found; otherwise the held tenants' keys are
 * kept and the certificate says so.
 */
export async function approveErasure(ctx: EraseContext, id: string, by: Attestation): Promise<DestructionCertificate> {
  const current = await ctx.vault.getEraseRequest(id);
  if (current === null) {
    throw new LetheError(ErrorCode.USAGE, `no deletion request has id ${JSON.stringify(id)}: see \`lethe erase list\` for the ids`, {
      details: { requestId: id },
    });
  }
  if (current.status === 'executed') {
    throw new LetheError(
      ErrorCode.REFUSED,
      `deletion request ${id} was already executed at ${current.executedAt?.toISOString() ?? '?'} ` +
        `(approved by ${current.approvedBy ?? '?'}): see its certificate with \`lethe erase show ${id}\``,
      { details: { requestId: id, status: current.status } },
    );
  }
  if (current.status === 'pending') {
    const approver = await attest(ctx.vault, approvalAct(current), by, APPROVE_USAGE);
    const who = approver.name;
    await ctx.vault.approveEraseRequest(id, who, {
      proof: approver.proof,
      check: async (request) => {
        const blocking = await holdsRefusing(ctx.vault, request);
        if (blocking.length > 0) throw refusedByHolds(request, blocking);
      },
      audit: (request) => ({
        actor: who,
        action: 'erase.approve',
        subject: id,
        details: {
          requestId: id,
          requestedBy: request.requestedBy,
          tenant: request.tenant,
          ...(request.tenant === null ? { allTenants: true } : {}),
          scope: request.scope,
          subject: request.subject,
          signedBy: approver.proof?.key ?? null,
        },
      }),
    });
    // A crash here leaves the request approved: the next approve or lifecycle apply finishes it.
    failpoint('erase.after-approve');
  }
  return executeApprovedRequest(ctx, id);
}

/**
 * Finishes an approved request: destroys its key (idempotent), looks at what the vault
 * database keeps of its WAL (Vault.inspectDurability), builds and signs the certificate with
 * those findings (or reuses the one already in the bucket, so a crash between storing it and
 * recording it yields one certificate), stores it, and marks the request executed with an
 * `erase.execute` entry. An executed request returns its stored certificate unchanged.
 * Lifecycle apply calls this for requests a crash left approved.
 *
 * A person across every tenant: the tenants are found again now ({@link personErasurePlan}),
 * every unheld `user:T/U` key is destroyed in one run under the one approval, held ones are
 * kept, and the one certificate lists each tenant with its key and outcome.
 *
 * Throws USAGE for an unknown id, REFUSED for a pending request (it needs approval) and for
 * one a legal hold placed after the approval now covers (holds win; it stays approved and
 * is finished after the release).
 */
export async function executeApprovedRequest(ctx: EraseContext, requestId: string): Promise<DestructionCertificate> {
  const request = await ctx.vault.getEraseRequest(requestId);
  if (request === null) {
    throw new LetheError(ErrorCode.USAGE, `no deletion request has id ${JSON.stringify(requestId)}: see \`lethe erase list\``);
  }
  if (request.status === 'executed') return request.certificate as DestructionCertificate;
  if (request.status === 'pending') {
    throw new LetheError(ErrorCode.REFUSED, `deletion request ${requestId} is not approved yet: have a second enrolled person sign it: \`lethe erase approve ${requestId} --print-statement\`, then \`--signature FILE.sig\``);
  }
  const blocking = await holdsRefusing(ctx.vault, request);
  if (blocking.length > 0) throw refusedByHolds(request, blocking);

  const plan =
    request.tenant === null
      ? await personErasurePlan(ctx.vault, subjectOf(request))
      : { destroy: [erasureKeyId({ ...request, tenant: request.tenant })], kept: [] };
  const approver = request.approvedBy ?? request.requestedBy;
  const { destroyed, foreignTombstones } = await destroyKeys(ctx.vault, ctx.store, {
    keyIds: plan.destroy,
    actor: approver,
    reason: `deletion request ${request.id} (${describeEraseTarget(request)}): ${request.reason}`,
    cause: { kind: 'erasure', request: request.id, scope: request.scope },
    signer: ctx.signer,
    ...(ctx.lock === undefined ? {} : { tombstoneLock: ctx.lock }),
  });
  for (const found of foreignTombstones) ctx.onForeignTombstone?.(found);

  const key = certificateKey(request.id);
  let certificate = await storedCertificate(ctx, key, request.id);
  if (certificate === null) {
    // What the vault database keeps of its WAL is part of what the certificate can promise.
    const vaultDurability = await ctx.vault.inspectDurability({ graceWindowDays: ctx.graceWindowDays });
    certificate = await buildCertificate(ctx.vault, ctx.signer, {
      request,
      requestedKeyIds: plan.destroy,
      destroyed,
      executedAt: ctx.now(),
      graceWindowDays: ctx.graceWindowDays,
      vaultDurability,
      ...(request.tenant === null ? { kept: plan.kept } : {}),
      ...(request.scope === 'user' && ctx.subjectColumns !== undefined ? { subjectColumns: ctx.subjectColumns } : {}),
    });
    await ctx.store.put(key, new TextEncoder().encode(`${JSON.stringify(certificate, null, 2)}\n`), ctx.lock === undefined ? {} : { lock: ctx.lock });
  }
  const done = certificate;
  const stored = await ctx.vault.markEraseRequestExecuted(
    request.id,
    { executedAt: new Date(done.executedAt), certificate: done },
    () => ({
      actor: approver,
      action: 'erase.execute',
      subject: request.id,
      details: {
        requestId: request.id,
        keysDestroyed: done.keysDestroyed.map((k) => k.keyId),
        keysAbsent: done.keysAbsent.map((k) => k.keyId),
        ...(done.allTenants === undefined
          ? {}
          : { keysKept: done.allTenants.tenants.filter((t) => t.outcome === 'kept').map((t) => t.keyId) }),
        cellsAffected: done.cellsAffected.count,
        snapshotsAffected: done.snapshotsAffected.count,
        certificate: key,
        irreversibleAt: done.graceWindow.irreversibleAt,
      },
    }),
  );
  return stored.certificate as DestructionCertificate;
}

/** The certificate a previous (interrupted) run stored, when it is valid and for this request. */
async function storedCertificate(ctx: EraseContext, key: string, requestId: string): Promise<DestructionCertificate | null> {
  let bytes: Uint8Array;
  try {
    bytes = await ctx.store.getBytes(key);
  } catch (err) {
    if (isLetheError(err, ErrorCode.NOT_FOUND)) return null;
    throw err;
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    parsed = null;
  }
  const check = verifyCertificate(parsed, await ctx.vault.getSigningPublicKeys(['lifecycle', 'legacy']));
  if (!check.ok || (parsed as DestructionCertificate).request.id !== requestId) {
    throw new LetheError(
      ErrorCode.INTEGRITY,
      `${key} exists but is not a valid certificate for ${requestId} (${check.ok ? 'another request' : check.problem}): ` +
        'move it aside and run the approval again',
    );
  }
  return parsed as DestructionCertificate;
}

/** Every request, oldest first. */
export async function listErasures(vault: Vault): Promise<StoredEraseRequest[]> {
  return vault.listEraseRequests();
}
