import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { DaemonConfig } from '../config/index.ts';
import type { Logger } from '../log/index.ts';
import { DAEMON_JOBS, type DaemonFacts, type DaemonJob, type SnapshotRecord, type Vault, type Verification } from '../vault/index.ts';
import { fixFor } from './fixes.ts';
import type { Schedule } from './schedule.ts';
import type { StatusDrill, StatusModel, StatusSnapshot } from './status-model.ts';

/**
 * What the daemon knows about the deployment, read from the vault on demand: the values
 * /metrics exports and the status page shows. Every replica reads the same vault, so every
 * replica reports the same figures (only lethe_job_duration_seconds is per process: it
 * observes the runs this process carried out).
 */

/** The audit chain's last check, done in the background (it walks the whole log). */
export interface AuditState {
  readonly ok: boolean | null;
  readonly checkedAt: Date | null;
  readonly entries: number | null;
  readonly firstBadEntry: number | null;
  readonly message: string | null;
}

/** What one scrape or page view reads: the facts, the newest snapshots and drills. */
interface Reading {
  readonly facts: DaemonFacts;
  /** The newest complete snapshot, however many failed or running ones came after it. */
  readonly newest: SnapshotRecord | null;
  readonly snapshots: readonly SnapshotRecord[];
  readonly drills: readonly Verification[];
}

const SNAPSHOTS_SHOWN = 30;
const DRILLS_SHOWN = 20;
const FAILURES_SHOWN = 10;
/** Scrapes and page views within this share one reading of the vault (and one in flight is always shared). */
const READING_TTL_MS = 5000;

function num(value: unknown): number | null {
  return typeof value === 'number' && Number.isFinite(value) ? value : null;
}

function seconds(ms: number): number {
  return Math.max(0, ms / 1000);
}

export class Observer {
  readonly registry = new Registry();
  readonly #vault: Vault;
  readonly #config: DaemonConfig;
  readonly #schedules: ReadonlyMap<DaemonJob, Schedule>;
  readonly #erasePendingDays: number;
  readonly #instance: string;
  readonly #version: string;
  readonly #duration: Histogram<'job'>;
  #audit: AuditState = { ok: null, checkedAt: null, entries: null, firstBadEntry: null, message: null };
  #reading: { at: number; value: Promise<Reading>; pending: boolean } | undefined;

  constructor(options: {
    vault: Vault;
    config: DaemonConfig;
    schedules: ReadonlyMap<DaemonJob, Schedule>;
    erasePendingDays: number;
    instance: string;
    version: string;
    log: Logger;
  }) {
    this.#vault = options.vault;
    this.#config = options.config;
    this.#schedules = options.schedules;
    this.#erasePendingDays = options.erasePendingDays;
    this.#instance = options.instance;
    this.#version = options.version;
    const registers = [this.registry];
    // Each collect() reads the shared reading; a scrape reads the vault once.
    const read = (): Promise<Reading> => this.read();
    this.#duration = new Histogram({
      name: 'lethe_job_duration_seconds',
      help: 'Wall time of scheduled job runs carried out by this daemon process.',
      labelNames: ['job'],
      buckets: [1, 5, 15, 60, 300, 900, 1800, 3600, 7200, 14_400, 43_200],
      registers,
    });
    new Gauge({
      name: 'lethe_job_last_success_timestamp_seconds',
      help: 'When each scheduled job last finished successfully (any daemon on this vault), Unix time.',
      labelNames: ['job'],
      registers,
      async collect() {
        const { facts } = await read();
        this.reset();
        for (const [job, at] of facts.lastSuccess) this.set({ job }, at.getTime() / 1000);
      },
    });
    new Counter({
      name: 'lethe_job_failures_total',
      help: 'Failed scheduled job runs recorded in the vault, by job and error code.',
      labelNames: ['job', 'code'],
      registers,
      async collect() {
        const { facts } = await read();
        this.reset();
        for (const job of DAEMON_JOBS) this.inc({ job, code: 'none' }, 0);
        for (const f of facts.failures) this.inc({ job: f.job, code: f.code }, f.count);
      },
    });
    new Gauge({
      name: 'lethe_snapshot_bytes',
      help: 'Size of the newest complete snapshot: plain (before encryption) and stored (uploaded by it), bytes.',
      labelNames: ['kind'],
      registers,
      async collect() {
        const { newest } = await read();
        this.reset();
        this.set({ kind: 'plain' }, num(newest?.stats?.['bytesPlain']) ?? NaN);
        this.set({ kind: 'stored' }, num(newest?.stats?.['bytesStored']) ?? NaN);
      },
    });
    new Gauge({
      name: 'lethe_snapshot_cells',
      help: 'Cells of the newest complete snapshot: written by it, or reused from earlier snapshots.',
      labelNames: ['state'],
      registers,
      async collect() {
        const { newest } = await read();
        this.reset();
        this.set({ state: 'written' }, num(newest?.stats?.['cellsWritten']) ?? NaN);
        this.set({ state: 'reused' }, num(newest?.stats?.['cellsReused']) ?? NaN);
      },
    });
    const rpo = (reading: Reading): number | null => this.rpoSeconds(reading);
    const auditState = (): AuditState => this.#audit;
    new Gauge({
      name: 'lethe_rpo_seconds',
      help: "Age of the newest complete snapshot's consistent point, seconds (+Inf when there is none).",
      registers,
      async collect() {
        this.set(rpo(await read()) ?? Infinity);
      },
    });
    new Gauge({
      name: 'lethe_rpo_objective_seconds',
      help: 'The recovery point objective from daemon.objectives.rpoMinutes, seconds (NaN when not set).',
      registers,
      collect() {
        const minutes = options.config.objectives.rpoMinutes;
        this.set(minutes === undefined ? NaN : minutes * 60);
      },
    });
    new Gauge({
      name: 'lethe_rto_seconds',
      help: 'Duration of the newest restore drill, seconds (NaN before the first).',
      registers,
      async collect() {
        const drill = (await read()).drills[0];
        this.set(drill === undefined ? NaN : drill.durationMs / 1000);
      },
    });
    new Gauge({
      name: 'lethe_rto_objective_seconds',
      help: 'The recovery time objective from daemon.objectives.rtoMinutes, seconds (NaN when not set).',
      registers,
      collect() {
        const minutes = options.config.objectives.rtoMinutes;
        this.set(minutes === undefined ? NaN : minutes * 60);
      },
    });
    new Gauge({
      name: 'lethe_verify_ok',
      help: 'Whether the newest restore drill passed: 1 passed, 0 failed, NaN before the first.',
      registers,
      async collect() {
        const drill = (await read()).drills[0];
        this.set(drill === undefined ? NaN : drill.ok ? 1 : 0);
      },
    });
    new Gauge({
      name: 'lethe_holds_active',
      help: 'Legal hold selectors in force.',
      registers,
      async collect() {
        this.set((await read()).facts.holdsActive);
      },
    });
    new Gauge({
      name: 'lethe_erase_requests_pending',
      help: 'Deletion requests not yet carried out (awaiting a second approver or execution).',
      registers,
      async collect() {
        this.set((await read()).facts.eraseRequestsWaiting.length);
      },
    });
    new Gauge({
      name: 'lethe_keys',
      help: 'Dimension keys in the vault by kind and state (live, or destroyed: shredded).',
      labelNames: ['kind', 'state'],
      registers,
      async collect() {
        const { facts } = await read();
        this.reset();
        for (const k of facts.keys) this.set({ kind: k.kind, state: k.state }, k.count);
      },
    });
    new Gauge({
      name: 'lethe_audit_chain_ok',
      help: "Whether the audit log's hash chain verified at its last check: 1 yes, 0 broken, NaN not checked yet.",
      registers,
      collect() {
        const { ok } = auditState();
        this.set(ok === null ? NaN : ok ? 1 : 0);
      },
    });
    new Gauge({
      name: 'lethe_audit_chain_checked_timestamp_seconds',
      help: 'When the audit chain was last checked, Unix time (NaN not yet).',
      registers,
      collect() {
        const { checkedAt } = auditState();
        this.set(checkedAt === null ? NaN : checkedAt.getTime() / 1000);
      },
    });
  }

  /** Records a run this process carried out. */
  observeRun(job: DaemonJob, durationSeconds: number): void {
    this.#duration.observe({ job }, durationSeconds);
  }

  get audit(): AuditState {
    return this.#audit;
  }

  /** Walks the audit chain and keeps the result for /metrics and the page. */
  async checkAudit(signal?: AbortSignal): Promise<AuditState> {
    const report = await this.#vault.verifyAuditChain(signal === undefined ? {} : { signal });
    const first = report.findings[0];
    this.#audit = {
      ok: report.ok,
      checkedAt: new Date(),
      entries: report.entries,
      firstBadEntry: first?.seq ?? null,
      message: first === undefined ? null : `${first.problem}${report.findings.length > 1 ? ` (and ${report.findings.length - 1} more)` : ''}`,
    };
    return this.#audit;
  }

  /** One reading of the vault, shared by whatever asks within a couple of seconds. */
  read(): Promise<Reading> {
    const now = performance.now();
    const current = this.#reading;
    if (current !== undefined && (current.pending || now - current.at < READING_TTL_MS)) return current.value;
    const reading: { at: number; value: Promise<Reading>; pending: boolean } = {
      at: now,
      pending: true,
      value: (async (): Promise<Reading> => {
        const [facts, newest, snapshots, drills] = await Promise.all([
          this.#vault.daemonFacts(),
          this.#vault.latestCompleteSnapshot(),
          this.#vault.listSnapshots({ includeIncomplete: true, limit: SNAPSHOTS_SHOWN }),
          this.#vault.listVerifications({ limit: DRILLS_SHOWN }),
        ]);
        return { facts, newest, snapshots, drills };
      })(),
    };
    this.#reading = reading;
    reading.value.then(
      () => {
        reading.pending = false;
        reading.at = performance.now();
      },
      () => {
        if (this.#reading === reading) this.#reading = undefined;
      },
    );
    return reading.value;
  }

  /** Age of the newest complete snapshot's consistent point (its start), by the vault's clock. */
  rpoSeconds(reading: Reading): number | null {
    const { newest } = reading;
    return newest === null ? null : seconds(reading.facts.now.getTime() - newest.startedAt.getTime());
  }

  get rpoObjectiveSeconds(): number | null {
    const m = this.#config.objectives.rpoMinutes;
    return m === undefined ? null : m * 60;
  }

  /** Everything the status page shows. */
  async statusModel(): Promise<StatusModel> {
    const reading = await this.read();
    const { facts, snapshots, drills } = reading;
    const [last, holds, failures] = await Promise.all([
      this.#vault.lastDaemonSlots(),
      this.#vault.listHolds(),
      this.#vault.listDaemonRuns({ state: 'failed', limit: FAILURES_SHOWN }),
    ]);
    const now = facts.now;
    const newest = reading.newest;
    const rtoObjective = this.#config.objectives.rtoMinutes;
    return {
      generatedAt: now,
      instance: this.#instance,
      version: this.#version,
      snapshots: snapshots.map((s) => toStatusSnapshot(s)),
      drills: drills.map((d) => toStatusDrill(d, snapshots)),
      rpo: { seconds: this.rpoSeconds(reading), objectiveSeconds: this.rpoObjectiveSeconds, newestConsistentAt: newest?.startedAt ?? null },
      rto: { seconds: drills[0] === undefined ? null : drills[0].durationMs / 1000, objectiveSeconds: rtoObjective === undefined ? null : rtoObjective * 60 },
      schedules: [...this.#schedules].map(([job, schedule]) => {
        const run = last.get(job);
        return {
          job,
          cron: schedule.expression,
          timezone: schedule.timezone,
          next: schedule.next(new Date()),
          last: run === undefined ? null : { slot: run.slot, state: run.state, finishedAt: run.finishedAt, code: run.errorCode },
        };
      }),
      holds: holds
        .filter((h) => h.releasedAt === null)
        .map((h) => ({
          caseId: h.caseId,
          tenant: h.tenant,
          scope: holdScope(h),
          placedAt: h.placedAt,
          placedBy: h.placedBy,
          reason: h.reason,
        })),
      pendingErasures: facts.eraseRequestsWaiting.map((r) => {
        const ageDays = Math.floor((now.getTime() - r.requestedAt.getTime()) / 86_400_000);
        return {
          id: r.id,
          tenant: r.tenant,
          scope: r.scope,
          status: r.status,
          requestedAt: r.requestedAt,
          requestedBy: r.requestedBy,
          ageDays,
          overdue: ageDays >= this.#erasePendingDays,
        };
      }),
      audit: { ok: this.#audit.ok, checkedAt: this.#audit.checkedAt, entries: this.#audit.entries, message: this.#audit.message },
      failures: failures.map((f) => ({
        job: f.job,
        at: f.finishedAt ?? f.slot,
        code: f.errorCode ?? 'UNKNOWN',
        message: f.errorMessage ?? '',
        fix: fixFor(f.errorCode ?? ''),
      })),
    };
  }
}

function holdScope(h: { user: string | null; conversation: string | null; from: Date | null; to: Date | null }): string {
  const parts = [h.user === null ? null : `user ${h.user}`, h.conversation === null ? null : `conversation ${h.conversation}`];
  const range = h.from === null && h.to === null ? null : `${h.from?.toISOString().slice(0, 10) ?? '…'} – ${h.to?.toISOString().slice(0, 10) ?? '…'}`;
  const text = [...parts, range].filter((p) => p !== null).join(', ');
  return text === '' ? 'whole tenant' : text;
}

function toStatusSnapshot(s: SnapshotRecord): StatusSnapshot {
  const stats = s.stats ?? {};
  return {
    id: s.id,
    state: s.status,
    startedAt: s.startedAt,
    completedAt: s.completedAt,
    consistentAt: s.status === 'complete' ? s.startedAt : null,
    plainBytes: num(stats['bytesPlain']),
    storedBytes: num(stats['bytesStored']),
    cellsWritten: num(stats['cellsWritten']),
    cellsReused: num(stats['cellsReused']),
    durationSeconds: s.completedAt === null ? null : seconds(s.completedAt.getTime() - s.startedAt.getTime()),
  };
}

/**
 * A drill as the page shows it. Its RPO is the one the daemon records: the age, when the
 * drill started, of the newest snapshot complete by then (not of the drilled snapshot,
 * which for a drill of an older one says nothing about how much a restore would lose).
 */
function toStatusDrill(d: Verification, snapshots: readonly SnapshotRecord[]): StatusDrill {
  const newestThen = snapshots.find((s) => s.status === 'complete' && s.completedAt !== null && s.completedAt.getTime() <= d.startedAt.getTime());
  const r = d.result;
  const findings = Array.isArray(r['findings']) ? r['findings'].length : 0;
  const verified = num(r['cellsVerified']);
  const cells = num(r['cells']);
  const failed = num(r['cellsFailed']);
  const shredded = num(r['cellsShredded']);
  const summary =
    verified === null || cells === null
      ? d.ok
        ? 'passed'
        : 'failed'
      : `${verified}/${cells} cells verified, ${failed ?? 0} failed, ${shredded ?? 0} shredded`;
  return {
    snapshotId: d.snapshotId,
    startedAt: d.startedAt,
    ok: d.ok,
    rtoSeconds: d.durationMs / 1000,
    rpoSeconds: newestThen === undefined ? null : seconds(d.startedAt.getTime() - newestThen.startedAt.getTime()),
    findings,
    summary,
  };
}
