import { inspect } from 'node:util';
import { describe, expect, it } from 'vitest';
import { ErrorCode, LetheError } from '../../../src/errors/index.ts';
import { convertS3Error, credentialRedactor } from '../../../src/storage/s3-errors.ts';

const call = {
  operation: 'get',
  bucket: 'backups',
  key: 'env/packs/ab/p1',
  location: 's3://backups/env/packs/ab/p1',
};
const redact = credentialRedactor([
  'AKIAUNITTESTKEY00001',
  'unit/Secret+Key/value',
  undefined,
  'ab',
]);

/** Shaped like the SDK's service exceptions. */
function sdkError(name: string, status: number, message: string, extra: object = {}): Error {
  return Object.assign(new Error(message), {
    name,
    $fault: 'client',
    $metadata: { httpStatusCode: status, requestId: 'REQ123' },
    ...extra,
  });
}

describe('convertS3Error', () => {
  it('maps NoSuchKey and a bare 404 NotFound to NOT_FOUND', () => {
    for (const err of [sdkError('NoSuchKey', 404, 'gone'), sdkError('NotFound', 404, '')]) {
      const converted = convertS3Error(err, call, redact);
      expect(converted.code).toBe(ErrorCode.NOT_FOUND);
      expect(converted.message).toBe('get s3://backups/env/packs/ab/p1: no such object');
    }
  });

  it('maps NoSuchBucket to STORAGE with a hint, not NOT_FOUND', () => {
    const converted = convertS3Error(sdkError('NoSuchBucket', 404, 'no bucket'), call, redact);
    expect(converted.code).toBe(ErrorCode.STORAGE);
    expect(converted.message).toBe(
      'get s3://backups/env/packs/ab/p1 failed: NoSuchBucket (HTTP 404): no bucket; ' +
        'check the bucket name and region, or create the bucket',
    );
    expect(converted.details).toEqual({
      operation: 'get',
      bucket: 'backups',
      key: 'env/packs/ab/p1',
      s3Code: 'NoSuchBucket',
      httpStatus: 404,
      requestId: 'REQ123',
    });
  });

  it('maps aborts to ABORTED and passes LetheErrors through', () => {
    const abort = Object.assign(new Error('Request aborted'), { name: 'AbortError' });
    expect(convertS3Error(abort, call, redact).code).toBe(ErrorCode.ABORTED);
    const ours = new LetheError(ErrorCode.DATABASE, 'x');
    expect(convertS3Error(ours, call, redact)).toBe(ours);
  });

  it('names network errors by their code', () => {
    const refused = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:9'), {
      code: 'ECONNREFUSED',
    });
    const converted = convertS3Error(refused, { ...call, operation: 'list' }, redact);
    expect(converted.code).toBe(ErrorCode.STORAGE);
    expect(converted.message).toMatch(
      /^list s3:\/\/backups\/env\/packs\/ab\/p1 failed: ECONNREFUSED: /,
    );
    expect(converted.message).toMatch(/check the endpoint URL/);
  });

  it('keeps credentials out of the message and cause, and drops the raw SDK fields', () => {
    const err = sdkError(
      'SignatureDoesNotMatch',
      403,
      'bad signature for AKIAUNITTESTKEY00001 using unit/Secret+Key/value',
      {
        AWSAccessKeyId: 'AKIAUNITTESTKEY00001',
        StringToSign: 'AWS4-HMAC-SHA256 ... AKIAUNITTESTKEY00001',
      },
    );
    const converted = convertS3Error(err, call, redact);
    const shown = [
      converted.message,
      JSON.stringify(converted.details),
      inspect(converted, { depth: 10 }),
    ];
    for (const text of shown) {
      expect(text).not.toContain('AKIAUNITTESTKEY00001');
      expect(text).not.toContain('unit/Secret+Key/value');
      expect(text).not.toContain('StringToSign');
    }
    expect(converted.message).toContain('bad signature for [redacted] using [redacted]');
    expect(converted.cause).toBeInstanceOf(Error);
    expect((converted.cause as Error).name).toBe('SignatureDoesNotMatch');
  });

  it('does not redact values too short to be credentials', () => {
    // 'ab' was passed as a "secret": blanking it would mangle ordinary words.
    expect(redact('tab grab')).toBe('tab grab');
  });
});
