import { describe, expect, it } from 'vitest';
import { ErrorCode, isLetheError } from '../../../src/errors/index.ts';
import { createS3Store, openStore, type S3StoreOptions } from '../../../src/storage/index.ts';

const base: S3StoreOptions = {
  region: 'eu-west-1',
  bucket: 'backups',
  accessKeyId: 'AKIACONFIGTEST000001',
  secretAccessKey: 'config-test-secret-value',
};

function configError(options: S3StoreOptions): string {
  try {
    createS3Store(options);
  } catch (err) {
    if (isLetheError(err, ErrorCode.CONFIG_INVALID)) return err.message;
    throw err;
  }
  throw new Error('expected CONFIG_INVALID');
}

describe('createS3Store options', () => {
  it('describes the bucket, prefix and endpoint without credentials or user info', async () => {
    const plain = createS3Store(base);
    expect(plain.kind).toBe('s3');
    expect(plain.description).toBe('s3://backups/');
    const custom = createS3Store({
      ...base,
      prefix: 'env/prod',
      endpoint: 'https://user:hunter2@minio.example.com:9000/?token=abc',
      sessionToken: 'session-token-value',
    });
    expect(custom.description).toBe('s3://backups/env/prod/ at https://minio.example.com:9000');
    const viaConfig = await openStore({ type: 's3', ...base, prefix: 'env/prod///' });
    expect(viaConfig.description).toBe('s3://backups/env/prod/');
    await Promise.all([plain.close(), custom.close(), viaConfig.close()]);
  });

  it('accepts explicit undefined for optional settings, as a parsed config may have', async () => {
    const store = createS3Store({
      ...base,
      endpoint: undefined,
      prefix: undefined,
      queueSize: undefined,
    });
    expect(store.description).toBe('s3://backups/');
    await store.close();
  });

  it.each([
    [{ partSizeBytes: 5 * 1024 * 1024 - 1 }, /partSizeBytes must be an integer from 5242880/],
    [{ partSizeBytes: 6_000_000.5 }, /partSizeBytes must be an integer/],
    [{ queueSize: 0 }, /queueSize must be an integer from 1 to 64/],
    [{ listPageSize: 1001 }, /listPageSize must be an integer from 1 to 1000/],
    [{ bucket: '' }, /bucket is empty/],
    [{ endpoint: 'not a url' }, /endpoint is not a valid URL/],
    [{ prefix: '/abs' }, /prefix "\/abs" is not usable/],
    [{ prefix: 'a/../b' }, /prefix "a\/..\/b" is not usable/],
  ])('rejects %j', (override, message) => {
    const text = configError({ ...base, ...override });
    expect(text).toMatch(message);
    expect(text).not.toContain(base.secretAccessKey);
  });
});
