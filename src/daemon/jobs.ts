import { randomInt } from 'node:crypto';
import { ErrorCode } from '../errors/index.ts';
import { backup, lifecycleApply, vaultBackup, verify } from '../jobs/tasks.ts';
import type { Runtime } from '../jobs/runtime.ts';
import type { VerifyResult } from '../restore/index.ts';
import type { DaemonJob, JsonObject } from '../vault/index.ts';

/**
 * What the daemon runs for each scheduled job: the same task functions the CLI commands
 * call (src/jobs/tasks.ts), so a scheduled backup is exactly `lethe backup`.
 */

/** How a job's run ended. A thrown error is a failed run too (see scheduler.ts). */
export interface JobOutcome {
  readonly state: 'ok' | 'failed' | 'skipped';
  readonly code?: string;
  readonly message?: string;
  /** Facts recorded with the run in the vault and shown on the status page; never secret. */
  readonly details: JsonObject;
  /** A restore drill's result, for metrics and the drill_failed alert. */
  readonly drill?: VerifyResult;
}

export type JobRunner = (rt: Runtime, context: { actor: string; signal: AbortSignal }) => Promise<JobOutcome>;

/** The code a drill that ran and found problems fails with. */
export const DRILL_FAILED = 'VERIFY_FAILED';

async function drill(rt: Runtime, snapshot: string, context: { actor: string; signal: AbortSignal }): Promise<JobOutcome> {
  const result = await verify(rt, { snapshot, actor: context.actor, signal: context.signal });
  // RPO as the drill saw it: how old the newest restorable point was when the drill ended.
  const vault = await rt.vault();
  const newest = await vault.latestCompleteSnapshot();
  const now = await vault.now();
  const details: JsonObject = {
    snapshotId: result.snapshotId,
    ok: result.ok,
    cells: result.cells,
    cellsVerified: result.cellsVerified,
    cellsShredded: result.cellsShredded,
    cellsFailed: result.cellsFailed,
    rows: result.rows,
    findings: result.findings.length,
    rtoSeconds: result.durationMs / 1000,
    rpoSeconds: newest === null ? null : Math.max(0, (now.getTime() - newest.startedAt.getTime()) / 1000),
    newestSnapshotId: newest?.id ?? null,
    dataAgeSeconds: result.dataAgeSeconds,
  };
  if (result.ok) return { state: 'ok', details, drill: result };
  const codes = [...new Set(result.findings.map((f) => f.code))].join(', ');
  return {
    state: 'failed',
    code: DRILL_FAILED,
    message:
      `the restore drill of snapshot ${result.snapshotId} found ${result.findings.length} problem(s) (${codes}): ` +
      `run \`lethe verify --snapshot ${result.snapshotId}\` to see each one, then runbooks/backup-alert.md`,
    details,
    drill: result,
  };
}

export const JOB_RUNNERS: Readonly<Record<DaemonJob, JobRunner>> = {
  async backup(rt, context) {
    const r = await backup(rt, context);
    // The snapshot is complete, but files its rows point at are not in it: an alert, not a crash.
    const findings =
      r.blobs.findings === 0
        ? {}
        : {
            code: 'BACKUP_FINDINGS',
            message:
              `snapshot ${r.snapshotId} is complete but ${r.blobs.findings} file(s) outside the database could not be backed up ` +
              '(missing, unreadable or outside their store): run `lethe backup --json` or read the backup\'s audit entry for each row\'s key',
          };
    return {
      state: r.blobs.findings === 0 ? 'ok' : 'failed',
      ...findings,
      details: {
        blobFindings: r.blobs.findings,
        snapshotId: r.snapshotId,
        cells: r.cells,
        cellsWritten: r.cellsWritten,
        cellsReused: r.cellsReused,
        rows: r.rows,
        bytesPlain: r.bytesPlain,
        bytesStored: r.bytesStored,
        fullRead: r.fullRead,
        durationMs: r.durationMs,
      },
    };
  },

  verify: (rt, context) => drill(rt, 'latest', context),

  async verifyOlder(rt, context) {
    const vault = await rt.vault();
    const complete = await vault.listSnapshots({ limit: 1000 });
    const older = complete.slice(1);
    const chosen = older[older.length === 0 ? 0 : randomInt(older.length)];
    if (chosen === undefined) {
      return {
        state: 'skipped',
        code: ErrorCode.SNAPSHOT_NOT_FOUND,
        message: `there is no complete snapshot older than the newest (${complete.length} complete): nothing to drill yet`,
        details: { completeSnapshots: complete.length },
      };
    }
    return drill(rt, chosen.id, context);
  },

  async lifecycle(rt, context) {
    const r = await lifecycleApply(rt, { actor: context.actor, now: () => new Date(), signal: context.signal });
    return {
      state: 'ok',
      details: {
        actions: r.plan.actions.length,
        requestsFinished: r.requestsFinished,
        cellsRewrapped: r.cellsRewrapped,
        keysDestroyed: r.keysDestroyed + r.requestKeysDestroyed,
        snapshotsExpired: r.snapshotsExpired,
        objectsDeleted: r.objectsDeleted,
        vaultBackup: r.vaultBackup,
        durationMs: r.durationMs,
      },
    };
  },

  async vaultBackup(rt, context) {
    const r = await vaultBackup(rt, context);
    return { state: 'ok', details: { key: r.key, size: r.size, sha256: r.sha256 } };
  },
};
