export * from './ids.ts';
export { copyLines, decodeCopyField, fieldEnds } from './copy-text.ts';
export { groupCells, KEY_FIELDS, RowFingerprint, type CellRows } from './group.ts';
export { COPY_SESSION_SETTINGS, copySessionStatements } from './session.ts';
