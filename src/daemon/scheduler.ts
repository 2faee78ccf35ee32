import { ErrorCode, isLetheError, LetheError, scrubSecrets } from '../errors/index.ts';
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
  /** performance.now() of the last tick the vault answered. */
  #lastTickOk: number | null = null;
  #lastTickError: string | null = null;
  /** When a job whose lock was held may be tried again (performance.now()). */
  readonly #retryAt = new Map<DaemonJob, number>();

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

  /** True once {@link stop} was called: nothing new starts. */
  get stopping(): boolean {
    return this.#stopping;
  }

  /** The job this process is running, if any. */
  get running(): { job: DaemonJob; slot: Date } | undefined {
    return this.#current === undefined ? undefined : { job: this.#current.job, slot: this.#current.slot };
  }

  /**
   * Whether the scheduler is alive: the vault answered a tick in the last `withinMs` (or the
   * process is busy running a job, when it does not tick), and the last tick's error if any.
   */
  healthy(withinMs: number): { ok: boolean; error: string | null } {
    const fresh = this.#lastTickOk !== null && performance.now() - this.#lastTickOk < withinMs;
    return { ok: this.#current !== undefined || fresh, error: this.#lastTickError };
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
      this.#lastTickOk = performance.now();
      this.#lastTickError = null;
      const candidates: { job: ScheduledJob; due: Date; missed: Date[]; more: boolean; order: number }[] = [];
      for (const job of this.#o.jobs) {
        if ((this.#retryAt.get(job.job) ?? 0) > performance.now()) continue;
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
        if (this.stopping) {
          // SIGTERM came while the claim was in flight: give the slot back for another daemon.
          await this.#o.vault.releaseDaemonSlot({ job: claim.run.job, slot: claim.run.slot, owner: this.#o.owner });
          return;
        }
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
      if (this.#lastTickError !== message) this.#o.log.error({ err }, 'daemon: cannot schedule jobs; retrying');
      this.#lastTickError = message;
    }
  }

  #execute(run: DaemonRun, takenOver: boolean): void {
    const controller = new AbortController();
    const key = { job: run.job, slot: run.slot, owner: this.#o.owner };
    const log = this.#o.log.child({ job: run.job, slot: run.slot.toISOString() });
    const started = performance.now();
    const leaseMs = this.#o.leaseSeconds * 1000;
    // The watchdog: a heartbeat every lease/4 (one at a time); whatever the heartbeats do
    // (fail, or hang on a cut-off network), once lease/2 passes without one succeeding the
    // run is aborted, well before another daemon may take it over at a full lease.
    let lastBeat = performance.now();
    let beating = false;
    let finishing = false;
    const watchdog = setInterval(
      () => {
        const silentMs = performance.now() - lastBeat;
        if (!finishing && silentMs > leaseMs / 2 && !controller.signal.aborted) {
          controller.abort(
            new LetheError(
              ErrorCode.VAULT,
              `cannot renew the ${run.job} run's heartbeat in the vault for ${Math.round(silentMs / 1000)} s: ` +
                'stopping it before another daemon takes it over',
            ),
          );
        }
        if (beating || performance.now() - lastBeat < leaseMs / 4) return;
        beating = true;
        this.#o.vault.heartbeatDaemonRun(key).then(
          (mine) => {
            beating = false;
            lastBeat = performance.now();
            if (!mine && !finishing) {
              controller.abort(new LetheError(ErrorCode.JOB_LOCKED, `another daemon took over the ${run.job} run of ${run.slot.toISOString()}: stopping this one`));
            }
          },
          () => {
            beating = false;
          },
        );
      },
      Math.min(1000, Math.max(100, leaseMs / 8)),
    );
    log.info({ takenOver }, 'job started');
    const done = (async () => {
      let outcome: JobOutcome | null = null;
      let state: 'ok' | 'failed' | 'skipped';
      let code: string | null;
      let message: string | null;
      try {
        outcome = await this.#o.run(run.job, controller.signal);
        state = outcome.state;
        code = outcome.code ?? (state === 'failed' ? 'UNEXPECTED' : null);
        message = outcome.message ?? null;
      } catch (err) {
        const reason: unknown = controller.signal.aborted ? controller.signal.reason : undefined;
        const failure = isLetheError(reason) ? reason : err;
        code = isLetheError(failure) ? failure.code : 'UNEXPECTED';
        message = scrubSecrets(failure instanceof Error ? failure.message : String(failure));
        state = 'failed';
        if (code === ErrorCode.JOB_LOCKED && !controller.signal.aborted) {
          // Another run holds the job's lock (a manual run, or lifecycle and backup, which
          // share one): this slot did not run. Give it back and try again a little later,
          // until a newer slot stands in for it.
          clearInterval(watchdog);
          log.warn({ retryInSeconds: LOCKED_RETRY_MS / 1000 }, `${message}: giving the slot back to try again`);
          this.#retryAt.set(run.job, performance.now() + LOCKED_RETRY_MS);
          await this.#o.vault.releaseDaemonSlot(key).catch((e: unknown) => log.warn({ err: e }, 'could not give the slot back; it is taken over after the lease'));
          return;
        }
        log.error({ code, err: failure }, 'job failed');
      }
      finishing = true;
      const durationSeconds = (performance.now() - started) / 1000;
      const details: JsonObject = { ...(outcome?.details ?? {}), durationSeconds, owner: this.#o.owner };
      // The heartbeat goes on until the end is recorded: a finished run whose record failed
      // once must not look dead and be run again by another daemon.
      const recorded = await this.#record(key, { state, ...(code === null ? {} : { errorCode: code }), ...(message === null ? {} : { errorMessage: message }), details }, leaseMs / 2, log);
      clearInterval(watchdog);
      if (recorded === false) log.warn('the run was taken over by another daemon before it finished; its record is theirs');
      log.info({ state, code, durationSeconds }, 'job finished');
      this.#o.onFinished?.({ job: run.job, slot: run.slot, state, code, message, durationSeconds, outcome, takenOver });
    })().finally(() => {
      clearInterval(watchdog);
      this.#current = undefined;
    });
    this.#current = { job: run.job, slot: run.slot, controller, done };
  }

  /** Records a run's end, retrying for up to `withinMs`; null when it could not be recorded. */
  async #record(
    key: { job: DaemonJob; slot: Date; owner: string },
    outcome: Parameters<Vault['finishDaemonRun']>[1],
    withinMs: number,
    log: Logger,
  ): Promise<boolean | null> {
    const deadline = performance.now() + withinMs;
    for (let delay = 250; ; delay = Math.min(delay * 2, 5000)) {
      try {
        return await this.#o.vault.finishDaemonRun(key, outcome);
      } catch (err) {
        if (performance.now() + delay > deadline) {
          log.error({ err }, 'could not record the end of the run in the vault; another daemon takes the slot over after the lease');
          return null;
        }
        await new Promise((resolve) => setTimeout(resolve, delay));
      }
    }
  }

  /**
   * Stops taking work; waits for the running job up to `deadlineMs`, then aborts it and waits
   * for it to record its end (bounded too: a vault that stopped answering must not keep the
   * process up; its session locks go with the process). Resolves when nothing more will run.
   */
  async stop(deadlineMs: number): Promise<{ aborted: boolean }> {
    this.#stopping = true;
    clearTimeout(this.#timer);
    await within(this.#ticking ?? Promise.resolve(), STOP_WAIT_MS);
    const current = this.#current;
    if (current === undefined) return { aborted: false };
    if (await within(current.done, deadlineMs)) return { aborted: false };
    this.#o.log.warn({ job: current.job }, 'shutdown deadline reached: aborting the running job');
    current.controller.abort(new LetheError(ErrorCode.ABORTED, `the daemon stopped (SIGTERM) and the ${current.job} run passed daemon.shutdownSeconds: aborted cleanly`));
    if (!(await within(current.done, STOP_WAIT_MS))) {
      this.#o.log.error({ job: current.job }, `the aborted job did not end within ${STOP_WAIT_MS / 1000} s; exiting anyway (its locks are released with the process)`);
    }
    return { aborted: true };
  }
}

/** How long a job whose lock another run holds waits before its slot is tried again. */
const LOCKED_RETRY_MS = 15_000;
/** How long stopping waits for a claim in flight, and for an aborted job to end. */
const STOP_WAIT_MS = 30_000;

/** True when `promise` settles within `ms`. */
async function within(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const settled = await Promise.race([
    promise.then(
      () => true,
      () => true,
    ),
    new Promise<false>((resolve) => {
      timer = setTimeout(() => resolve(false), ms);
    }),
  ]);
  clearTimeout(timer);
  return settled;
}
