/**
 * Evidence for auditors: what lethe did in a period (backups, restore drills with RTO and
 * RPO against the objectives, legal holds, deletion requests and their certificates, keys
 * destroyed, the audit chain), read from the vault and signed with the lifecycle key like a
 * destruction certificate. See docs/evidence.md.
 */
export { buildEvidenceReport, type BuildReportOptions } from './gather.ts';
export {
  REPORT_FORMAT,
  reportMessage,
  signReport,
  verifyReport,
  type EvidenceReport,
  type ReportObjectives,
  type UnsignedReport,
} from './document.ts';
export {
  EMBED_ID,
  EMBED_LIMIT_BYTES,
  embeddableJson,
  escapeHtml,
  renderReportHtml,
  type HtmlOptions,
} from './html.ts';
export { OBJECTIVES_FIELD, reportObjectives } from './objectives.ts';
export { parseReportDate, parseReportPeriod, type ReportPeriod } from './period.ts';
export { measureRpo, type RestorePoint, type RpoBreach, type RpoMeasurement } from './rpo.ts';
export { reportText, TEXT_ROWS } from './text.ts';
