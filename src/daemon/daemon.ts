import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseListen, type DaemonConfig } from '../config/index.ts';
import { ErrorCode, LetheError } from '../errors/index.ts';
import { readSecretFile, type Runtime } from '../jobs/runtime.ts';
import { DAEMON_JOBS, type DaemonJob } from '../vault/index.ts';
import {
  AlertSender,
  auditChainBrokenAlert,
  drillFailedAlert,
  erasePendingAlerts,
  jobFailedAlert,
  rpoBreachedAlert,
  type Alert,
} from './alerts.ts';
import { fixFor } from './fixes.ts';
import { DaemonHttp } from './http.ts';
import { DRILL_FAILED, JOB_RUNNERS, type JobOutcome } from './jobs.ts';
import { Observer } from './observe.ts';
import { Schedule } from './schedule.ts';
import { Scheduler, type RunReport } from './scheduler.ts';

/** What `lethe daemon` reports as it goes (printed as lines, or JSON lines with --json). */
export type DaemonEvent =
  | { readonly event: 'listening'; readonly url: string; readonly owner: string; readonly schedules: Readonly<Record<string, string>> }
  | { readonly event: 'job'; readonly job: DaemonJob; readonly slot: string; readonly state: string; readonly code: string | null; readonly durationSeconds: number; readonly message: string | null }
  | { readonly event: 'stopping'; readonly running: string | null; readonly deadlineSeconds: number }
  | { readonly event: 'stopped'; readonly aborted: boolean };

export interface DaemonOptions {
  /** Overrides `daemon.listen` (`lethe daemon --listen`). */
  readonly listen?: string;
  /** Aborting it (SIGTERM, SIGINT) stops the daemon cleanly. */
  readonly signal: AbortSignal;
  readonly onEvent: (e: DaemonEvent) => void;
  /** Test hooks: a faster scheduler tick and alert backoff. */
  readonly tickMs?: number;
  readonly alertBackoff?: { baseMs: number; capMs: number };
}

/** How often the audit chain is walked, RPO and waiting deletion requests looked at. */
const AUDIT_EVERY_MS = 15 * 60_000;
const CONDITIONS_EVERY_MS = 60_000;
const ALERT_KEYS_KEPT = 10_000;
/** /readyz fails when the scheduler's last successful look at the vault is older than this. */
const SCHEDULER_STALE_MS = 30_000;
/** A bearer token shorter than this is refused: it could be guessed. */
const MIN_TOKEN_CHARS = 16;

function letheVersion(): string {
  for (let dir = dirname(fileURLToPath(import.meta.url)); ; dir = dirname(dir)) {
    const file = join(dir, 'package.json');
    if (existsSync(file)) {
      try {
        const pkg = JSON.parse(readFileSync(file, 'utf8')) as { name?: unknown; version?: unknown };
        if (pkg.name === 'lethe' && typeof pkg.version === 'string') return pkg.version;
      } catch {
        // not ours; keep looking
      }
    }
    if (dirname(dir) === dir) return 'unknown';
  }
}

/**
 * `lethe daemon`: runs the config's schedules until `signal` aborts, serving /healthz,
 * /readyz, /metrics and the status page, and sending alerts. Resolves when it has stopped
 * cleanly: the running job finished or aborted within `daemon.shutdownSeconds`, its run
 * recorded, every lock released.
 */
export async function runDaemon(rt: Runtime, options: DaemonOptions): Promise<void> {
  const config: DaemonConfig | undefined = rt.config.daemon;
  if (config === undefined) {
    throw new LetheError(ErrorCode.CONFIG_INVALID, 'the config has no `daemon` section: add `daemon: { schedules: { backup: "0 */6 * * *", … } }` (see config/lethe.example.yaml)');
  }
  let listen;
  try {
    listen = parseListen(options.listen ?? config.listen);
  } catch (err) {
    throw new LetheError(ErrorCode.USAGE, `--listen: ${(err as Error).message}`);
  }
  const schedules = new Map<DaemonJob, Schedule>();
  for (const job of DAEMON_JOBS) {
    const expression = config.schedules[job];
    if (expression !== undefined) schedules.set(job, Schedule.parse(expression, config.timezone));
  }
  // Drills and lifecycle apply unwrap keys: without the master key every such slot would fail.
  const needKey = (['verify', 'verifyOlder', 'lifecycle'] as const).filter((job) => schedules.has(job));
  if (rt.config.masterKey === undefined && rt.config.master === undefined && needKey.length > 0) {
    throw new LetheError(
      ErrorCode.CONFIG_INVALID,
      `daemon.schedules runs ${needKey.join(', ')}, which need the master key, but the config has no \`masterKey.file\`: ` +
        'add it, or leave those schedules to a daemon whose config has it',
      { details: { field: 'masterKey.file' } },
    );
  }
  const log = rt.log.child({ component: 'daemon' });
  if (schedules.size === 0) log.warn('daemon.schedules names no job: the daemon serves its endpoints and runs nothing');
  const token = config.token === undefined ? undefined : 'file' in config.token ? await readSecretFile(config.token.file, 'daemon.token.file') : config.token.value;
  if (token !== undefined && token.length < MIN_TOKEN_CHARS) {
    throw new LetheError(
      ErrorCode.CONFIG_INVALID,
      `\`daemon.token\` has ${token.length} characters; use at least ${MIN_TOKEN_CHARS} random ones (e.g. \`openssl rand -hex 32\`)`,
    );
  }
  // Open what every job needs before taking work: a vault that is not migrated, a store that
  // cannot be opened or an alert secret that is unreadable stop the daemon at start.
  const vault = await rt.vault();
  await rt.store();
  const instance = hostname();
  const owner = `${instance}:${process.pid}:${randomBytes(3).toString('hex')}`;
  const alerts = await AlertSender.open(rt.config.alerts, { log, instance, ...(options.alertBackoff === undefined ? {} : { backoff: options.alertBackoff }) });
  const observer = new Observer({
    vault,
    config,
    schedules,
    erasePendingDays: rt.config.alerts?.erasePendingDays ?? 7,
    instance,
    version: letheVersion(),
    log,
  });
  const actor = `daemon@${instance}`;
  // Conditions already alerted, oldest first; bounded, so a daemon that runs for years
  // with a failing job does not grow (a key forgotten this way can alert once more).
  const sent = new Set<string>();
  const alertOnce = (alert: Alert): void => {
    if (sent.has(alert.key)) return;
    sent.add(alert.key);
    if (sent.size > ALERT_KEYS_KEPT) sent.delete(sent.values().next().value as string);
    alerts.send(alert);
  };

  const checkConditions = async (): Promise<void> => {
    const reading = await observer.read();
    const objective = observer.rpoObjectiveSeconds;
    const rpo = observer.rpoSeconds(reading);
    if (objective !== null && (rpo === null || rpo > objective)) {
      alertOnce(rpoBreachedAlert({ rpoSeconds: rpo ?? Infinity, objectiveSeconds: objective, newestSnapshot: reading.newest?.id ?? null }));
    }
    const waiting = reading.facts.eraseRequestsWaiting.map((r) => ({ ...r, subject: null, reason: '', approvedBy: null, approvedAt: null, executedAt: null, certificate: null }));
    for (const alert of erasePendingAlerts(waiting, reading.facts.now, rt.config.alerts?.erasePendingDays ?? 7)) alertOnce(alert);
  };
  const checkAudit = async (): Promise<void> => {
    const audit = await observer.checkAudit(options.signal);
    if (audit.ok === false) alertOnce(auditChainBrokenAlert({ firstBadEntry: audit.firstBadEntry ?? 0, message: audit.message ?? 'broken' }));
  };
  const background = (what: string, fn: () => Promise<void>): (() => void) => {
    let running = false;
    return () => {
      if (running) return;
      running = true;
      fn()
        .catch((err: unknown) => log.warn({ err }, `daemon: ${what} failed; retrying later`))
        .finally(() => {
          running = false;
        });
    };
  };
  const conditions = background('checking RPO and waiting deletion requests', checkConditions);
  const audit = background('checking the audit chain', checkAudit);

  const onFinished = (report: RunReport): void => {
    observer.observeRun(report.job, report.durationSeconds);
    options.onEvent({
      event: 'job',
      job: report.job,
      slot: report.slot.toISOString(),
      state: report.state,
      code: report.code,
      durationSeconds: report.durationSeconds,
      message: report.message,
    });
    if (report.state === 'failed') {
      const drill = report.outcome?.drill;
      if (report.code === DRILL_FAILED && drill !== undefined) {
        alertOnce(drillFailedAlert({ snapshot: drill.snapshotId, findings: drill.findings, rtoSeconds: drill.durationMs / 1000 }));
      } else {
        alertOnce(jobFailedAlert({ job: report.job, slot: report.slot, code: report.code ?? 'UNEXPECTED', message: report.message ?? '', fix: fixFor(report.code ?? '') }));
      }
    }
    if (report.job === 'backup') conditions();
  };

  const scheduler = new Scheduler({
    vault,
    jobs: [...schedules].map(([job, schedule]) => ({ job, schedule })),
    owner,
    leaseSeconds: config.leaseSeconds,
    log,
    run: (job, signal): Promise<JobOutcome> => JOB_RUNNERS[job](rt, { actor, signal }),
    onFinished,
    ...(options.tickMs === undefined ? {} : { tickMs: options.tickMs }),
  });

  const http = new DaemonHttp({
    host: listen.host,
    port: listen.port,
    token,
    observer,
    log,
    ready: async () => {
      const problems: string[] = [];
      try {
        await Promise.race([
          vault.lastDaemonSlots(),
          new Promise((_, reject) => setTimeout(() => reject(new Error('no answer in 3 s')), 3000).unref()),
        ]);
      } catch (err) {
        problems.push(`the vault does not answer: ${(err as Error).message}`);
      }
      const scheduling = scheduler.healthy(SCHEDULER_STALE_MS);
      if (!scheduling.ok) problems.push(`the scheduler has not reached the vault for ${SCHEDULER_STALE_MS / 1000} s${scheduling.error === null ? '' : `: ${scheduling.error}`}`);
      if (options.signal.aborted) problems.push('shutting down');
      return { ok: problems.length === 0, problems };
    },
  });
  let bound;
  try {
    bound = await http.listen();
  } catch (err) {
    await alerts.flush(0);
    throw new LetheError(ErrorCode.USAGE, `cannot listen on ${listen.host}:${listen.port}: ${(err as Error).message}; choose another daemon.listen or --listen`, { cause: err });
  }
  const shownHost = bound.host.includes(':') ? `[${bound.host}]` : bound.host;
  options.onEvent({
    event: 'listening',
    url: `http://${shownHost}:${bound.port}/`,
    owner,
    schedules: Object.fromEntries([...schedules].map(([job, s]) => [job, s.expression])),
  });
  scheduler.start();
  audit();
  conditions();
  const auditTimer = setInterval(audit, AUDIT_EVERY_MS);
  const conditionsTimer = setInterval(conditions, CONDITIONS_EVERY_MS);

  if (!options.signal.aborted) await once(options.signal, 'abort');
  clearInterval(auditTimer);
  clearInterval(conditionsTimer);
  const running = scheduler.running;
  options.onEvent({ event: 'stopping', running: running === undefined ? null : running.job, deadlineSeconds: config.shutdownSeconds });
  const { aborted } = await scheduler.stop(config.shutdownSeconds * 1000);
  await http.close();
  await alerts.flush(5000);
  options.onEvent({ event: 'stopped', aborted });
}

function once(signal: AbortSignal, _event: 'abort'): Promise<void> {
  return new Promise((resolve) => signal.addEventListener('abort', () => resolve(), { once: true }));
}
