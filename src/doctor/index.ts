export { JOB_ACCESS, judgeCredentials, S3_ACTION, STORAGE_OPS, type CredentialSet, type ProbeOutcome, type StorageOp } from './credentials.ts';
export { CERTIFICATE_WARN_DAYS, CLOCK_SKEW_WARN_MS } from './database.ts';
export { runDoctor, type DoctorOptions } from './run.ts';
export { PROBE_PREFIX } from './storage.ts';
export { check, DOCTOR_JOBS, isFinding, type Check, type CheckStatus, type DoctorJob, type DoctorReport } from './types.ts';
