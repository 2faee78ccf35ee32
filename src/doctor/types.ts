/**
 * `lethe doctor`'s findings. Every check reports what it saw and, when that needs a person,
 * what to do. `warn` and `fail` are findings (exit 3); `unknown` means the server or the
 * credentials would not say (s3rver has no versioning API, one credential set cannot show
 * another job's limits) and `skipped` that a check it depends on failed: neither is a finding,
 * the finding that caused a skip is already in the report.
 */
export type CheckStatus = 'ok' | 'warn' | 'fail' | 'unknown' | 'skipped';

export interface Check {
  /** Stable id for scripts, e.g. `vault.certificate`, `storage.credentials.delete`. */
  readonly id: string;
  /** What was checked, for people: `vault: TLS certificate`. */
  readonly title: string;
  readonly status: CheckStatus;
  /** What doctor saw; never a secret. */
  readonly detail: string;
  /** What to do; present on every warn and fail. */
  readonly fix?: string;
}

export interface DoctorReport {
  /** True when no check is warn or fail. */
  readonly ok: boolean;
  /** How many checks are warn or fail. */
  readonly findings: number;
  /** The jobs whose storage permissions were checked (see DoctorJob). */
  readonly jobs: readonly DoctorJob[];
  readonly checks: readonly Check[];
}

/**
 * Which jobs the config's credentials serve. One config can serve every job (`all`, one
 * host or the daemon); where each job runs with its own config and credentials (the
 * Kubernetes CronJobs, the systemd units), doctor checks each config for its own job.
 */
export const DOCTOR_JOBS = ['all', 'backup', 'verify', 'lifecycle', 'vault-backup'] as const;
export type DoctorJob = (typeof DOCTOR_JOBS)[number];

/** True for the statuses that count as findings. */
export function isFinding(status: CheckStatus): boolean {
  return status === 'warn' || status === 'fail';
}

/** A check; `fix` only when given, so JSON output has no `"fix": undefined`. */
export function check(id: string, title: string, status: CheckStatus, detail: string, fix?: string): Check {
  return fix === undefined ? { id, title, status, detail } : { id, title, status, detail, fix };
}

/** The command a message tells the reader to run (`run \`chmod 600 FILE\``), as a fix. */
export function fixIn(message: string, otherwise: string): string {
  const command = /run `([^`]+)`/.exec(message)?.[1];
  return command === undefined ? otherwise : `run \`${command}\``;
}
