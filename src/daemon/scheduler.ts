import { ErrorCode, isLetheError, LetheError } from '../errors/index.ts';
import type { Logger } from '../log/index.ts';
import type { DaemonJob, DaemonRun, JsonObject, Vault } from '../vault/index.ts';
import type { JobOutcome } from './jobs.ts';
import type { Schedule } from './schedule.ts';

/**
 * The daemon's scheduler: which slot of which job this process runs, and when.
 *
 * The vault decides (see vault/daemon-runs.ts): each (job, slot) is one row, inserted by
 * the daemon that runs it, so N daemons on one vault run each slot exactly once. A process
 * runs one job at a time (its heap is bounded, see bin/lethe.js), so with several
 * replicas the jobs spread over them. A running row's heartbeat is renewed every quarter
 * lease; a daemon cut off from the vault for half a lease aborts its own run, and after a
 * whole lease without heartbeat another daemon takes the run over, so a run is never
 * carried out twice at once.
 */

export interface ScheduledJob {
  readonly job: DaemonJob;
  readonly schedule: Schedule;
}

/** A finished run, as the scheduler reports it to metrics and alerts. */
export interface RunReport {
  readonly job: DaemonJob;
  readonly slot: Date;
  readonly state: 'ok' | 'failed' | 'skipped';
  readonly code: string | null;
  readonly message: string | null;
  readonly durationSeconds: number;
  readonly outcome: JobOutcome | null;
  readonly takenOver: boolean;
}

export interface SchedulerOptions {
  readonly vault: Vault;
  readonly jobs: readonly ScheduledJob[];
  /** Who this daemon is in `daemon_runs.owner` (host:pid:random). */
  readonly owner: string;
  readonly leaseSeconds: number;
  readonly log: Logger;
  /** Runs one job; its errors make the run failed. */
  readonly run: (job: DaemonJob, signal: AbortSignal) => Promise<JobOutcome>;
  readonly onFinished?: (report: RunReport) => void;
  /** How often the vault is asked what is due. Default 1 s. */
  readonly tickMs?: number;
  readonly now?: () => Date;
}

export class Scheduler {
  readonly #o: SchedulerOptions;
  /** Slots before this were never this daemon's concern: with no recorded run, nothing before start is "missed". */
  readonly #startedAt: Date;
  #timer: NodeJS.Timeout | undefined;
  #stopping = false;
  #ticking: Promise<void> | undefined;
  #current: { job: DaemonJob; slot: Date; controller: AbortController; done: Promise<void> } | undefined;
  #lastTickOk: Date | null = null;
  #lastTickError: string | null = null;

  constructor(options: SchedulerOptions) {
    this.#o = options;
    this.#startedAt = this.#now();
  }

  #now(): Date {
    return this.#o.now?.() ?? new Date();
  }

  /** Starts ticking. */
  start(): void {
    const tick = (): void => {
      if (this.#stopping) return;
      this.#ticking = this.tick().finally(() => {
        this.#ticking = undefined;
        if (!this.#stopping) this.#timer = setTimeout(tick, this.#o.tickMs ?? 1000);
      });
    };
    tick();
  }

  /** The job this process is running, if any. */
  get running(): { job: DaemonJob; slot: Date } | undefined {
    return this.#current === undefined ? undefined : { job: this.#current.job, slot: this.#current.slot };
  }

  /** When the vault last answered a tick, and the last tick's error if it did not. */
  get health(): { lastTickOk: Date | null; lastTickError: string | null } {
    return { lastTickOk: this.#lastTickOk, lastTickError: this.#lastTickError };
  }

  /**
   * One pass: when idle, finds the job whose due slot (or stale run) is oldest, claims it
   * in the vault and runs it. Never throws; a vault that cannot be reached is logged and
   * retried on the next tick.
   */
  async tick(): Promise<void> {
    if (this.#current !== undefined || this.#stopping) return;
    try {
      const now = this.#now();
      const last = await this.#o.vault.lastDaemonSlots();
      this.#lastTickOk = new Date();
      this.#lastTickError = null;
      const candidates: { job: ScheduledJob; due: Date; missed: Date[]; more: boolean; order: number }[] = [];
      for (const job of this.#o.jobs) {
        const recorded = last.get(job.job);
        if (recorded?.state === 'running') {
          // Another daemon runs it; worth a claim only once its heartbeat looks stale.
          const staleAt = recorded.heartbeatAt.getTime() + this.#o.leaseSeconds * 1000;
          if (now.getTime() >= staleAt) candidates.push({ job, due: recorded.slot, missed: [], more: false, order: recorded.slot.getTime() });
          continue;
        }
        const floor = recorded?.slot ?? this.#startedAt;
        const { slots, more } = job.schedule.slotsBetween(floor, now);
        const due = slots.pop();
        if (due !== undefined) candidates.push({ job, due, missed: slots, more, order: due.getTime() });
      }
      candidates.sort((a, b) => a.order - b.order);
      for (const c of candidates) {
        const claim = await this.#o.vault.claimDaemonSlot({
          job: c.job.job,
          due: c.due,
          missed: c.missed,
          missedMore: c.more,
          owner: this.#o.owner,
          leaseSeconds: this.#o.leaseSeconds,
        });
        if (claim.kind !== 'run') continue;
        if (claim.skipped > 0) {
          this.#o.log.warn({ job: c.job.job, slot: claim.run.slot.toISOString(), skipped: claim.skipped }, 'earlier slots were missed; running the newest once');
        }
        if (claim.takenOver) {
          this.#o.log.warn(
            { job: c.job.job, slot: claim.run.slot.toISOString(), attempts: claim.run.attempts },
            `taking over a run whose daemon stopped renewing its heartbeat ${this.#o.leaseSeconds} s ago`,
          );
        }
        this.#execute(claim.run, claim.takenOver);
        return;
      }
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      if (this.#lastTickError !== message) this.#o.log.error({ err }, 'daemon: cannot reach the vault to schedule jobs; retrying');
      this.#lastTickError = message;
    }
  }

  #execute(run: DaemonRun, takenOver: boolean): void {
    const controller = new AbortController();
    const key = { job: run.job, slot: run.slot, owner: this.#o.owner };
    const log = this.#o.log.child({ job: run.job, slot: run.slot.toISOString() });
    const started = performance.now();
    let lastBeat = Date.now();
    const beatMs = Math.max(1000, (this.#o.leaseSeconds * 1000) / 4);
    const heartbeat = setInterval(() => {
      this.#o.vault.heartbeatDaemonRun(key).then(
        (mine) => {
          lastBeat = Date.now();
          if (!mine) {
            controller.abort(new LetheError(ErrorCode.JOB_LOCKED, `another daemon took over the ${run.job} run of ${run.slot.toISOString()}: stopping this one`));
          }
        },
        (err: unknown) => {
          if (Date.now() - lastBeat > (this.#o.leaseSeconds * 1000) / 2) {
            controller.abort(
              new LetheError(
                ErrorCode.VAULT,
                `cannot renew the ${run.job} run's heartbeat in the vault for ${Math.round((Date.now() - lastBeat) / 1000)} s: ` +
                  'stopping it before another daemon takes it over',
                { cause: err },
              ),
            );
          }
        },
      );
    }, beatMs);
    log.info({ takenOver }, 'job started');
    const done = (async () => {
      let outcome: JobOutcome | null = null;
      let state: 'ok' | 'failed' | 'skipped';
      let code: string | null;
      let message: string | null;
      try {
        outcome = await this.#o.run(run.job, controller.signal);
        state = outcome.state;
        code = outcome.code ?? null;
        message = outcome.message ?? null;
      } catch (err) {
        const reason: unknown = controller.signal.aborted ? controller.signal.reason : undefined;
        const failure = isLetheError(reason) ? reason : err;
        code = isLetheError(failure) ? failure.code : 'UNEXPECTED';
        message = failure instanceof Error ? failure.message : String(failure);
        // A job another run holds the lock of (a manual `lethe backup`) did not fail: it waits for the next slot.
        state = code === ErrorCode.JOB_LOCKED && !controller.signal.aborted ? 'skipped' : 'failed';
        if (state === 'failed') log.error({ code, err: failure }, 'job failed');
        else log.warn({ code }, message);
      } finally {
        clearInterval(heartbeat);
      }
      const durationSeconds = (performance.now() - started) / 1000;
      const details: JsonObject = { ...(outcome?.details ?? {}), durationSeconds, owner: this.#o.owner };
      try {
        const recorded = await this.#o.vault.finishDaemonRun(key, {
          state,
          ...(code === null ? {} : { errorCode: code }),
          ...(message === null ? {} : { errorMessage: message }),
          details,
        });
        if (!recorded) log.warn('the run was taken over by another daemon before it finished; its record is theirs');
      } catch (err) {
        log.error({ err }, 'could not record the end of the run in the vault; another daemon will take the slot over after the lease');
      }
      log.info({ state, code, durationSeconds }, 'job finished');
      this.#o.onFinished?.({ job: run.job, slot: run.slot, state, code, message, durationSeconds, outcome, takenOver });
    })().finally(() => {
      this.#current = undefined;
    });
    this.#current = { job: run.job, slot: run.slot, controller, done };
  }

  /**
   * Stops taking work; waits for the running job up to `deadlineMs`, then aborts it and waits
   * for it to record its end. Resolves when nothing runs.
   */
  async stop(deadlineMs: number): Promise<{ aborted: boolean }> {
    this.#stopping = true;
    clearTimeout(this.#timer);
    await this.#ticking;
    const current = this.#current;
    if (current === undefined) return { aborted: false };
    let timer: NodeJS.Timeout | undefined;
    const finished = await Promise.race([
      current.done.then(() => true),
      new Promise<false>((resolve) => {
        timer = setTimeout(() => resolve(false), deadlineMs);
      }),
    ]);
    clearTimeout(timer);
    if (finished) return { aborted: false };
    this.#o.log.warn({ job: current.job }, 'shutdown deadline reached: aborting the running job');
    current.controller.abort(new LetheError(ErrorCode.ABORTED, `the daemon stopped (SIGTERM) and the ${current.job} run passed daemon.shutdownSeconds: aborted cleanly`));
    await current.done;
    return { aborted: true };
  }
}
