import { verifySignature } from '../crypto/index.ts';
import type { Signer } from '../keys/index.ts';
import { ErrorCode, LetheError } from '../errors/index.ts';
import { canonicalJson, type StoredEraseRequest, type Vault } from '../vault/index.ts';
import type { DestroyedKey } from './destroy.ts';
import type { EraseScope } from './types.ts';

export const CERTIFICATE_FORMAT = 'lethe.destruction-certificate.v1';

const DAY_MS = 86_400_000;

/**
 * A signed record that a deletion request was carried out. Plain JSON: an auditor can check
 * it with any Ed25519 library given the lifecycle signing key's public half (`lethe init`
 * writes it beside the key file; the vault lists it): the signature covers `lethe.destruction-certificate.v1\n` followed by the
 * canonical JSON (keys sorted, no whitespace) of the certificate without `signature`.
 */
export interface DestructionCertificate {
  readonly format: typeof CERTIFICATE_FORMAT;
  readonly request: {
    readonly id: string;
    readonly tenant: string;
    readonly scope: EraseScope;
    readonly subject: string | null;
    readonly reason: string;
    readonly requestedBy: string;
    readonly requestedAt: string;
    readonly approvedBy: string;
    readonly approvedAt: string;
  };
  /** The dimension keys destroyed for the request (earlier destructions keep their time). */
  readonly keysDestroyed: readonly { readonly keyId: string; readonly destroyedAt: string; readonly auditSeq: number }[];
  /** Keys the request named that never existed (e.g. a user never backed up): nothing to destroy. */
  readonly keysAbsent: readonly { readonly keyId: string; readonly note: string }[];
  /** Cell keys wrapped to a destroyed key: the cells they opened are unreadable. */
  readonly cellsAffected: { readonly count: number; readonly cellKeyIds: readonly string[] };
  /** Complete and expired snapshots holding cells under those cell keys. */
  readonly snapshotsAffected: {
    readonly count: number;
    /** Cells (one per table and tuple) across those snapshots. */
    readonly cells: number;
    readonly snapshots: readonly { readonly id: string; readonly status: string; readonly cells: number }[];
  };
  readonly executedAt: string;
  /** The last `key.destroy` entry of this request (or the chain's head when no key existed). */
  readonly auditChain: { readonly seq: number; readonly hash: string };
  readonly graceWindow: { readonly days: number; readonly irreversibleAt: string; readonly explanation: string };
  readonly signature: { readonly algorithm: 'ed25519'; readonly keyId: string; readonly value: string };
}

export type UnsignedCertificate = Omit<DestructionCertificate, 'signature'>;

/** The exact bytes a certificate's signature covers. */
export function certificateMessage(body: UnsignedCertificate): Uint8Array {
  const { format } = body;
  return new TextEncoder().encode(`${format}\n${canonicalJson(body)}`);
}

/** The sentence every certificate carries about its grace window. */
export function graceWindowExplanation(days: number, irreversibleAt: Date): string {
  return (
    `The keys are gone from the live vault now. Encrypted backups of the vault made before ` +
    `this execution may still hold them for up to ${days} days (their retention); after ` +
    `${irreversibleAt.toISOString()} every such backup has expired and the erased data cannot ` +
    'be recovered by anyone, from any backup.'
  );
}

export interface CertificateFacts {
  readonly request: StoredEraseRequest;
  readonly requestedKeyIds: readonly string[];
  readonly destroyed: readonly DestroyedKey[];
  readonly executedAt: Date;
  readonly graceWindowDays: number;
}

/**
 * Builds and signs the certificate of an executed request: gathers the cells and snapshots
 * affected from the vault (cell keys wrapped to a destroyed key, via the GIN index on
 * dimension_ids), takes the chain position of the last `key.destroy` entry, and signs with
 * the lifecycle signing key. Throws INTERNAL when the request was never approved.
 */
export async function buildCertificate(vault: Vault, signer: Signer, facts: CertificateFacts): Promise<DestructionCertificate> {
  const { request } = facts;
  if (request.approvedBy === null || request.approvedAt === null) {
    throw new LetheError(ErrorCode.INTERNAL, `certificate for ${request.id}: the request was never approved`);
  }
  const destroyedIds = facts.destroyed.map((d) => d.keyId);
  const cellKeys = await vault.cellKeysNeeding(destroyedIds);
  const cellKeyIds = cellKeys.map((k) => k.id);
  const snapshots = await vault.snapshotsUsingCellKeys(cellKeyIds);
  const last = facts.destroyed.reduce<DestroyedKey | undefined>(
    (a, b) => (a === undefined || b.auditSeq > a.auditSeq ? b : a),
    undefined,
  );
  const position = last === undefined ? await vault.auditHead() : { seq: last.auditSeq, hash: last.auditHash };
  if (position === null) throw new LetheError(ErrorCode.INTERNAL, `certificate for ${request.id}: the audit log is empty`);
  const irreversibleAt = new Date(facts.executedAt.getTime() + facts.graceWindowDays * DAY_MS);
  const body: UnsignedCertificate = {
    format: CERTIFICATE_FORMAT,
    request: {
      id: request.id,
      tenant: request.tenant,
      scope: request.scope,
      subject: request.subject,
      reason: request.reason,
      requestedBy: request.requestedBy,
      requestedAt: request.requestedAt.toISOString(),
      approvedBy: request.approvedBy,
      approvedAt: request.approvedAt.toISOString(),
    },
    keysDestroyed: facts.destroyed.map((d) => ({
      keyId: d.keyId,
      destroyedAt: d.destroyedAt.toISOString(),
      auditSeq: d.auditSeq,
    })),
    keysAbsent: facts.requestedKeyIds
      .filter((id) => !destroyedIds.includes(id))
      .map((keyId) => ({ keyId, note: 'no key existed: nothing of this subject was ever backed up' })),
    cellsAffected: { count: cellKeyIds.length, cellKeyIds },
    snapshotsAffected: {
      count: snapshots.length,
      cells: snapshots.reduce((n, s) => n + s.cells, 0),
      snapshots: snapshots.map((s) => ({ id: s.snapshotId, status: s.status, cells: s.cells })),
    },
    executedAt: facts.executedAt.toISOString(),
    auditChain: { seq: position.seq, hash: position.hash },
    graceWindow: {
      days: facts.graceWindowDays,
      irreversibleAt: irreversibleAt.toISOString(),
      explanation: graceWindowExplanation(facts.graceWindowDays, irreversibleAt),
    },
  };
  return { ...body, signature: { algorithm: 'ed25519', keyId: signer.id, value: signer.sign(certificateMessage(body)) } };
}

/**
 * Checks a certificate's format and signature against `publicKeys` (signing key id →
 * base64 Ed25519 public key, e.g. Vault.getSigningPublicKeys(['lifecycle', 'legacy'])). Never throws: returns
 * `{ ok: false, problem }` for anything wrong.
 */
export function verifyCertificate(
  cert: unknown,
  publicKeys: ReadonlyMap<string, string>,
): { ok: true } | { ok: false; problem: string } {
  if (cert === null || typeof cert !== 'object') return { ok: false, problem: 'not a JSON object' };
  const { signature, ...body } = cert as Record<string, unknown>;
  if (body['format'] !== CERTIFICATE_FORMAT) {
    return { ok: false, problem: `format is ${JSON.stringify(body['format'])}, expected ${CERTIFICATE_FORMAT}` };
  }
  if (signature === null || typeof signature !== 'object') return { ok: false, problem: 'no signature' };
  const { algorithm, keyId, value } = signature as Record<string, unknown>;
  if (algorithm !== 'ed25519' || typeof keyId !== 'string' || typeof value !== 'string') {
    return { ok: false, problem: 'malformed signature (expected ed25519 with keyId and value)' };
  }
  const publicKey = publicKeys.get(keyId);
  if (publicKey === undefined) return { ok: false, problem: `unknown signing key ${keyId}` };
  let message: Uint8Array;
  try {
    message = certificateMessage(body as unknown as UnsignedCertificate);
  } catch {
    return { ok: false, problem: 'the certificate body is not plain JSON' };
  }
  return verifySignature(publicKey, message, value) ? { ok: true } : { ok: false, problem: 'bad signature' };
}
