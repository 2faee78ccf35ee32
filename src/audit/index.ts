export { auditObjectKey, exportAudit } from './record.ts';
