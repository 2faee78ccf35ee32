import type {
  EvidenceReport,
  ReportDrill,
  ReportErasure,
  ReportHold,
  ReportSnapshot,
} from './document.ts';
import { bytesText, durationText, instantText, plural, secondsText } from './human.ts';
import { OBJECTIVES_FIELD } from './objectives.ts';
import { describeEraseTarget } from '../lifecycle/erase-subject.ts';

/** Rows listed per section in the text form; the JSON and HTML forms list every row. */
export const TEXT_ROWS = 50;

/** What each section lists about one row, shared with the HTML form. */
export function snapshotLine(s: ReportSnapshot): string {
  const parts = [s.status.toUpperCase(), instantText(s.startedAt)];
  if (s.durationMs !== null) parts.push(durationText(s.durationMs));
  if (s.bytesPlain !== null) parts.push(`${bytesText(s.bytesPlain)} read`);
  if (s.bytesStored !== null) parts.push(`${bytesText(s.bytesStored)} stored`);
  if (s.cells !== null)
    parts.push(
      `${s.cells} cells (${s.cellsWritten ?? '?'} written, ${s.cellsReused ?? '?'} reused)`,
    );
  if (s.expiredAt !== null) parts.push(`expired ${instantText(s.expiredAt)}`);
  return parts.join('  ');
}

export function drillLine(d: ReportDrill): string {
  const parts = [
    d.ok ? 'PASSED' : 'FAILED',
    instantText(d.startedAt),
    `snapshot ${d.snapshotId}`,
    `RTO ${durationText(d.rtoMs)}`,
  ];
  if (d.rtoWithinObjective === false) parts.push('(over the objective)');
  if (d.rpoSeconds !== null) parts.push(`RPO ${secondsText(d.rpoSeconds)}`);
  if (d.cells !== null) {
    parts.push(d.ok ? `${d.cells} cells` : `${d.cellsFailed ?? '?'} of ${d.cells} cells failed`);
  }
  if (d.findings > 0)
    parts.push(
      `${plural(d.findings, 'finding')}${d.findingCodes.length > 0 ? ` (${d.findingCodes.join(', ')})` : ''}`,
    );
  return parts.join('  ');
}

export function holdSelectorText(
  h: Pick<ReportHold, 'tenant' | 'user' | 'conversation' | 'from' | 'to'>,
): string {
  const who = [`tenant ${h.tenant}`];
  if (h.user !== null) who.push(`user ${h.user}`);
  if (h.conversation !== null) who.push(`conversation ${h.conversation}`);
  const when =
    h.from === null && h.to === null
      ? 'all dates'
      : `from ${h.from === null ? 'the start' : instantText(h.from)} to ${h.to === null ? 'now' : instantText(h.to)}`;
  return `${who.join(', ')}, ${when}`;
}

export function holdLine(h: ReportHold): string {
  const released =
    h.releasedAt === null
      ? 'still active'
      : `released ${instantText(h.releasedAt)} by ${h.releasedBy ?? '?'}`;
  return `${h.caseId}  ${holdSelectorText(h)}  placed ${instantText(h.placedAt)} by ${h.placedBy}  ${released}  reason: ${h.reason}`;
}

export function erasureSubject(r: Pick<ReportErasure, 'scope' | 'subject' | 'tenant'>): string {
  return describeEraseTarget(r);
}

export function erasureLine(r: ReportErasure): string {
  const steps = [`requested by ${r.requestedBy} ${instantText(r.requestedAt)}`];
  if (r.approvedAt !== null)
    steps.push(`approved by ${r.approvedBy ?? '?'} ${instantText(r.approvedAt)}`);
  if (r.executedAt !== null) steps.push(`executed ${instantText(r.executedAt)}`);
  const open =
    r.statusAtEnd === 'executed'
      ? `done in ${plural(r.daysOpen, 'day')}`
      : `open for ${plural(r.daysOpen, 'day')}`;
  return `${r.id}  ${r.statusAtEnd.toUpperCase()}  erase ${erasureSubject(r)}: ${steps.join(', ')}; ${open}`;
}

export function certificateLine(r: ReportErasure): string | null {
  const c = r.certificate;
  if (c === null) return null;
  if (!c.signatureValid) return `certificate ${c.object}: SIGNATURE INVALID (${c.problem ?? '?'})`;
  const facts = [
    plural(c.keysDestroyed ?? 0, 'key') + ' destroyed',
    plural(c.cellsAffected ?? 0, 'cell key'),
    plural(c.snapshotsAffected ?? 0, 'snapshot'),
  ];
  return `certificate ${c.object}: signature valid (${c.keyId ?? '?'}); ${facts.join(', ')}; irreversible ${c.irreversibleAt === null ? '?' : instantText(c.irreversibleAt)}`;
}

/** The RPO section's headline. */
export function rpoHeadline(report: EvidenceReport): string {
  const r = report.rpo;
  const objective =
    r.objectiveSeconds === null
      ? `no objective (set ${OBJECTIVES_FIELD}.rpoMinutes)`
      : `objective ${secondsText(r.objectiveSeconds)}`;
  const verdict =
    r.met === null ? '' : r.met ? ': MET' : `: BREACHED (${plural(r.breaches.length, 'interval')})`;
  const worst =
    r.worstSeconds === null
      ? 'no complete backup for part of the period'
      : `worst ${secondsText(r.worstSeconds)}${r.worstAt === null ? '' : ` (just before ${instantText(r.worstAt)})`}`;
  return `RPO, ${objective}${verdict}; ${worst}; ${plural(r.completions, 'snapshot')} completed`;
}

function section<T>(
  out: string[],
  rows: readonly T[],
  line: (row: T) => string,
  limit: number,
): void {
  for (const row of rows.slice(0, limit)) out.push(`  ${line(row)}`);
  if (rows.length > limit)
    out.push(`  … and ${rows.length - limit} more (--json or --out lists every one)`);
}

/**
 * The report as text for a terminal: a headline per section and up to `limit` rows each.
 * `signature` is the outcome of checking the signature against the vault's keys.
 */
export function reportText(report: EvidenceReport, signature: string, limit = TEXT_ROWS): string[] {
  const out: string[] = [];
  const p = report.period;
  out.push(
    `lethe evidence report, ${p.asGiven.from} to ${p.asGiven.to} (${instantText(p.from)} to ${instantText(p.to)}, vault clock)`,
  );
  out.push(
    `generated ${instantText(report.generatedAt)} by ${report.generatedBy}; vault schema ${report.vault.schema}`,
  );
  out.push(`signed with lifecycle key ${report.signature.keyId}: ${signature}`);
  out.push(
    report.integrity.ok
      ? 'integrity: OK'
      : `integrity: PROBLEMS (${report.integrity.problems.length})`,
  );
  for (const problem of report.integrity.problems.slice(0, limit)) out.push(`  - ${problem}`);

  const b = report.backups;
  out.push('');
  out.push(
    `Backups: ${b.started} started: ${b.complete} complete, ${b.expired} expired since, ${b.abandoned} abandoned, ${b.running} running; ` +
      `${bytesText(b.bytesPlain)} read, ${bytesText(b.bytesStored)} stored; cells ${b.cellsWritten} written, ${b.cellsReused} reused`,
  );
  section(out, b.snapshots, (s) => `${s.id}  ${snapshotLine(s)}`, limit);

  out.push('');
  out.push(rpoHeadline(report));
  if (report.rpo.withoutBackup !== null) {
    out.push(
      `  no complete backup from ${instantText(report.rpo.withoutBackup.from)} to ${instantText(report.rpo.withoutBackup.to)}`,
    );
  }
  section(
    out,
    report.rpo.breaches,
    (x) =>
      `over the objective from ${instantText(x.from)} to ${instantText(x.to)}${x.worstSeconds === null ? ' (no backup)' : `, worst ${secondsText(x.worstSeconds)}`}`,
    limit,
  );

  const d = report.drills;
  out.push('');
  const rto = d.rto;
  const rtoText =
    rto.worstMs === null
      ? ''
      : `; RTO worst ${durationText(rto.worstMs)}, median ${durationText(rto.medianMs ?? 0)}` +
        (rto.objectiveSeconds === null
          ? `, no objective (set ${OBJECTIVES_FIELD}.rtoMinutes)`
          : `, objective ${secondsText(rto.objectiveSeconds)}: ${rto.overObjective === 0 ? 'all within' : `${rto.overObjective ?? 0} over`}`);
  out.push(`Restore drills: ${d.count}: ${d.passed} passed, ${d.failed} failed${rtoText}`);
  section(out, d.drills, drillLine, limit);

  const h = report.holds;
  out.push('');
  out.push(
    `Legal holds: ${h.placed} placed, ${h.released} released, ${h.activeAtEnd} active at the end (${plural(h.cases, 'case')})`,
  );
  section(out, h.selectors, holdLine, limit);

  const e = report.erasures;
  out.push('');
  out.push(
    `Deletion requests: ${e.requested} requested, ${e.approved} approved, ${e.executed} executed, ${e.openAtEnd} open at the end; ` +
      `certificates: ${e.certificatesValid} valid${e.certificatesInvalid > 0 ? `, ${e.certificatesInvalid} INVALID` : ''}`,
  );
  section(
    out,
    e.requests,
    (r) => {
      const cert = certificateLine(r);
      return cert === null ? erasureLine(r) : `${erasureLine(r)}\n      ${cert}`;
    },
    limit,
  );

  const k = report.keysDestroyed;
  out.push('');
  out.push(
    `Keys destroyed: ${k.count}: ${k.byCause.retention} by retention, ${k.byCause.erasure} by erasure, ${k.byCause['hold-release']} by hold release` +
      (k.byCause.unknown > 0 ? `, ${k.byCause.unknown} for another cause` : ''),
  );
  section(
    out,
    k.keys,
    (x) =>
      `${x.keyId}  ${instantText(x.destroyedAt)}  ${x.causeDetail}  by ${x.actor}  audit entry ${x.auditSeq}`,
    limit,
  );

  const a = report.auditChain;
  out.push('');
  const head = a.head === null ? 'empty' : `head entry ${a.head.seq}, hash ${a.head.hash}`;
  out.push(
    `Audit chain: ${a.ok ? 'OK' : 'BROKEN'}: ${plural(a.entries, 'entry', 'entries')}, ${head}; ` +
      `checked against ${plural(a.anchors, 'certificate anchor')}`,
  );
  for (const f of a.findings.slice(0, limit)) out.push(`  entry ${f.seq}: ${f.problem}`);
  const range =
    a.inPeriod.firstSeq === null
      ? ''
      : ` (entries ${a.inPeriod.firstSeq} to ${a.inPeriod.lastSeq ?? '?'})`;
  out.push(
    `  ${plural(a.inPeriod.entries, 'entry', 'entries')} in the period${range}: ${a.inPeriod.byAction.map((x) => `${x.action} ${x.count}`).join(', ') || 'none'}`,
  );
  return out;
}
