import { describe, expect, it } from 'vitest';
import { isLetheError } from '../../../src/errors/index.ts';
import { parseConfig } from '../../../src/config/index.ts';

const base = {
  chatStore: { database: { url: 'postgres://reader@db/chat', sslmode: 'verify-full' } },
  vault: { database: { url: 'postgres://lethe@db/vault', sslmode: 'verify-full' } },
  storage: { type: 'filesystem', path: './objects' },
  masterKey: { file: './master.key' },
};

function failure(raw: unknown, env: NodeJS.ProcessEnv = {}): { code: string; message: string } {
  try {
    parseConfig(raw, '/etc/lethe', env);
  } catch (err) {
    if (isLetheError(err)) return { code: err.code, message: err.message };
    throw err;
  }
  throw new Error('expected the config to be refused');
}

describe('config', () => {
  it('fills defaults and resolves relative paths against the config directory', () => {
    const config = parseConfig(base, '/etc/lethe', {});
    expect(config.backup).toEqual({ packSizeMiB: 64, granularity: 'month', cellBufferMiB: 16, fullEvery: 7 });
    expect(config.storage).toEqual({ type: 'filesystem', path: '/etc/lethe/objects' });
    expect(config.masterKey?.file).toBe('/etc/lethe/master.key');
    expect(config.vault.schema).toBe('lethe');
    expect(config.chatStore.mapping).toBe('builtin');
  });

  it('refuses an unknown key and names it and where it is', () => {
    const bad = failure({ ...base, backup: { packSizeMiB: 64, compresion: 'zstd' } });
    expect(bad.code).toBe('CONFIG_INVALID');
    expect(bad.message).toContain('`compresion`');
    expect(bad.message).toContain('`backup`');
    expect(failure({ ...base, extra: 1 }).message).toContain('`extra` at the top level');
  });

  it('refuses a wrong type and names the field', () => {
    const bad = failure({ ...base, backup: { packSizeMiB: 'big' } });
    expect(bad.code).toBe('CONFIG_INVALID');
    expect(bad.message).toContain('`backup.packSizeMiB`');
  });

  it('reports every problem at once', () => {
    const bad = failure({ ...base, backup: { packSizeMiB: 0, granularity: 'hour' } });
    expect(bad.message).toContain('`backup.packSizeMiB`');
    expect(bad.message).toContain('`backup.granularity`');
  });

  it('interpolates ${ENV} secrets and names the field and variable of a missing one', () => {
    const raw = { ...base, vault: { database: { url: 'postgres://lethe:${VAULT_PW}@db/vault', sslmode: 'verify-full' } } };
    expect(parseConfig(raw, '/', { VAULT_PW: 's3cret' }).vault.database.url).toBe('postgres://lethe:s3cret@db/vault');
    const bad = failure(raw, {});
    expect(bad.code).toBe('CONFIG_SECRET_MISSING');
    expect(bad.message).toContain('`vault.database.url`');
    expect(bad.message).toContain('VAULT_PW');
  });

  it('needs exactly one of url or embeddedDatabase', () => {
    const bad = failure({ ...base, chatStore: { database: { url: 'postgres://x/y', embeddedDatabase: 'chat' } } });
    expect(bad.message).toContain('`chatStore.database`');
    expect(bad.message).toContain('exactly one');
  });

  it('validates S3 settings', () => {
    const s3 = { type: 's3', bucket: 'ab', accessKeyId: 'k', secretAccessKey: 's' };
    const bad = failure({ ...base, storage: s3 });
    expect(bad.message).toContain('`storage.bucket`');
    const ok = parseConfig({ ...base, storage: { ...s3, bucket: 'abc' } }, '/', {});
    expect(ok.storage).toMatchObject({ type: 's3', region: 'us-east-1', prefix: '', forcePathStyle: false });
  });
});
