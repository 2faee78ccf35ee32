import { verifySignature } from '../crypto/index.ts';
import type { Signer } from '../keys/index.ts';
import { ErrorCode, LetheError } from '../errors/index.ts';
import { canonicalJson, type DurabilityFinding, type SignedAct, type StoredEraseRequest, type Vault } from '../vault/index.ts';
import type { DestroyedKey } from './destroy.ts';
import type { EraseScope } from './types.ts';
import type { KeptKey } from './erase.ts';
import { shellWord } from './erase-subject.ts';
import { allowedSignersLine, APPROVAL_NAMESPACE } from './approvals.ts';

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
    /** Null for a person across every tenant: see `allTenants`. */
    readonly tenant: string | null;
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
  /**
   * Present for a request that erases a person across every tenant: each tenant where lethe
   * found their `user:T/U` key at execution, the key, and whether it was destroyed or kept
   * (legal hold), all under this one request and approval.
   */
  readonly allTenants?: CertificateAllTenants;
  /**
   * For a user erasure, when the mapping was at hand: the columns of each table the mapping
   * names as the row's subject (its `author`), whose rows the destroyed keys make unreadable.
   */
  readonly subjectColumns?: CertificateSubjectColumns;
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
  /**
   * `irreversibleAt` is when lethe's own vault backups made before the execution have expired;
   * the erasure is final then only if the vault database's own copies are gone too (see
   * {@link CertificateGuarantees}).
   */
  readonly graceWindow: { readonly days: number; readonly irreversibleAt: string; readonly explanation: string };
  /**
   * Exactly what lethe guarantees, and what it cannot: absent only from certificates issued
   * before lethe recorded it (same format, v1).
   */
  readonly guarantees?: CertificateGuarantees;
  /**
   * The requester's and approver's own signatures (absent when both were typed names, and in
   * certificates issued before signed approvals). Each verifies with stock OpenSSH and no
   * lethe code: `ssh-keygen -Y verify -f allowed_signers -I <person> -n lethe-approval -s sig < statement`
   * with `allowedSigners` as the allowed_signers file (docs/lifecycle.md).
   */
  readonly approvals?: CertificateApprovals;
  readonly signature: { readonly algorithm: 'ed25519'; readonly keyId: string; readonly value: string };
}

/**
 * What the certificate promises, part by part. A destroyed key's wrapped identity went through
 * the vault database's write-ahead log, so copies of that log kept outside lethe hold it (still
 * wrapped to the master key) until they expire; lethe records what it could see of them.
 */
export interface CertificateGuarantees {
  /** True from `since`: the wrapped identities are gone from the live vault tables. */
  readonly liveVault: { readonly since: string; readonly statement: string };
  /** lethe's encrypted vault backups (`vault/<time>.age`) made before the execution: expired by `until`. */
  readonly vaultBackups: { readonly until: string; readonly statement: string };
  /** Copies lethe does not control that may hold the wrapped keys until their own retention ends. */
  readonly outsideLethe: readonly string[];
  /** What lethe saw on the vault database's server at execution (Vault.inspectDurability). */
  readonly vaultDurabilityFindings: readonly DurabilityFinding[];
  /**
   * When the shred becomes final whatever PostgreSQL keeps: the master-key epochs the
   * destroyed keys were wrapped to, and what destroys them (absent from certificates issued
   * before master-key epochs).
   */
  readonly masterEpoch?: { readonly epochs: readonly number[]; readonly statement: string };
}

/** One person erased across every tenant under one request, one approval and this one certificate. */
export interface CertificateAllTenants {
  readonly subject: string;
  /** In words: one request, one approval, which tenants, what was destroyed and what was kept and why. */
  readonly statement: string;
  readonly tenants: readonly {
    readonly tenant: string;
    readonly keyId: string;
    readonly outcome: 'destroyed' | 'kept';
    /** The legal-hold cases that kept the key (empty when destroyed). */
    readonly cases: readonly string[];
    readonly note: string;
  }[];
}

/** A table's subject columns as the mapping names them (`author`: one column or a list). */
export interface SubjectColumns {
  readonly table: string;
  readonly columns: readonly string[];
}

export interface CertificateSubjectColumns {
  readonly statement: string;
  readonly tables: readonly SubjectColumns[];
}

/** The two signed acts behind an erasure. null for an act done under a typed name. */
export interface CertificateApprovals {
  readonly namespace: 'lethe-approval';
  readonly request: SignedStatement | null;
  readonly approval: SignedStatement | null;
}

/** One person's signed statement, with what `ssh-keygen -Y verify` needs to check it. */
export interface SignedStatement {
  readonly person: string;
  /** `SHA256:…` as `ssh-keygen -l` prints it. */
  readonly fingerprint: string;
  /** `ssh-ed25519 AAAA…` */
  readonly publicKey: string;
  /** The allowed_signers line: `<person> namespaces="lethe-approval" <publicKey>`. */
  readonly allowedSigners: string;
  /** The exact bytes signed (UTF-8). */
  readonly statement: string;
  /** The armored SSHSIG, as `ssh-keygen -Y sign` wrote it. */
  readonly sshSignature: string;
}

/** The copies of a destroyed key outside lethe's control, as every certificate lists them. */
export const OUTSIDE_LETHE: readonly string[] = [
  "WAL segments in the vault database's pg_wal (recycled segments keep their old contents until overwritten)",
  "WAL archives of the vault database (archive_mode, archive_command or archive_library)",
  'streaming and logical replicas of the vault database, and WAL receivers such as pg_receivewal',
  'base backups of the vault database (pg_basebackup, disk, volume or VM snapshots)',
  'pg_dump or other copies of the vault database made outside lethe',
  'key escrow files written with `lethe keys export`',
];

export type UnsignedCertificate = Omit<DestructionCertificate, 'signature'>;

/** The exact bytes a certificate's signature covers. */
export function certificateMessage(body: UnsignedCertificate): Uint8Array {
  const { format } = body;
  return new TextEncoder().encode(`${format}\n${canonicalJson(body)}`);
}

/**
 * The paragraph every certificate carries about its grace window: what holds now, what holds
 * from `irreversibleAt`, and what lethe cannot promise. `findings` (what lethe saw on the
 * vault database at execution) adds one sentence.
 */
export function graceWindowExplanation(
  days: number,
  irreversibleAt: Date,
  findings: readonly Pick<DurabilityFinding, 'code'>[] = [],
): string {
  const at = irreversibleAt.toISOString();
  const seen =
    findings.length === 0
      ? "At execution lethe saw no WAL archiving, attached replica or replication slot on the vault database's server " +
        '(base backups and other copies cannot be seen from the database).'
      : `At execution lethe saw ${findings.length} such cop${findings.length === 1 ? 'y' : 'ies'} in use on the vault ` +
        `database's server (${[...new Set(findings.map((f) => f.code))].join(', ')}; see guarantees.vaultDurabilityFindings).`;
  return (
    "Guaranteed now: the destroyed keys' wrapped identities are gone from the live vault tables. " +
    `Guaranteed by ${at}: lethe's own encrypted vault backups made before this execution are past their ` +
    `${days}-day retention (the first \`lethe lifecycle apply\` after that date deletes them). ` +
    "Not guaranteed by lethe: the vault database's own copies (WAL segments, WAL archives, streaming and logical " +
    'replicas, base backups, pg_dump copies made by its administrators) and key escrow exports may still hold the ' +
    'wrapped keys, which the master key opens, until their own retention ends. The erasure is final only once those ' +
    `have expired too: on ${at} if their retention is kept within the grace window. ${seen}`
  );
}

/**
 * What a certificate says about finality: the erased keys' wraps, wherever PostgreSQL and its
 * administrators keep copies, open only with `epochs`' master keys, and lethe destroys those.
 */
export function masterEpochStatement(epochs: readonly number[], graceWindowDays: number): string {
  const named = `master-key epoch${epochs.length === 1 ? '' : 's'} ${epochs.join(', ')}`;
  return (
    `The destroyed keys were wrapped to ${named}. The next \`lethe lifecycle apply\` re-wraps every surviving key to ` +
    `a new epoch and retires ${named}; the first apply at least ${graceWindowDays} days after that retirement destroys ` +
    "its master key in the provider (the key file removed and its directory synced, the HSM object destroyed, or the " +
    'KMS key scheduled for deletion). From that moment (for an AWS KMS key: from the end of its 7-30 day deletion ' +
    'waiting period, when KMS deletes it; the vault records that date, and until then a CancelKeyDeletion could undo ' +
    'it) the erasure is final: every remaining copy of these keys\' ' +
    "wrapped bytes (the vault database's WAL, WAL archives, replicas, base backups, pg_dump copies, lethe's vault " +
    'backups and key escrow exports) is wrapped to a master key that exists nowhere. The vault records the moment ' +
    '(master_epochs.destroyed_at and a `master.destroy` audit entry; `lethe keys epochs` lists it).'
  );
}

export interface CertificateFacts {
  readonly request: StoredEraseRequest;
  readonly requestedKeyIds: readonly string[];
  readonly destroyed: readonly DestroyedKey[];
  readonly executedAt: Date;
  readonly graceWindowDays: number;
  /** What the vault database's server keeps of its WAL, seen at execution (Vault.inspectDurability). */
  readonly vaultDurability: readonly DurabilityFinding[];
  /** A person across every tenant: the keys a legal hold kept (its other keys are `requestedKeyIds`). */
  readonly kept?: readonly KeptKey[];
  /** The mapping's subject columns, for a user erasure. */
  readonly subjectColumns?: readonly SubjectColumns[];
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
  const approvals = await signedApprovals(vault, request);
  const masterEpochs = await vault.masterEpochsOfKeys(destroyedIds);
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
    ...(request.tenant === null ? { allTenants: allTenantsSection(request, facts) } : {}),
    ...(facts.subjectColumns === undefined ? {} : { subjectColumns: subjectColumnsSection(facts.subjectColumns) }),
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
      explanation: graceWindowExplanation(facts.graceWindowDays, irreversibleAt, facts.vaultDurability),
    },
    guarantees: {
      liveVault: {
        since: facts.executedAt.toISOString(),
        statement:
          "Each destroyed key's wrapped identity was set to NULL in the vault and the key tables rewritten (VACUUM FULL). " +
          'An old row version a transaction older than the destruction still needed stays in the table files until the ' +
          'next `lethe lifecycle apply` rewrites them again.',
      },
      vaultBackups: {
        until: irreversibleAt.toISOString(),
        statement:
          "lethe's encrypted vault backups in the bucket made before the execution are past their retention " +
          `(${facts.graceWindowDays} days) by this date; the first \`lethe lifecycle apply\` after it deletes them.`,
      },
      outsideLethe: OUTSIDE_LETHE,
      vaultDurabilityFindings: facts.vaultDurability,
      ...(masterEpochs.length === 0 ? {} : { masterEpoch: { epochs: masterEpochs, statement: masterEpochStatement(masterEpochs, facts.graceWindowDays) } }),
    },
    ...(approvals === null ? {} : { approvals }),
  };
  return { ...body, signature: { algorithm: 'ed25519', keyId: signer.id, value: signer.sign(certificateMessage(body)) } };
}

function allTenantsSection(request: StoredEraseRequest, facts: CertificateFacts): CertificateAllTenants {
  const subject = request.subject ?? '';
  const destroyedIds = new Set(facts.destroyed.map((d) => d.keyId));
  const rows: CertificateAllTenants['tenants'][number][] = [];
  for (const d of facts.destroyed) {
    rows.push({ tenant: tenantOfUserKey(d.keyId), keyId: d.keyId, outcome: 'destroyed', cases: [], note: 'destroyed by this request' });
  }
  for (const k of facts.kept ?? []) {
    if (destroyedIds.has(k.keyId)) continue;
    const cases = [...new Set(k.holds.map((h) => h.caseId))].sort();
    rows.push({
      tenant: k.tenant,
      keyId: k.keyId,
      outcome: 'kept',
      cases,
      note:
        `kept: legal hold case ${cases.join(', ')} covers this person's data in tenant ${k.tenant}, and holds win over erasure. ` +
        `Once the case is released, erase it with \`lethe erase request --tenant ${shellWord(k.tenant)} --user ${shellWord(subject)}\``,
    });
  }
  rows.sort((a, b) => (a.tenant < b.tenant ? -1 : a.tenant > b.tenant ? 1 : 0));
  const destroyedTenants = rows.filter((r) => r.outcome === 'destroyed').map((r) => r.tenant);
  const keptTenants = rows.filter((r) => r.outcome === 'kept').map((r) => r.tenant);
  const list = (tenants: readonly string[]) => tenants.map((t) => JSON.stringify(t)).join(', ');
  const statement =
    `One deletion request (${request.id}), approved once by ${request.approvedBy ?? '?'}, erases user ${JSON.stringify(subject)} ` +
    "in every tenant where lethe held their data, found from the vault's user keys at execution. " +
    (rows.length === 0
      ? 'No tenant held a key of this person at execution: nothing was destroyed.'
      : `Destroyed in ${destroyedTenants.length} tenant${destroyedTenants.length === 1 ? '' : 's'}` +
        (destroyedTenants.length === 0 ? '' : ` (${list(destroyedTenants)})`) +
        (keptTenants.length === 0
          ? '; nothing was kept.'
          : `; kept under legal hold in ${keptTenants.length} (${list(keptTenants)}), each with its case in tenants[].`));
  return { subject, statement, tenants: rows };
}

/** The tenant of a `user:T/U` key id (percent-decoded). */
function tenantOfUserKey(keyId: string): string {
  const rest = keyId.slice('user:'.length);
  return decodeURIComponent(rest.slice(0, rest.indexOf('/')));
}

function subjectColumnsSection(tables: readonly SubjectColumns[]): CertificateSubjectColumns {
  const sorted = [...tables]
    .map((t) => ({ table: t.table, columns: [...t.columns] }))
    .sort((a, b) => (a.table < b.table ? -1 : a.table > b.table ? 1 : 0));
  const named = sorted.map((t) => `${t.table} (${t.columns.join(', ')})`).join('; ');
  return {
    statement:
      'The destroyed user keys make unreadable every backed-up row whose mapped subject column names the person: ' +
      `${named === '' ? 'the mapping names no subject column' : named}. ` +
      "A column the mapping does not list as a subject column (for instance a mention inside someone else's message) is " +
      "encrypted under that row's own subject's keys and is not covered by this erasure.",
    tables: sorted,
  };
}

async function signedApprovals(vault: Vault, request: StoredEraseRequest): Promise<CertificateApprovals | null> {
  if (request.requestProof === null && request.approvalProof === null) return null;
  const statementOf = async (proof: SignedAct | null): Promise<SignedStatement | null> => {
    if (proof === null) return null;
    const approver = await vault.getApprover(proof.key);
    if (approver === null) {
      throw new LetheError(ErrorCode.INTEGRITY, `certificate for ${request.id}: key ${proof.key} signed an act of it but is not in the vault's enrolled keys`);
    }
    return {
      person: approver.name,
      fingerprint: approver.fingerprint,
      publicKey: approver.publicKey,
      allowedSigners: allowedSignersLine(approver),
      statement: proof.statement,
      sshSignature: proof.signature,
    };
  };
  return { namespace: APPROVAL_NAMESPACE, request: await statementOf(request.requestProof), approval: await statementOf(request.approvalProof) };
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
  return verifySignedDocument(cert, publicKeys, {
    format: CERTIFICATE_FORMAT,
    what: 'certificate',
    message: (body) => certificateMessage(body as unknown as UnsignedCertificate),
  });
}

/**
 * Checks a signed JSON document lethe writes (a certificate, an evidence report): a plain
 * object whose `format` is `expected.format` and whose `signature` is an Ed25519 signature,
 * by a key in `publicKeys`, over `expected.message(body)` (the body without `signature`).
 * Never throws: returns `{ ok: false, problem }` for anything wrong.
 */
export function verifySignedDocument(
  doc: unknown,
  publicKeys: ReadonlyMap<string, string>,
  expected: { format: string; what: string; message: (body: Record<string, unknown>) => Uint8Array },
): { ok: true } | { ok: false; problem: string } {
  if (doc === null || typeof doc !== 'object' || Array.isArray(doc)) return { ok: false, problem: 'not a JSON object' };
  const { signature, ...body } = doc as Record<string, unknown>;
  if (body['format'] !== expected.format) {
    return { ok: false, problem: `format is ${JSON.stringify(body['format'])}, expected ${expected.format}` };
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
    message = expected.message(body);
  } catch {
    return { ok: false, problem: `the ${expected.what} body is not plain JSON` };
  }
  return verifySignature(publicKey, message, value) ? { ok: true } : { ok: false, problem: 'bad signature' };
}
