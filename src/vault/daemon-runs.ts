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
  /** When another daemon last took the run over from one that went silent. */
  readonly takenOverAt: Date | null;
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
  taken_over_at: Date | null;
  error_code: string | null;
  error_message: string | null;
  details: JsonObject | null;
}

const COLUMNS = 'job, slot, state, owner, started_at, heartbeat_at, finished_at, attempts, taken_over_at, error_code, error_message, details';

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
    takenOverAt: r.taken_over_at,
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
  /** Another daemon runs the job, or is deciding about it right now. */
  | { readonly kind: 'busy' }
  | { readonly kind: 'done' };

/** Slots recorded as skipped one by one before the rest are only counted. */
const SKIPPED_ROWS = 100;

/** A run taken over this many times (each time its daemon died) is recorded failed, not retried. */
export const MAX_RUN_ATTEMPTS = 3;

/** How far ahead of the vault's clock a daemon's slot may be before its clock is called wrong. */
const CLOCK_TOLERANCE_SECONDS = 300;

/**
 * Decides, for all daemons on this vault at once, who runs what of `job`: in one
 * transaction serialised per job by an advisory lock (tried, not waited for: a daemon
 * stuck inside its claim must not stall the others),
 * - a running row whose heartbeat is older than `leaseSeconds` (its daemon died) is taken
 *   over by `owner`, unless it was already taken over MAX_RUN_ATTEMPTS - 1 times: a run that
 *   kills every daemon that tries it is recorded failed (DAEMON_DIED) and the job moves on;
 * - a running row with a live heartbeat makes the job busy: nothing starts;
 * - otherwise, when `due` (the newest slot at or before now) is not recorded yet, it is
 *   inserted as running for `owner`, and the unrecorded slots in `missed` (older ones that
 *   came due while the job was busy or no daemon ran) are recorded as skipped, so only the
 *   newest of them runs.
 * A `due` well ahead of the vault's clock is refused (VAULT, naming the skew): recorded, it
 * would hold the job back on every daemon until that time.
 */
export async function claimDaemonSlot(
  ctx: VaultContext,
  claim: { job: DaemonJob; due: Date; missed: readonly Date[]; missedMore: boolean; owner: string; leaseSeconds: number },
): Promise<SlotClaim> {
  const doing = `claiming the ${claim.job} slot ${claim.due.toISOString()}`;
  return inTransaction(ctx.pool, doing, async (client) => {
    // A claim is a few short statements: a connection that stalls inside one (a network cut)
    // is ended by the server instead of holding the job's lock for hours.
    await query(client, doing, "SET LOCAL idle_in_transaction_session_timeout = '30s'; SET LOCAL statement_timeout = '30s'");
    const { rows: locked } = await query<{ locked: boolean; ahead: number }>(
      client,
      doing,
      'SELECT pg_try_advisory_xact_lock(hashtextextended($1, 0)) AS locked, extract(epoch FROM $2::timestamptz - now())::float8 AS ahead',
      [lockKeyText(ctx.schema, `daemon-slot:${claim.job}`), claim.due],
    );
    if (locked[0]?.locked !== true) return { kind: 'busy' };
    const ahead = locked[0].ahead;
    if (ahead > CLOCK_TOLERANCE_SECONDS) {
      throw new LetheError(
        ErrorCode.VAULT,
        `this daemon's clock is ${Math.round(ahead)} s ahead of the vault's (slot ${claim.due.toISOString()} of ${claim.job} is not due yet by the vault): ` +
          'fix the host clock (NTP); `lethe doctor` measures the skew',
      );
    }
    const { rows: running } = await query<RunRow & { stale: boolean }>(
      client,
      doing,
      `SELECT ${COLUMNS}, heartbeat_at < now() - make_interval(secs => $2) AS stale
         FROM ${table(ctx)} WHERE job = $1 AND state = 'running'`,
      [claim.job, claim.leaseSeconds],
    );
    const current = running[0];
    if (current !== undefined) {
      if (!current.stale) return { kind: 'busy' };
      if (current.attempts < MAX_RUN_ATTEMPTS) {
        const { rows } = await query<RunRow>(
          client,
          doing,
          `UPDATE ${table(ctx)} SET owner = $3, heartbeat_at = now(), taken_over_at = now(), attempts = attempts + 1
            WHERE job = $1 AND slot = $2 AND state = 'running' RETURNING ${COLUMNS}`,
          [claim.job, current.slot, claim.owner],
        );
        const taken = rows[0];
        if (taken === undefined) throw new LetheError(ErrorCode.INTERNAL, `${doing}: the stale run vanished inside the transaction`);
        return { kind: 'run', run: toRun(taken), takenOver: true, skipped: 0 };
      }
      await query(
        client,
        doing,
        `UPDATE ${table(ctx)} SET state = 'failed', finished_at = now(), error_code = 'DAEMON_DIED',
                error_message = $3
          WHERE job = $1 AND slot = $2 AND state = 'running'`,
        [
          claim.job,
          current.slot,
          `the daemon running this slot went silent ${current.attempts} times in a row (killed, out of memory, or cut off): ` +
            'not retried again; read the daemons\' logs for the run, and `lethe doctor`',
        ],
      );
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

/**
 * Gives a claimed slot back unrun (the daemon is stopping, or the job's lock is held by
 * another run): its row goes, so the slot is due again for whichever daemon looks next.
 */
export async function releaseDaemonSlot(ctx: VaultContext, run: { job: DaemonJob; slot: Date; owner: string }): Promise<boolean> {
  const { rowCount } = await query(
    ctx.pool,
    `giving back the ${run.job} slot ${run.slot.toISOString()}`,
    `DELETE FROM ${table(ctx)} WHERE job = $1 AND slot = $2 AND owner = $3 AND state = 'running'`,
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

/** The vault database's clock. */
export async function vaultNow(ctx: VaultContext): Promise<Date> {
  const { rows } = await query<{ now: Date }>(ctx.pool, 'reading the vault clock', 'SELECT now() AS now');
  return rows[0]?.now ?? new Date();
}

/** The newest recorded slot of each job (any state). */
export async function lastDaemonSlots(ctx: VaultContext): Promise<Map<DaemonJob, DaemonRun>> {
  // One index probe per job; a row ahead of the vault's clock (a replica whose clock ran
  // ahead, refused by the claim since) is not allowed to hold the job back.
  const { rows } = await query<RunRow>(
    ctx.pool,
    'reading the daemon runs',
    `SELECT r.* FROM unnest($1::text[]) AS j(job)
       CROSS JOIN LATERAL (
         SELECT ${COLUMNS} FROM ${table(ctx)} d
          WHERE d.job = j.job AND (d.slot <= now() + make_interval(secs => $2) OR d.state = 'running')
          ORDER BY d.slot DESC LIMIT 1) r`,
    [DAEMON_JOBS, CLOCK_TOLERANCE_SECONDS],
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
    /** Null for a person across every tenant. */
    tenant: string | null;
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
    query<{ id: string; tenant: string | null; scope: 'user' | 'conversation' | 'tenant'; status: 'pending' | 'approved'; requested_at: Date; requested_by: string }>(
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
