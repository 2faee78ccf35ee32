import type { Signer } from '../keys/index.ts';
import { verifyCertificate } from '../lifecycle/certificate.ts';
import { certificateKey } from '../lifecycle/erase.ts';
import type { Hold } from '../lifecycle/types.ts';
import {
  auditEvidence,
  destructionsIn,
  drillsStarted,
  eraseRequestsOpen,
  holdsInForce,
  restorePoints,
  snapshotsStarted,
  type AuditAnchor,
  type EvidenceDestruction,
  type EvidenceDrill,
  type EvidenceSnapshot,
  type JsonValue,
  type StoredEraseRequest,
  type Vault,
  vaultClock,
} from '../vault/index.ts';
import {
  REPORT_FORMAT,
  signReport,
  type EvidenceReport,
  type ReportBackups,
  type ReportCauseKind,
  type ReportCertificate,
  type ReportDestructions,
  type ReportDrills,
  type ReportErasures,
  type ReportHolds,
  type ReportObjectives,
  type ReportSnapshot,
  type UnsignedReport,
} from './document.ts';
import type { ReportPeriod } from './period.ts';
import { measureRpo } from './rpo.ts';

const DAY_MS = 86_400_000;

export interface BuildReportOptions {
  readonly vault: Vault;
  /** The lifecycle signer (Runtime.signer('lifecycle')). */
  readonly signer: Signer;
  readonly period: ReportPeriod;
  readonly objectives: ReportObjectives;
  /** Who made the report (recorded in it). */
  readonly actor: string;
  readonly signal?: AbortSignal;
}

/**
 * Reads the period's facts from the vault in one read-only snapshot, checks the audit chain
 * (anchored on the validly signed certificates it finds) and every certificate's signature,
 * and signs the report with the lifecycle key. Changes nothing. `generatedAt` is the vault
 * database's clock at the snapshot, the clock every other time in the report comes from.
 * Throws DATABASE/VAULT as the vault raises them, ABORTED on `signal`.
 */
export async function buildEvidenceReport(options: BuildReportOptions): Promise<EvidenceReport> {
  const { vault, period } = options;
  const trusted = await vault.getSigningPublicKeys(['lifecycle', 'legacy']);
  const interval = { from: period.from, to: period.to };
  const facts = await vault.withReadSnapshot(async (db) => {
    const now = await vaultClock(db);
    const requests = await eraseRequestsOpen(db, vault.schema, interval);
    const certificates = requests.map((r) => certificateFacts(r, trusted));
    const anchors: AuditAnchor[] = certificates.flatMap((c) =>
      c?.signatureValid === true && c.auditChain !== null ? [c.auditChain] : [],
    );
    return {
      now,
      snapshots: await snapshotsStarted(db, vault.schema, interval),
      points: await restorePoints(db, vault.schema, interval),
      drills: await drillsStarted(db, vault.schema, interval),
      holds: await holdsInForce(db, vault.schema, interval),
      requests,
      certificates,
      destructions: await destructionsIn(db, vault.schema, interval),
      audit: await auditEvidence(db, vault.schema, interval, {
        anchors,
        ...(options.signal === undefined ? {} : { signal: options.signal }),
      }),
      anchors: anchors.length,
    };
  }, 'an evidence report');
  const until = new Date(Math.min(period.to.getTime(), facts.now.getTime()));
  const erasures = erasureFacts(facts.requests, facts.certificates, period, until);
  const chain = facts.audit.chain;
  const problems = [
    ...chain.findings.map((f) => `audit chain, entry ${f.seq}: ${f.problem}`),
    ...erasures.requests.flatMap((r) =>
      r.certificate !== null && !r.certificate.signatureValid
        ? [`certificate of ${r.id}: ${r.certificate.problem ?? 'does not verify'}`]
        : [],
    ),
  ];
  const body: UnsignedReport = {
    format: REPORT_FORMAT,
    period: {
      from: period.from.toISOString(),
      to: period.to.toISOString(),
      asGiven: period.asGiven,
    },
    generatedAt: facts.now.toISOString(),
    generatedBy: options.actor,
    vault: { schema: vault.schema },
    objectives: options.objectives,
    backups: backupFacts(facts.snapshots),
    rpo: measureRpo(facts.points, period.from, until, options.objectives.rpoSeconds),
    drills: drillFacts(facts.drills, options.objectives.rtoSeconds),
    holds: holdFacts(facts.holds, period),
    erasures,
    keysDestroyed: destructionFacts(facts.destructions),
    auditChain: {
      ok: chain.ok,
      entries: chain.entries,
      head: chain.head,
      findings: chain.findings,
      anchors: facts.anchors,
      inPeriod: facts.audit.inPeriod,
    },
    integrity: { ok: problems.length === 0, problems },
  };
  return signReport(body, options.signer);
}

/** A count from a stored JSON document: a non-negative safe integer, else null. */
function count(value: JsonValue | undefined): number | null {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0 ? value : null;
}

const isoOrNull = (d: Date | null): string | null => (d === null ? null : d.toISOString());

function backupFacts(snapshots: readonly EvidenceSnapshot[]): ReportBackups {
  const rows: ReportSnapshot[] = snapshots.map((s) => {
    const st = s.stats ?? {};
    return {
      id: s.id,
      status: s.status,
      startedAt: s.startedAt.toISOString(),
      completedAt: isoOrNull(s.completedAt),
      expiredAt: isoOrNull(s.expiredAt),
      durationMs: count(st['durationMs']),
      bytesPlain: count(st['bytesPlain']),
      bytesStored: count(st['bytesStored']),
      cells: count(st['cells']),
      cellsWritten: count(st['cellsWritten']),
      cellsReused: count(st['cellsReused']),
      rows: count(st['rows']),
      fullRead: typeof st['fullRead'] === 'boolean' ? st['fullRead'] : null,
    };
  });
  const kept = rows.filter((r) => r.status === 'complete' || r.status === 'expired');
  const sum = (pick: (r: ReportSnapshot) => number | null): number =>
    kept.reduce((n, r) => n + (pick(r) ?? 0), 0);
  const withStatus = (status: ReportSnapshot['status']): number =>
    rows.filter((r) => r.status === status).length;
  return {
    started: rows.length,
    complete: withStatus('complete'),
    expired: withStatus('expired'),
    abandoned: withStatus('abandoned'),
    running: withStatus('running'),
    bytesPlain: sum((r) => r.bytesPlain),
    bytesStored: sum((r) => r.bytesStored),
    cellsWritten: sum((r) => r.cellsWritten),
    cellsReused: sum((r) => r.cellsReused),
    snapshots: rows,
  };
}

function drillFacts(drills: readonly EvidenceDrill[], rtoSeconds: number | null): ReportDrills {
  const rows = drills.map((d) => ({
    id: d.id,
    snapshotId: d.snapshotId,
    startedAt: d.startedAt.toISOString(),
    ok: d.ok,
    rtoMs: d.durationMs,
    rpoSeconds: count(d.result['dataAgeSeconds']),
    rtoWithinObjective: rtoSeconds === null ? null : d.durationMs <= rtoSeconds * 1000,
    cells: count(d.result['cells']),
    cellsVerified: count(d.result['cellsVerified']),
    cellsFailed: count(d.result['cellsFailed']),
    cellsShredded: count(d.result['cellsShredded']),
    findings: d.findings,
    findingCodes: d.findingCodes,
  }));
  const times = rows.map((r) => r.rtoMs).sort((a, b) => a - b);
  const middle =
    times.length === 0
      ? null
      : times.length % 2 === 1
        ? (times[(times.length - 1) / 2] ?? 0)
        : Math.round(((times[times.length / 2 - 1] ?? 0) + (times[times.length / 2] ?? 0)) / 2);
  return {
    count: rows.length,
    passed: rows.filter((r) => r.ok).length,
    failed: rows.filter((r) => !r.ok).length,
    rto: {
      objectiveSeconds: rtoSeconds,
      worstMs: times.at(-1) ?? null,
      medianMs: middle,
      overObjective:
        rtoSeconds === null ? null : rows.filter((r) => r.rtoWithinObjective === false).length,
    },
    drills: rows,
  };
}

const within = (d: Date | null, period: ReportPeriod): boolean =>
  d !== null && d.getTime() >= period.from.getTime() && d.getTime() <= period.to.getTime();

function holdFacts(holds: readonly Hold[], period: ReportPeriod): ReportHolds {
  const end = period.to.getTime();
  const selectors = holds.map((h) => ({
    id: h.id,
    caseId: h.caseId,
    tenant: h.tenant,
    user: h.user,
    conversation: h.conversation,
    from: isoOrNull(h.from),
    to: isoOrNull(h.to),
    reason: h.reason,
    placedBy: h.placedBy,
    placedAt: h.placedAt.toISOString(),
    releasedBy: h.releasedBy,
    releasedAt: isoOrNull(h.releasedAt),
    placedInPeriod: within(h.placedAt, period),
    releasedInPeriod: within(h.releasedAt, period),
    activeAtEnd:
      h.placedAt.getTime() <= end && (h.releasedAt === null || h.releasedAt.getTime() > end),
  }));
  return {
    placed: selectors.filter((s) => s.placedInPeriod).length,
    released: selectors.filter((s) => s.releasedInPeriod).length,
    activeAtEnd: selectors.filter((s) => s.activeAtEnd).length,
    cases: new Set(selectors.map((s) => `${s.tenant}\n${s.caseId}`)).size,
    selectors,
  };
}

/** A stored certificate's facts and signature check; null while the request has none. */
function certificateFacts(
  request: StoredEraseRequest,
  trusted: ReadonlyMap<string, string>,
): ReportCertificate | null {
  const cert = request.certificate;
  if (cert === null || cert === undefined) return null;
  const record = (v: unknown): Record<string, unknown> =>
    v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : {};
  const c = record(cert);
  const named = record(c['request'])['id'];
  // A validly signed certificate of another request, copied onto this one, proves nothing here.
  const signed = verifyCertificate(cert, trusted);
  const check: { ok: true } | { ok: false; problem: string } =
    signed.ok && named !== request.id
      ? {
          ok: false,
          problem: `it is the certificate of request ${JSON.stringify(named)}, not ${request.id}`,
        }
      : signed;
  const length = (v: unknown): number | null => (Array.isArray(v) ? v.length : null);
  const text = (v: unknown): string | null => (typeof v === 'string' ? v : null);
  const signature = record(c['signature']);
  const chain = record(c['auditChain']);
  const seq = chain['seq'];
  const hash = chain['hash'];
  return {
    object: certificateKey(request.id),
    signatureValid: check.ok,
    problem: check.ok ? null : check.problem,
    keyId: text(signature['keyId']),
    signature: text(signature['value']),
    executedAt: text(c['executedAt']),
    keysDestroyed: length(c['keysDestroyed']),
    keysAbsent: length(c['keysAbsent']),
    cellsAffected: count(record(c['cellsAffected'])['count'] as JsonValue | undefined),
    snapshotsAffected: count(record(c['snapshotsAffected'])['count'] as JsonValue | undefined),
    irreversibleAt: text(record(c['graceWindow'])['irreversibleAt']),
    auditChain:
      typeof seq === 'number' &&
      Number.isSafeInteger(seq) &&
      seq >= 1 &&
      typeof hash === 'string' &&
      /^[0-9a-f]{64}$/.test(hash)
        ? { seq, hash }
        : null,
  };
}

function erasureFacts(
  requests: readonly StoredEraseRequest[],
  certificates: readonly (ReportCertificate | null)[],
  period: ReportPeriod,
  until: Date,
): ReportErasures {
  const end = period.to.getTime();
  const rows = requests.map((r, i) => {
    const executedAt = r.executedAt !== null && r.executedAt.getTime() <= end ? r.executedAt : null;
    const executed = executedAt !== null;
    const approved = r.approvedAt !== null && r.approvedAt.getTime() <= end;
    const closedAt = executedAt ?? until;
    return {
      id: r.id,
      tenant: r.tenant,
      scope: r.scope,
      subject: r.subject,
      reason: r.reason,
      requestedBy: r.requestedBy,
      requestedAt: r.requestedAt.toISOString(),
      approvedBy: approved ? r.approvedBy : null,
      approvedAt: approved ? isoOrNull(r.approvedAt) : null,
      executedAt: isoOrNull(executedAt),
      statusAtEnd: executed
        ? ('executed' as const)
        : approved
          ? ('approved' as const)
          : ('pending' as const),
      daysOpen: Math.max(0, Math.floor((closedAt.getTime() - r.requestedAt.getTime()) / DAY_MS)),
      // A certificate written after the period is not evidence for it.
      certificate: executed ? (certificates[i] ?? null) : null,
    };
  });
  const certs = rows.flatMap((r) => (r.certificate === null ? [] : [r.certificate]));
  return {
    requested: requests.filter((r) => within(r.requestedAt, period)).length,
    approved: requests.filter((r) => within(r.approvedAt, period)).length,
    executed: requests.filter((r) => within(r.executedAt, period)).length,
    openAtEnd: rows.filter((r) => r.statusAtEnd !== 'executed').length,
    certificatesValid: certs.filter((c) => c.signatureValid).length,
    certificatesInvalid: certs.filter((c) => !c.signatureValid).length,
    requests: rows,
  };
}

/** The kind of a stored destruction cause and its facts in words; lenient, as it only describes. */
function describeCause(cause: JsonValue): { kind: ReportCauseKind; detail: string } {
  const c = cause !== null && typeof cause === 'object' && !Array.isArray(cause) ? cause : {};
  const s = (k: string): string => (typeof c[k] === 'string' ? c[k] : '?');
  const kind = s('kind');
  switch (kind) {
    case 'retention':
      return {
        kind: 'retention',
        detail: `${s('class')} of ${s('period')} past its ${s('maxAge')} retention`,
      };
    case 'erasure':
      return { kind: 'erasure', detail: `deletion request ${s('request')} (${s('scope')})` };
    case 'hold-release':
      return { kind: 'hold-release', detail: `legal hold case ${s('case')} released` };
    default:
      return { kind: 'unknown', detail: 'a cause lethe does not record (see the audit entry)' };
  }
}

function destructionFacts(destructions: readonly EvidenceDestruction[]): ReportDestructions {
  const keys = destructions.map((d) => {
    const { kind, detail } = describeCause(d.cause);
    return {
      keyId: d.keyId,
      destroyedAt: d.destroyedAt.toISOString(),
      actor: d.actor,
      reason: d.reason,
      cause: kind,
      causeDetail: detail,
      auditSeq: d.auditSeq,
    };
  });
  const by = (kind: ReportCauseKind): number => keys.filter((k) => k.cause === kind).length;
  return {
    count: keys.length,
    byCause: {
      retention: by('retention'),
      erasure: by('erasure'),
      'hold-release': by('hold-release'),
      unknown: by('unknown'),
    },
    keys,
  };
}
