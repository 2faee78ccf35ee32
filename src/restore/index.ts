export { loadSnapshot, type Finding, type LoadOptions, type LoadProgress, type LoadResult } from './engine.ts';
export { runVerify, type VerifyOptions, type VerifyResult } from './verify.ts';
export { runRestore, type RestoreOptions, type RestoreResult } from './restore.ts';
export { snapshotSchemaReport, type SnapshotSchemaReport } from './schema-report.ts';
