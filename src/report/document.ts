import type { Signer } from '../keys/index.ts';
import { verifySignedDocument } from '../lifecycle/certificate.ts';
import type { EraseScope } from '../lifecycle/types.ts';
import { canonicalJson, type SnapshotStatus } from '../vault/index.ts';
import type { RpoMeasurement } from './rpo.ts';

export const REPORT_FORMAT = 'lethe.evidence-report.v1';

/**
 * An evidence report: what lethe did in a period, from the vault, signed like a destruction
 * certificate. The signature (Ed25519, the lifecycle signing key) covers
 * `lethe.evidence-report.v1\n` followed by the canonical JSON (keys sorted, no whitespace) of
 * the report without `signature`. Every number is an integer and every object key is fixed
 * ASCII, so `jq -cS` and Python's `json.dumps(sort_keys=True)` reproduce the signed bytes
 * (docs/evidence.md). All times are ISO-8601 UTC on the vault database's clock.
 */
export interface EvidenceReport {
  readonly format: typeof REPORT_FORMAT;
  readonly period: {
    /** First instant of the period, included. */
    readonly from: string;
    /** Last instant of the period, included (a date given alone ends at its last millisecond). */
    readonly to: string;
    readonly asGiven: { readonly from: string; readonly to: string };
  };
  readonly generatedAt: string;
  readonly generatedBy: string;
  readonly vault: { readonly schema: string };
  readonly objectives: ReportObjectives;
  readonly backups: ReportBackups;
  readonly rpo: RpoMeasurement;
  readonly drills: ReportDrills;
  readonly holds: ReportHolds;
  readonly erasures: ReportErasures;
  readonly keysDestroyed: ReportDestructions;
  readonly auditChain: ReportAuditChain;
  /** False when the evidence itself is in doubt: a broken audit chain, a certificate whose signature fails. */
  readonly integrity: { readonly ok: boolean; readonly problems: readonly string[] };
  readonly signature: {
    readonly algorithm: 'ed25519';
    readonly keyId: string;
    readonly value: string;
  };
}

export type UnsignedReport = Omit<EvidenceReport, 'signature'>;

export interface ReportObjectives {
  /** `daemon.objectives.rpoMinutes` in seconds; null when the config sets none. */
  readonly rpoSeconds: number | null;
  /** `daemon.objectives.rtoMinutes` in seconds; null when the config sets none. */
  readonly rtoSeconds: number | null;
  /** Where they were read, or null when there are none. */
  readonly source: string | null;
}

export interface ReportSnapshot {
  readonly id: string;
  readonly status: SnapshotStatus;
  readonly startedAt: string;
  readonly completedAt: string | null;
  readonly expiredAt: string | null;
  /** The facts below are the backup's own record; null where it has none (running, abandoned). */
  readonly durationMs: number | null;
  readonly bytesPlain: number | null;
  readonly bytesStored: number | null;
  readonly cells: number | null;
  readonly cellsWritten: number | null;
  readonly cellsReused: number | null;
  readonly rows: number | null;
  readonly fullRead: boolean | null;
}

export interface ReportBackups {
  /** Runs started in the period, whatever became of them. */
  readonly started: number;
  readonly complete: number;
  /** Complete, then expired by snapshot retention since. */
  readonly expired: number;
  /** Runs that died before their manifest was written (nothing of them is restorable). */
  readonly abandoned: number;
  readonly running: number;
  /** Sums over the complete and expired snapshots. */
  readonly bytesPlain: number;
  readonly bytesStored: number;
  readonly cellsWritten: number;
  readonly cellsReused: number;
  readonly snapshots: readonly ReportSnapshot[];
}

export interface ReportDrill {
  readonly id: number;
  readonly snapshotId: string;
  readonly startedAt: string;
  readonly ok: boolean;
  /** The drill's wall time, restore into a scratch database included: the measured RTO. */
  readonly rtoMs: number;
  /** Age of the snapshot's newest data when the drill ran; null when it could not be read. */
  readonly rpoSeconds: number | null;
  readonly rtoWithinObjective: boolean | null;
  readonly cells: number | null;
  readonly cellsVerified: number | null;
  readonly cellsFailed: number | null;
  readonly cellsShredded: number | null;
  readonly findings: number;
  readonly findingCodes: readonly string[];
}

export interface ReportDrills {
  readonly count: number;
  readonly passed: number;
  readonly failed: number;
  readonly rto: {
    readonly objectiveSeconds: number | null;
    readonly worstMs: number | null;
    readonly medianMs: number | null;
    /** Drills slower than the objective; null without one. */
    readonly overObjective: number | null;
  };
  readonly drills: readonly ReportDrill[];
}

export interface ReportHold {
  readonly id: number;
  readonly caseId: string;
  readonly tenant: string;
  readonly user: string | null;
  readonly conversation: string | null;
  readonly from: string | null;
  readonly to: string | null;
  readonly reason: string;
  readonly placedBy: string;
  readonly placedAt: string;
  readonly releasedBy: string | null;
  readonly releasedAt: string | null;
  readonly placedInPeriod: boolean;
  readonly releasedInPeriod: boolean;
  readonly activeAtEnd: boolean;
}

export interface ReportHolds {
  /** Selectors placed in the period. */
  readonly placed: number;
  readonly released: number;
  /** Selectors in force at the end of the period. */
  readonly activeAtEnd: number;
  readonly cases: number;
  /** Every selector in force at some instant of the period. */
  readonly selectors: readonly ReportHold[];
}

export interface ReportCertificate {
  /** Where it is stored in the bucket (also in the vault: `lethe erase show ID`). */
  readonly object: string;
  readonly signatureValid: boolean;
  /** Why it does not verify; null when it does. */
  readonly problem: string | null;
  readonly keyId: string | null;
  /** The certificate's own signature value: ties this report to that exact certificate. */
  readonly signature: string | null;
  readonly executedAt: string | null;
  readonly keysDestroyed: number | null;
  readonly keysAbsent: number | null;
  readonly cellsAffected: number | null;
  readonly snapshotsAffected: number | null;
  readonly irreversibleAt: string | null;
  readonly auditChain: { readonly seq: number; readonly hash: string } | null;
}

export interface ReportErasure {
  readonly id: string;
  /** Null for a person across every tenant (`erase request --subject U --all-tenants`). */
  readonly tenant: string | null;
  readonly scope: EraseScope;
  readonly subject: string | null;
  readonly reason: string;
  readonly requestedBy: string;
  readonly requestedAt: string;
  readonly approvedBy: string | null;
  readonly approvedAt: string | null;
  readonly executedAt: string | null;
  /** Where the request stood at the end of the period. */
  readonly statusAtEnd: 'pending' | 'approved' | 'executed';
  /** Whole days from the request to its execution, or to the end of the period if it was still open. */
  readonly daysOpen: number;
  readonly certificate: ReportCertificate | null;
}

export interface ReportErasures {
  readonly requested: number;
  readonly approved: number;
  readonly executed: number;
  /** Requests not executed by the end of the period (awaiting approval, or execution). */
  readonly openAtEnd: number;
  readonly certificatesValid: number;
  readonly certificatesInvalid: number;
  /** Every request open at some instant of the period. */
  readonly requests: readonly ReportErasure[];
}

export type ReportCauseKind = 'retention' | 'erasure' | 'hold-release' | 'unknown';

export interface ReportDestruction {
  readonly keyId: string;
  readonly destroyedAt: string;
  readonly actor: string;
  readonly reason: string;
  readonly cause: ReportCauseKind;
  /** The cause's facts in words: the request, the case, or the class, period and rule. */
  readonly causeDetail: string;
  readonly auditSeq: number;
}

export interface ReportDestructions {
  readonly count: number;
  readonly byCause: {
    readonly retention: number;
    readonly erasure: number;
    readonly 'hold-release': number;
    readonly unknown: number;
  };
  readonly keys: readonly ReportDestruction[];
}

export interface ReportAuditChain {
  /** The whole chain, from its first entry to the head at the report's instant. */
  readonly ok: boolean;
  readonly entries: number;
  readonly head: { readonly seq: number; readonly hash: string } | null;
  readonly findings: readonly { readonly seq: number; readonly problem: string }[];
  /** Chain positions from validly signed certificates that the chain was checked against. */
  readonly anchors: number;
  readonly inPeriod: {
    readonly entries: number;
    readonly firstSeq: number | null;
    readonly lastSeq: number | null;
    readonly byAction: readonly { readonly action: string; readonly count: number }[];
  };
}

/** The exact bytes a report's signature covers. */
export function reportMessage(body: UnsignedReport): Uint8Array {
  return new TextEncoder().encode(`${body.format}\n${canonicalJson(body)}`);
}

/** Signs `body` with the lifecycle signer. */
export function signReport(body: UnsignedReport, signer: Signer): EvidenceReport {
  return {
    ...body,
    signature: { algorithm: 'ed25519', keyId: signer.id, value: signer.sign(reportMessage(body)) },
  };
}

/**
 * Checks a report's format and signature against `publicKeys` (signing key id → base64
 * Ed25519 public key, e.g. Vault.getSigningPublicKeys(['lifecycle'])). Never throws:
 * returns `{ ok: false, problem }` for anything wrong.
 */
export function verifyReport(
  report: unknown,
  publicKeys: ReadonlyMap<string, string>,
): { ok: true } | { ok: false; problem: string } {
  return verifySignedDocument(report, publicKeys, {
    format: REPORT_FORMAT,
    what: 'report',
    message: (body) => reportMessage(body as unknown as UnsignedReport),
  });
}
