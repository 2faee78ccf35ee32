import { describe, expect, it } from 'vitest';
import { S3RetrySchema } from '../../../src/config/schema.ts';
import { backoffDelayMs, DEFAULT_S3_RETRY, retryStrategy } from '../../../src/storage/s3-retry.ts';

describe('S3 retry policy', () => {
  it('has the schema defaults', () => {
    expect(S3RetrySchema.parse({})).toEqual(DEFAULT_S3_RETRY);
  });

  it('refuses unusable settings, naming the field', () => {
    expect(S3RetrySchema.safeParse({ maxAttempts: 0 }).error?.issues[0]?.path).toEqual(['maxAttempts']);
    expect(S3RetrySchema.safeParse({ baseDelayMs: 500, maxDelayMs: 100 }).error?.issues[0]?.path).toEqual(['maxDelayMs']);
    expect(S3RetrySchema.safeParse({ retries: 3 }).success).toBe(false);
  });

  it('backs off exponentially with full jitter, capped, honouring Retry-After up to the cap', () => {
    const config = { baseDelayMs: 100, maxDelayMs: 1_000 };
    expect(backoffDelayMs(1, config, () => 0.999)).toBe(99);
    expect(backoffDelayMs(3, config, () => 0.999)).toBe(399);
    expect(backoffDelayMs(10, config, () => 0.999)).toBe(999);
    expect(backoffDelayMs(10, config, () => 0)).toBe(0);
    expect(backoffDelayMs(1, config, () => 0, new Date(5_000), 0)).toBe(1_000);
  });

  it('retries throttling and transient failures up to maxAttempts, never client errors or 501', async () => {
    const strategy = retryStrategy({ ...DEFAULT_S3_RETRY, maxAttempts: 3, baseDelayMs: 1, maxDelayMs: 1 });
    const refused = new Error('AccessDenied');
    let token = await strategy.acquireInitialRetryToken();
    await expect(strategy.refreshRetryTokenForRetry(token, { errorType: 'CLIENT_ERROR', error: refused })).rejects.toBe(refused);
    await expect(strategy.refreshRetryTokenForRetry(token, { errorType: 'SERVER_ERROR', error: refused })).rejects.toBe(refused);
    token = await strategy.refreshRetryTokenForRetry(token, { errorType: 'THROTTLING' });
    expect(token.getRetryCount()).toBe(1);
    token = await strategy.refreshRetryTokenForRetry(token, { errorType: 'TRANSIENT' });
    expect(token.getRetryCount()).toBe(2);
    const last = new Error('SlowDown');
    await expect(strategy.refreshRetryTokenForRetry(token, { errorType: 'THROTTLING', error: last })).rejects.toBe(last);
  });
});
