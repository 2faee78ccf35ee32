import { ErrorCode, LetheError } from '../errors/index.ts';
import { canonicalJson, type JsonObject } from './canonical-json.ts';
import { inTransaction, query, type VaultContext } from './db.ts';
import { lockKeyText } from './schema-name.ts';

/** The jobs lethe daemon schedules; `daemon_runs.job` holds one of these. */
export const DAEMON_JOBS = ['backup', 'verify', 'verifyOlder', 'lifecycle', 'vaultBackup'] as const;
export type DaemonJob = (typeof DAEMON_JOBS)[number];

export type DaemonRunState = 'running' | 'ok' | 'failed' | 'skipped';

/** One scheduled slot of a job, as the vault records it. */
export interface DaemonRun {
  readonly job: DaemonJob;
  readonly slot: Date;
  readonly state: DaemonRunState;
  readonly owner: string;
  readonly startedAt: Date;
  readonly heartbeatAt: Date;
  readonly finishedAt: Date | null;
  readonly attempts: number;
  readonly errorCode: string | null;
  readonly errorMessage: string | null;
  readonly details: JsonObject | null;
}

interface RunRow {
  job: DaemonJob;
  slot: Date;
  state: DaemonRunState;
  owner: string;
  started_at: Date;
  heartbeat_at: Date;
  finished_at: Date | null;
  attempts: number;
  error_code: string | null;
  error_message: string | null;
  details: JsonObject | null;
}

const COLUMNS = 'job, slot, state, owner, started_at, heartbeat_at, finished_at, attempts, error_code, error_message, details';

function toRun(r: RunRow): DaemonRun {
  return {
    job: r.job,
    slot: r.slot,
    state: r.state,
    owner: r.owner,
    startedAt: r.started_at,
    heartbeatAt: r.heartbeat_at,
    finishedAt: r.finished_at,
    attempts: r.attempts,
    errorCode: r.error_code,
    errorMessage: r.error_message,
    details: r.details,
  };
}

function table(ctx: VaultContext): string {
  return `"${ctx.schema}".daemon_runs`;
}

/** What a claim decided: run `slot` (a new slot, or one taken over from a dead daemon), or nothing. */
export type SlotClaim =
  | { readonly kind: 'run'; readonly run: DaemonRun; readonly takenOver: boolean; readonly skipped: number }
  | { readonly kind: 'busy'; readonly run: DaemonRun }
  | { readonly kind: 'done' };

/** Slots recorded as skipped one by one before the rest are only counted. */
const SKIPPED_ROWS = 100;

/**
 * Decides, for all daemons on this vault at once, who runs what of `job`: in one
 * transaction serialised per job by an advisory lock,
 * - a running row whose heartbeat is older than `leaseSeconds` (its daemon died) is taken
 *   over by `owner`;
 * - a running row with a live heartbeat makes the job busy: nothing starts;
 * - otherwise, when `due` (the newest slot at or before now) is not recorded yet, it is
 *   inserted as running for `owner`, and the unrecorded slots in `missed` (older ones that
 *   came due while the job was busy or no daemon ran) are recorded as skipped, so each slot
 *   has exactly one row and only the newest of them runs.
 */
export async function claimDaemonSlot(
  ctx: VaultContext,
  claim: { job: DaemonJob; due: Date; missed: readonly Date[]; missedMore: boolean; owner: string; leaseSeconds: number },
): Promise<SlotClaim> {
  const doing = `claiming the ${claim.job} slot ${claim.due.toISOString()}`;
  return inTransaction(ctx.pool, doing, async (client) => {
    await query(client, doing, 'SELECT pg_advisory_xact_lock(hashtextextended($1, 0))', [lockKeyText(ctx.schema, `daemon-slot:${claim.job}`)]);
    const { rows: running } = await query<RunRow & { stale: boolean }>(
      client,
      doing,
      `SELECT ${COLUMNS}, heartbeat_at < now() - make_interval(secs => $2) AS stale
         FROM ${table(ctx)} WHERE job = $1 AND state = 'running'`,
      [claim.job, claim.leaseSeconds],
    );
    const current = running[0];
    if (current !== undefined) {
      if (!current.stale) return { kind: 'busy', run: toRun(current) };
      const { rows } = await query<RunRow>(
        client,
        doing,
        `UPDATE ${table(ctx)} SET owner = $3, heartbeat_at = now(), attempts = attempts + 1
          WHERE job = $1 AND slot = $2 AND state = 'running' RETURNING ${COLUMNS}`,
        [claim.job, current.slot, claim.owner],
      );
      const taken = rows[0];
      if (taken === undefined) throw new LetheError(ErrorCode.INTERNAL, `${doing}: the stale run vanished inside the transaction`);
      return { kind: 'run', run: toRun(taken), takenOver: true, skipped: 0 };
    }
    const { rows } = await query<RunRow>(
      client,
      doing,
      `INSERT INTO ${table(ctx)} (job, slot, state, owner) VALUES ($1, $2, 'running', $3)
       ON CONFLICT (job, slot) DO NOTHING RETURNING ${COLUMNS}`,
      [claim.job, claim.due, claim.owner],
    );
    const inserted = rows[0];
    if (inserted === undefined) return { kind: 'done' };
    const missed = claim.missed.slice(-SKIPPED_ROWS);
    const uncounted = claim.missed.length - missed.length;
    let skipped = 0;
    if (missed.length > 0) {
      const result = await query(
        client,
        doing,
        `INSERT INTO ${table(ctx)} (job, slot, state, owner, finished_at, error_message)
         SELECT $1, s, 'skipped', $2, now(), $3 FROM unnest($4::timestamptz[]) AS s
         ON CONFLICT (job, slot) DO NOTHING`,
        [claim.job, claim.owner, `not run: the run of ${claim.due.toISOString()} stands in for it`, missed],
      );
      skipped = result.rowCount ?? 0;
    }
    if (uncounted > 0 || claim.missedMore) {
      await query(client, doing, `UPDATE ${table(ctx)} SET details = $3::jsonb WHERE job = $1 AND slot = $2`, [
        claim.job,
        claim.due,
        canonicalJson({ missedSlotsNotRecorded: uncounted, andMore: claim.missedMore }),
      ]);
    }
    return { kind: 'run', run: toRun(inserted), takenOver: false, skipped: skipped + uncounted };
  });
}

/** Proves `owner` still runs the slot; false when another daemon took it over (stop at once). */
export async function heartbeatDaemonRun(ctx: VaultContext, run: { job: DaemonJob; slot: Date; owner: string }): Promise<boolean> {
  const { rowCount } = await query(
    ctx.pool,
    `renewing the ${run.job} run's heartbeat`,
    `UPDATE ${table(ctx)} SET heartbeat_at = now() WHERE job = $1 AND slot = $2 AND owner = $3 AND state = 'running'`,
    [run.job, run.slot, run.owner],
  );
  return rowCount === 1;
}

/** Records how a run ended; false when it was no longer this owner's (taken over). */
export async function finishDaemonRun(
  ctx: VaultContext,
  run: { job: DaemonJob; slot: Date; owner: string },
  outcome: { state: 'ok' | 'failed' | 'skipped'; errorCode?: string; errorMessage?: string; details?: JsonObject },
): Promise<boolean> {
  const { rowCount } = await query(
    ctx.pool,
    `recording the end of the ${run.job} run`,
    `UPDATE ${table(ctx)} SET state = $4, finished_at = now(), heartbeat_at = now(),
            error_code = $5, error_message = $6, details = coalesce(details, '{}'::jsonb) || coalesce($7::jsonb, '{}'::jsonb)
      WHERE job = $1 AND slot = $2 AND owner = $3 AND state = 'running'`,
    [
      run.job,
      run.slot,
      run.owner,
      outcome.state,
      outcome.errorCode ?? null,
      outcome.errorMessage ?? null,
      outcome.details === undefined ? null : canonicalJson(outcome.details),
    ],
  );
  return rowCount === 1;
}

/** The newest recorded slot of each job (any state). */
export async function lastDaemonSlots(ctx: VaultContext): Promise<Map<DaemonJob, DaemonRun>> {
  const { rows } = await query<RunRow>(
    ctx.pool,
    'reading the daemon runs',
    `SELECT DISTINCT ON (job) ${COLUMNS} FROM ${table(ctx)} ORDER BY job, slot DESC`,
  );
  return new Map(rows.map((r) => [r.job, toRun(r)]));
}

/** Runs newest first (by slot), optionally of one job or state, at most `limit`. */
export async function listDaemonRuns(
  ctx: VaultContext,
  options: { job?: DaemonJob; state?: DaemonRunState; since?: Date; limit?: number } = {},
): Promise<DaemonRun[]> {
  const { rows } = await query<RunRow>(
    ctx.pool,
    'listing daemon runs',
    `SELECT ${COLUMNS} FROM ${table(ctx)}
      WHERE ($1::text IS NULL OR job = $1) AND ($2::text IS NULL OR state = $2) AND ($3::timestamptz IS NULL OR slot >= $3)
      ORDER BY slot DESC, job LIMIT $4::integer`,
    [options.job ?? null, options.state ?? null, options.since ?? null, options.limit ?? null],
  );
  return rows.map(toRun);
}

/** Facts the daemon's metrics and status page show, each counted by PostgreSQL. */
export interface DaemonFacts {
  /** Newest successful finish per job. */
  readonly lastSuccess: ReadonlyMap<string, Date>;
  /** Failed runs per job and error code, over the vault's whole record. */
  readonly failures: readonly { job: string; code: string; count: number }[];
  readonly holdsActive: number;
  /** Deletion requests not yet executed: awaiting a second approver (pending) or execution (approved). */
  readonly eraseRequestsWaiting: readonly {
    id: string;
    tenant: string;
    scope: 'user' | 'conversation' | 'tenant';
    status: 'pending' | 'approved';
    requestedAt: Date;
    requestedBy: string;
  }[];
  /** Dimension keys by kind and whether they are live or destroyed. */
  readonly keys: readonly { kind: string; state: 'live' | 'destroyed'; count: number }[];
  /** The vault database's clock. */
  readonly now: Date;
}

export async function daemonFacts(ctx: VaultContext): Promise<DaemonFacts> {
  const doing = 'reading what the daemon reports';
  const [success, failures, holds, erase, keys, now] = await Promise.all([
    query<{ job: string; at: Date }>(ctx.pool, doing, `SELECT job, max(finished_at) AS at FROM ${table(ctx)} WHERE state = 'ok' GROUP BY job`),
    query<{ job: string; code: string; n: string }>(
      ctx.pool,
      doing,
      `SELECT job, error_code AS code, count(*) AS n FROM ${table(ctx)} WHERE state = 'failed' GROUP BY job, error_code`,
    ),
    query<{ n: string }>(ctx.pool, doing, `SELECT count(*) AS n FROM "${ctx.schema}".holds WHERE released_at IS NULL`),
    query<{ id: string; tenant: string; scope: 'user' | 'conversation' | 'tenant'; status: 'pending' | 'approved'; requested_at: Date; requested_by: string }>(
      ctx.pool,
      doing,
      `SELECT id, tenant, scope, status, requested_at, requested_by FROM "${ctx.schema}".erase_requests
        WHERE status <> 'executed' ORDER BY requested_at`,
    ),
    query<{ kind: string; destroyed: boolean; n: string }>(
      ctx.pool,
      doing,
      `SELECT kind, destroyed_at IS NOT NULL AS destroyed, count(*) AS n FROM ${ctx.t.dimensionKeys} GROUP BY 1, 2`,
    ),
    query<{ now: Date }>(ctx.pool, doing, 'SELECT now() AS now'),
  ]);
  return {
    lastSuccess: new Map(success.rows.map((r) => [r.job, r.at])),
    failures: failures.rows.map((r) => ({ job: r.job, code: r.code, count: Number(r.n) })),
    holdsActive: Number(holds.rows[0]?.n ?? 0),
    eraseRequestsWaiting: erase.rows.map((r) => ({
      id: r.id,
      tenant: r.tenant,
      scope: r.scope,
      status: r.status,
      requestedAt: r.requested_at,
      requestedBy: r.requested_by,
    })),
    keys: keys.rows.map((r) => ({ kind: r.kind, state: r.destroyed ? 'destroyed' : 'live', count: Number(r.n) })),
    now: now.rows[0]?.now ?? new Date(),
  };
}
