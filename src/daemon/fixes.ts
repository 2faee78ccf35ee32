import { ErrorCode } from '../errors/index.ts';
import { DRILL_FAILED } from './jobs.ts';

/**
 * The fix to show beside a failed run on the status page and in alerts. lethe's error
 * messages already end with what to do ("…: run `chmod 600 …`"); this adds, per code, where
 * to look next when the message alone does not settle it.
 */
const FIXES: Readonly<Record<string, string>> = {
  [ErrorCode.CONFIG_INVALID]: 'correct the config field the message names; `lethe doctor` checks the whole config',
  [ErrorCode.CONFIG_SECRET_MISSING]: 'set the environment variable the message names in the daemon\'s environment',
  [ErrorCode.MAPPING_INVALID]: 'fix the mapping (docs/mapping.md) to match the chat store\'s schema',
  [ErrorCode.TABLE_UNMAPPED]: 'map the new table or list it as system data (docs/mapping.md)',
  [ErrorCode.DATABASE]: 'check that the database the message names is up and reachable: `lethe doctor`',
  [ErrorCode.VAULT]: 'check the vault database (`lethe doctor`); run `lethe init` if it is not initialised',
  [ErrorCode.MASTER_KEY]: 'make the master key file readable by the daemon\'s user only (mode 0600)',
  [ErrorCode.SIGNING_KEY]: 'check the signing key file the message names (mode 0600, registered by `lethe init`)',
  [ErrorCode.STORAGE]: 'check the object store: endpoint, credentials and bucket (`lethe doctor`)',
  [ErrorCode.INTEGRITY]: 'an object in the bucket changed: run `lethe verify` on the snapshot and follow runbooks/backup-alert.md',
  [ErrorCode.MANIFEST_INVALID]: 'a manifest failed its checks: follow runbooks/backup-alert.md',
  [ErrorCode.JOB_LOCKED]: 'another run held the job lock; the next slot runs when it is free',
  [ErrorCode.AUDIT_CHAIN]: 'run `lethe audit verify` and follow runbooks/backup-alert.md',
  [ErrorCode.ABORTED]: 'the daemon stopped during the run; the next slot runs it again',
  [ErrorCode.EMBEDDED]: 'look at the embedded PostgreSQL\'s log beside its data directory',
  DAEMON_DIED: 'the daemon died during this run each time it was tried: read the daemons\' logs around it (out of memory?) and `lethe doctor`',
  [DRILL_FAILED]: 'run `lethe verify --snapshot ID` to see each finding, then follow runbooks/backup-alert.md',
};

/** The fix for a failure with `code`; null when lethe knows none beyond the message. */
export function fixFor(code: string): string | null {
  return FIXES[code] ?? null;
}
