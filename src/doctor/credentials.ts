import { check, type Check, type DoctorJob } from './types.ts';

/**
 * What each job may do in the object store, and the verdict on what a set of credentials
 * could do when probed. Pure: the probes live in storage.ts.
 */

/** The object operations lethe's jobs use (S3: ListBucket, PutObject, GetObject, DeleteObject). */
export const STORAGE_OPS = ['list', 'put', 'get', 'delete'] as const;
export type StorageOp = (typeof STORAGE_OPS)[number];

/** The permission an operation needs on S3, for fixes. */
export const S3_ACTION: Readonly<Record<StorageOp, string>> = {
  list: 's3:ListBucket',
  put: 's3:PutObject',
  get: 's3:GetObject',
  delete: 's3:DeleteObject',
};

interface JobAccess {
  /** Operations the job cannot run without. */
  readonly needs: readonly StorageOp[];
  /** Operations the job never uses and whose loss would hurt: its credentials should be refused them. */
  readonly mustNot: readonly StorageOp[];
  /** Why, for messages. */
  readonly why: string;
}

/**
 * Each job's access, from what its code calls: the backup only writes (a stolen backup
 * credential can neither read old data nor destroy it); verify and restore only read; only
 * lifecycle deletes. Listing is needed by lifecycle only, and harmless elsewhere.
 */
export const JOB_ACCESS: Readonly<Record<DoctorJob, JobAccess>> = {
  all: {
    needs: ['list', 'put', 'get', 'delete'],
    mustNot: [],
    why: 'one config serving every job needs what they need together',
  },
  backup: { needs: ['put'], mustNot: ['get', 'delete'], why: 'the backup only writes' },
  verify: { needs: ['get'], mustNot: ['put', 'delete'], why: 'verify and restore only read' },
  lifecycle: { needs: ['list', 'get', 'put', 'delete'], mustNot: [], why: 'lifecycle lists, reads, writes tombstones and deletes' },
  'vault-backup': { needs: ['put'], mustNot: ['get', 'delete'], why: '`lethe vault backup` only writes (lifecycle deletes old vault backups)' },
};

/** What one probe found. */
export interface ProbeOutcome {
  readonly op: StorageOp;
  readonly result: 'allowed' | 'denied' | 'unknown';
  /** What was tried and what came back (for unknown: why nothing could be tried or told). */
  readonly detail: string;
}

/** One set of credentials and the jobs that use it (today a config names one set for its jobs). */
export interface CredentialSet {
  /** For ids and titles: `storage`. */
  readonly name: string;
  readonly job: DoctorJob;
  /** `s3://bucket/prefix` or the directory, for fixes. */
  readonly where: string;
  readonly kind: 's3' | 'filesystem';
}

/**
 * Checks for one credential set: each operation the job needs and was refused is a failure,
 * each one it must not have and was allowed is a warning, and for `all` a note that one set
 * cannot show a single job's limits (not a finding).
 */
export function judgeCredentials(set: CredentialSet, outcomes: readonly ProbeOutcome[]): Check[] {
  const access = JOB_ACCESS[set.job];
  const checks: Check[] = [];
  const grant = (op: StorageOp): string =>
    set.kind === 's3'
      ? `${S3_ACTION[op]} on ${set.where}*`
      : `${op === 'list' ? 'read' : op === 'get' ? 'read' : 'write'} access to ${set.where} for the user lethe runs as`;
  for (const op of STORAGE_OPS) {
    const outcome = outcomes.find((o) => o.op === op);
    const id = `${set.name}.credentials.${op}`;
    const title = `${set.name} credentials: ${op}`;
    if (outcome === undefined || outcome.result === 'unknown') {
      checks.push(check(id, title, 'unknown', outcome?.detail ?? 'not probed'));
      continue;
    }
    const needed = access.needs.includes(op);
    const forbidden = access.mustNot.includes(op);
    if (outcome.result === 'denied') {
      checks.push(
        needed
          ? check(id, title, 'fail', `refused: ${outcome.detail}`, `grant ${grant(op)}: the ${set.job === 'all' ? 'jobs need' : `${set.job} job needs`} it`)
          : check(id, title, 'ok', `refused, as it should be: ${outcome.detail}`),
      );
    } else {
      checks.push(
        forbidden
          ? check(
              id,
              title,
              'warn',
              `allowed, but ${access.why}: ${outcome.detail}`,
              `remove ${set.kind === 's3' ? S3_ACTION[op] : `${op} access`} from these credentials, so that stolen ${set.job} credentials cannot ${op === 'delete' ? 'destroy backups' : op === 'get' ? 'read backups' : 'write objects'}`,
            )
          : check(id, title, 'ok', `allowed: ${outcome.detail}`),
      );
    }
  }
  if (set.job === 'all') {
    checks.push(
      check(
        `${set.name}.credentials.scope`,
        `${set.name} credentials: least privilege`,
        'unknown',
        'one credential set serves every job here, so it must list, put, get and delete; whether the backup ' +
          "job's own credentials are refused get and delete can be shown only with that job's config: run " +
          '`lethe doctor --job backup --config <its config>` (and --job verify, lifecycle) where each job has its own',
      ),
    );
  }
  return checks;
}
