/**
 * How lethe's S3 client retries (config `storage.retry`): bounded attempts, exponential
 * backoff with full jitter, and a silence timeout per connection. The SDK classifies each
 * failure; this strategy retries throttling (503 SlowDown, 429), transient server errors
 * (500, 502, 503, 504, including a `200 OK` whose body is an `<Error>`, which the SDK turns
 * into a 503), connection resets and timeouts, and never a client error (400, 403, 404, …)
 * nor 501 Not Implemented: asking
 * again for a key that does not exist, or with credentials that were refused, only
 * hides the real answer.
 *
 * Own strategy rather than the SDK's standard one: the standard one also keeps a retry
 * quota per client (a token bucket that stops all retries after a burst of failures), which
 * turns a burst of throttling during a large backup into a failed job instead of a slower one.
 */

/** The retry and timeout settings of an S3 store; the config schema holds the defaults. */
export interface S3RetryConfig {
  /** Attempts per request, the first included; 1 means no retries. */
  readonly maxAttempts: number;
  /** Backoff ceiling before the first retry; doubles with each retry, up to maxDelayMs. */
  readonly baseDelayMs: number;
  readonly maxDelayMs: number;
  /** Silence (nothing sent or received) after which an attempt is abandoned and retried. */
  readonly requestTimeoutSeconds: number;
  /** Time allowed to open a connection. */
  readonly connectTimeoutSeconds: number;
}

/** The defaults of `storage.retry` (kept equal to the schema's, which a unit test checks). */
export const DEFAULT_S3_RETRY: S3RetryConfig = {
  maxAttempts: 5,
  baseDelayMs: 100,
  maxDelayMs: 20_000,
  requestTimeoutSeconds: 120,
  connectTimeoutSeconds: 10,
};

/**
 * The SDK's failure classes (RetryErrorType in @smithy/types) worth another attempt.
 * SERVER_ERROR is the rest of 5xx outside 500/502/503/504, chiefly 501 NotImplemented, an
 * answer that stays the same however often it is asked (s3rver answers GetObjectRetention so).
 */
const RETRYABLE: ReadonlySet<string> = new Set(['THROTTLING', 'TRANSIENT']);

interface Token {
  getRetryCount(): number;
  getRetryDelay(): number;
}

/**
 * The wait before retry number `retry` (1 for the first retry): full jitter, a uniform
 * draw from 0 to min(maxDelayMs, baseDelayMs × 2^(retry−1)); a server's Retry-After hint
 * is honoured up to maxDelayMs. `random` returns a number in [0, 1).
 */
export function backoffDelayMs(
  retry: number,
  config: Pick<S3RetryConfig, 'baseDelayMs' | 'maxDelayMs'>,
  random: () => number = Math.random,
  retryAfter?: Date,
  now: number = Date.now(),
): number {
  const ceiling = Math.min(config.maxDelayMs, config.baseDelayMs * 2 ** Math.min(retry - 1, 30));
  const drawn = Math.floor(random() * ceiling);
  const hinted = retryAfter === undefined ? 0 : Math.min(config.maxDelayMs, retryAfter.getTime() - now);
  return Math.max(drawn, hinted);
}

/**
 * A retry strategy for the SDK (its RetryStrategyV2 interface): refreshRetryTokenForRetry
 * rejects with the failure itself once `maxAttempts` are used up or the failure is a
 * client error, so the caller sees the server's real answer.
 */
export function retryStrategy(config: S3RetryConfig) {
  const token = (count: number, delay: number): Token => ({
    getRetryCount: () => count,
    getRetryDelay: () => delay,
  });
  return {
    acquireInitialRetryToken: (): Promise<Token> => Promise.resolve(token(0, 0)),
    refreshRetryTokenForRetry: (
      previous: Token,
      info: { errorType: string; error?: unknown; retryAfterHint?: Date },
    ): Promise<Token> => {
      const retry = previous.getRetryCount() + 1;
      if (!RETRYABLE.has(info.errorType) || retry >= config.maxAttempts) {
        return Promise.reject(info.error instanceof Error ? info.error : new Error('S3 request failed'));
      }
      return Promise.resolve(token(retry, backoffDelayMs(retry, config, Math.random, info.retryAfterHint)));
    },
    recordSuccess: (): void => undefined,
  };
}
