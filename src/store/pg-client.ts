import pg from 'pg';
import { ErrorCode, LetheError, throwIfAborted, wrapForeign } from '../errors/index.ts';
import { pgClientConfig } from '../tls/index.ts';

/**
 * Runs `fn` with a connected client and always closes it. pg errors (connect, query) are
 * converted once, here, into DATABASE errors whose message says what we were `doing`.
 *
 * When `signal` fires, the statement in flight on the client is cancelled for real
 * (`pg_cancel_backend` from a second connection) and the call rejects with ABORTED; an
 * open transaction is rolled back by the server when the connection closes.
 */
export async function withClient<T>(
  url: string,
  doing: string,
  fn: (client: pg.Client) => Promise<T>,
  signal?: AbortSignal,
): Promise<T> {
  throwIfAborted(signal, doing);
  const client = new pg.Client(pgClientConfig(url));
  // An idle client can still emit 'error' (server restart); without a listener Node would crash.
  client.on('error', () => undefined);
  try {
    await client.connect();
  } catch (err) {
    throw wrapForeign(ErrorCode.DATABASE, `${doing}: cannot connect`, err);
  }
  // pg sets processID on connect; @types/pg does not declare it.
  const pid = (client as unknown as { processID: number | null }).processID;
  const onAbort = (): void => {
    if (pid !== null) void cancelBackend(url, pid);
  };
  signal?.addEventListener('abort', onAbort, { once: true });
  try {
    return await fn(client);
  } catch (err) {
    if (signal?.aborted === true)
      throw new LetheError(ErrorCode.ABORTED, `${doing}: cancelled`, { cause: err });
    throw wrapForeign(ErrorCode.DATABASE, doing, err);
  } finally {
    signal?.removeEventListener('abort', onAbort);
    await client.end().catch(() => undefined);
  }
}

/** Best effort: the caller is already failing with ABORTED, so errors here are moot. */
async function cancelBackend(url: string, pid: number): Promise<void> {
  const canceller = new pg.Client(pgClientConfig(url));
  canceller.on('error', () => undefined);
  try {
    await canceller.connect();
    await canceller.query('SELECT pg_cancel_backend($1)', [pid]);
  } catch {
    // The statement may have finished already; nothing to cancel.
  } finally {
    await canceller.end().catch(() => undefined);
  }
}

/**
 * Runs `fn` inside BEGIN … COMMIT on `client`, rolling back when it throws. Nothing `fn`
 * wrote is visible to others until it returns. `mode` is trusted SQL appended to BEGIN
 * (a constant such as `ISOLATION LEVEL REPEATABLE READ READ ONLY`), never user input.
 */
export async function inTransaction<T>(
  client: pg.Client,
  fn: () => Promise<T>,
  mode = '',
): Promise<T> {
  await client.query(`BEGIN${mode === '' ? '' : ` ${mode}`}`);
  try {
    const result = await fn();
    await client.query('COMMIT');
    return result;
  } catch (err) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw err;
  }
}
