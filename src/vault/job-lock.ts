import type pg from 'pg';
import { ErrorCode, LetheError, wrapForeign } from '../errors/index.ts';
import { query, type VaultContext } from './db.ts';
import { lockKeyText } from './schema-name.ts';

/** Server-side TCP keepalive and user timeout for a connection that holds a job lock. */
const LOCK_KEEPALIVE_SQL =
  'SET tcp_keepalives_idle = 10; SET tcp_keepalives_interval = 5; SET tcp_keepalives_count = 3; SET tcp_user_timeout = 30000';

/** How often the lock's connection is pinged, so a dead connection is noticed. */
const HEARTBEAT_MS = 30_000;

/**
 * Runs `fn` while holding the job lock `name` (a session advisory lock on a connection
 * reserved for it), so a job never overlaps itself across processes and hosts sharing
 * this vault. Does not wait: when another run holds the lock, throws JOB_LOCKED naming the
 * holder's backend where PostgreSQL shows it.
 *
 * A run that dies releases its lock with its connection. If the lock's connection is lost
 * while `fn` runs, the lock may already be someone else's, so the signal passed to `fn`
 * aborts (reason: a JOB_LOCKED error) and `fn` should stop; `options.signal` also aborts
 * it. The lock is released and the connection returned when `fn` settles.
 */
export async function withJobLock<T>(
  ctx: VaultContext,
  name: string,
  fn: (signal: AbortSignal) => Promise<T>,
  options: { signal?: AbortSignal } = {},
): Promise<T> {
  const key = lockKeyText(ctx.schema, `job:${name}`);
  const doing = `taking the ${name} job lock`;
  const client = await connect(ctx, doing);
  let broken: Error | undefined;
  try {
    // A lock outlives its holder only as long as PostgreSQL takes to see the connection is
    // dead: a killed process closes it at once, but a host that vanishes (power, network)
    // sends nothing, and the server's default keepalive waits two hours. These make it about
    // 30 s, well inside the daemon's lease (docs/operations.md, "Locks and takeover").
    await query(client, doing, LOCK_KEEPALIVE_SQL);
    if (!(await tryLock(client, key, doing))) {
      const holder = await describeHolder(client, key);
      throw new LetheError(
        ErrorCode.JOB_LOCKED,
        `another \`lethe ${name}\` is running (lock held${holder}): wait for it to finish; ` +
          'a run that died releases the lock when its database connection closes',
        { details: { job: name } },
      );
    }
    const lost = new AbortController();
    const onLost = (err: unknown): void => {
      lost.abort(
        new LetheError(
          ErrorCode.JOB_LOCKED,
          `lost the database connection holding the ${name} job lock: stopping, since another run may now start`,
          { cause: err },
        ),
      );
    };
    client.on('error', onLost);
    const heartbeat = setInterval(() => {
      client.query('SELECT 1').catch(onLost);
    }, HEARTBEAT_MS);
    heartbeat.unref();
    const signal =
      options.signal === undefined ? lost.signal : AbortSignal.any([options.signal, lost.signal]);
    try {
      return await fn(signal);
    } finally {
      clearInterval(heartbeat);
      try {
        await client.query('SELECT pg_advisory_unlock(hashtextextended($1, 0))', [key]);
      } catch (err) {
        // Destroying the connection (below) releases a session lock just as well.
        broken = err instanceof Error ? err : new Error(String(err));
      }
      client.off('error', onLost);
    }
  } finally {
    client.release(broken);
  }
}

/** ` by PostgreSQL backend 123 (client 10.0.0.5, since …)`, or '' when not visible. */
async function describeHolder(client: pg.PoolClient, key: string): Promise<string> {
  try {
    // A bigint advisory key shows in pg_locks as classid = high half, objid = low half.
    const { rows } = await client.query<{ pid: number; addr: string | null; since: Date | null }>(
      `WITH k AS (SELECT hashtextextended($1, 0) AS v)
       SELECT l.pid, host(a.client_addr) AS addr, a.backend_start AS since
         FROM pg_locks l CROSS JOIN k
         LEFT JOIN pg_stat_activity a ON a.pid = l.pid
        WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
          AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
          AND l.classid = ((k.v >> 32) & 4294967295)::oid
          AND l.objid = (k.v & 4294967295)::oid`,
      [key],
    );
    const row = rows[0];
    if (row === undefined) return '';
    const where = [
      row.addr === null ? null : `client ${row.addr}`,
      row.since === null ? null : `since ${row.since.toISOString()}`,
    ]
      .filter((s) => s !== null)
      .join(', ');
    return ` by PostgreSQL backend ${row.pid}${where === '' ? '' : ` (${where})`}`;
  } catch {
    return ''; // Only decoration for the message: the lock is held either way.
  }
}

/**
 * True when some session holds the job lock `name` (a run is alive); false when it is free.
 * Tries the lock and, if it got it, releases it at once.
 */
export async function jobLockHeld(ctx: VaultContext, name: string): Promise<boolean> {
  const key = lockKeyText(ctx.schema, `job:${name}`);
  const doing = `checking the ${name} job lock`;
  const client = await connect(ctx, doing);
  try {
    if (!(await tryLock(client, key, doing))) return true;
    await query(client, doing, 'SELECT pg_advisory_unlock(hashtextextended($1, 0))', [key]);
    return false;
  } finally {
    client.release();
  }
}

/** A pooled connection of its own for a session lock (the lock lives as long as it). */
async function connect(ctx: VaultContext, doing: string): Promise<pg.PoolClient> {
  try {
    return await ctx.pool.connect();
  } catch (err) {
    throw wrapForeign(ErrorCode.DATABASE, `${doing}: connecting to the vault`, err);
  }
}

/** Takes the session advisory lock named by `key` if it is free; false when another session holds it. */
async function tryLock(client: pg.PoolClient, key: string, doing: string): Promise<boolean> {
  const { rows } = await query<{ locked: boolean }>(client, doing, 'SELECT pg_try_advisory_lock(hashtextextended($1, 0)) AS locked', [key]);
  return rows[0]?.locked === true;
}
