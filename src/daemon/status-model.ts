/**
 * What the daemon's status page shows: plain data, collected from the vault by the daemon
 * and rendered by `status-page.ts`. Kept apart from the renderer so that the collector can
 * import the types without it.
 *
 * The model carries no secrets and must never be given any: no key material, tokens,
 * passwords or connection strings. Every string in it may come from the vault or a config
 * and is treated by the renderer as untrusted text.
 */

/** Snapshot states the page knows; anything else is shown as written. */
// `string & {}` keeps the known states visible to editors without refusing others.
export type StatusSnapshotState = 'running' | 'complete' | 'abandoned' | (string & {});

/** One snapshot in the timeline. */
export interface StatusSnapshot {
  readonly id: string;
  readonly state: StatusSnapshotState;
  readonly startedAt: Date;
  readonly completedAt: Date | null;
  /** The chat store's consistent point: what a restore of this snapshot brings back. */
  readonly consistentAt: Date | null;
  /** Bytes before encryption and compression. */
  readonly plainBytes: number | null;
  /** Bytes written to the object store by this snapshot. */
  readonly storedBytes: number | null;
  /** Cells encrypted and uploaded by this snapshot. */
  readonly cellsWritten: number | null;
  /** Cells referenced from earlier snapshots, not uploaded again. */
  readonly cellsReused: number | null;
  readonly durationSeconds: number | null;
}

/** One restore drill (verify of a snapshot). */
export interface StatusDrill {
  readonly snapshotId: string;
  readonly startedAt: Date;
  readonly ok: boolean;
  /** The drill's duration: how long a restore took. */
  readonly rtoSeconds: number;
  /** Age of the drilled snapshot's consistent point when the drill ran. */
  readonly rpoSeconds: number | null;
  readonly findings: number;
  readonly summary: string;
}

/** The last recorded run of a scheduled job. */
export interface StatusScheduleRun {
  readonly slot: Date;
  readonly state: 'running' | 'ok' | 'failed' | 'skipped';
  readonly finishedAt: Date | null;
  /** The error code of a failed run. */
  readonly code: string | null;
}

/** One job's schedule. */
export interface StatusSchedule {
  readonly job: string;
  readonly cron: string;
  /** IANA time zone the cron expression is read in; next runs are shown in it. */
  readonly timezone: string;
  readonly next: Date | null;
  readonly last: StatusScheduleRun | null;
}

/** An active legal hold. */
export interface StatusHold {
  readonly caseId: string;
  readonly tenant: string;
  readonly scope: string;
  readonly placedAt: Date;
  readonly placedBy: string;
  readonly reason: string;
}

/** A deletion request not yet carried out: awaiting its second approver, or approved and awaiting execution. */
export interface StatusPendingErasure {
  readonly id: string;
  /**
   * What it waits for: `pending`, a second approver (assumed when absent); `approved`, the
   * next `lethe lifecycle apply` to carry it out.
   */
  readonly status?: 'pending' | 'approved';
  /** Null for a person across every tenant (`erase request --subject U --all-tenants`). */
  readonly tenant: string | null;
  readonly scope: string;
  readonly requestedAt: Date;
  readonly requestedBy: string;
  readonly ageDays: number;
  /** Waiting longer than `alerts.erasePendingDays`. */
  readonly overdue: boolean;
}

/** The audit chain's last verification. `ok: null` means never checked. */
export interface StatusAudit {
  readonly ok: boolean | null;
  readonly checkedAt: Date | null;
  readonly entries: number | null;
  readonly message: string | null;
}

/** A failed job run, with the error code and the fix its error names. */
export interface StatusFailure {
  readonly job: string;
  readonly at: Date;
  readonly code: string;
  readonly message: string;
  readonly fix: string | null;
}

/** Everything the status page shows, as of `generatedAt`. Lists are newest first. */
export interface StatusModel {
  readonly generatedAt: Date;
  /** A name for this deployment or replica, shown in the title. */
  readonly instance: string;
  /** lethe's version. */
  readonly version: string;
  /** Newest first, at most about 30. */
  readonly snapshots: readonly StatusSnapshot[];
  /** Newest first. */
  readonly drills: readonly StatusDrill[];
  readonly rpo: {
    readonly seconds: number | null;
    readonly objectiveSeconds: number | null;
    readonly newestConsistentAt: Date | null;
  };
  readonly rto: { readonly seconds: number | null; readonly objectiveSeconds: number | null };
  readonly schedules: readonly StatusSchedule[];
  readonly holds: readonly StatusHold[];
  readonly pendingErasures: readonly StatusPendingErasure[];
  readonly audit: StatusAudit;
  /** Newest first. */
  readonly failures: readonly StatusFailure[];
}
