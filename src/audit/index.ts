export { AUDIT_EXPORT_FORMAT, auditExportMessage, auditExportSignedBy, auditObjectKey, exportAudit } from './record.ts';
