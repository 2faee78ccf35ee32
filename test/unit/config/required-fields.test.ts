import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../../src/config/index.ts';
import { isLetheError } from '../../../src/errors/index.ts';

const base = {
  chatStore: { database: { url: 'postgres://reader@127.0.0.1/chat' } },
  vault: { database: { url: 'postgres://lethe@127.0.0.1/vault' } },
  storage: { type: 'filesystem', path: './objects' },
};

function refusal(raw: unknown): string {
  try {
    parseConfig(raw, '/etc/lethe', {});
  } catch (err) {
    if (isLetheError(err, 'CONFIG_INVALID')) return err.message;
    throw err;
  }
  throw new Error('expected the config to be refused');
}

describe('required config fields', () => {
  it('accepts a backup-only config without masterKey', () => {
    const config = parseConfig(base, '/etc/lethe', {});
    expect(config.masterKey).toBeUndefined();
    expect(parseConfig({ ...base, masterKey: { file: 'k' } }, '/etc/lethe', {}).masterKey?.file).toBe('/etc/lethe/k');
  });

  it('names a missing section as a required field, with what to write, instead of a type error', () => {
    const { storage: _storage, ...noStorage } = base;
    const message = refusal(noStorage);
    expect(message).toContain('config field `storage` is required');
    expect(message).toContain('type: filesystem');
    expect(message).not.toMatch(/expected object, received undefined/);
  });

  it('names a missing nested field by its full path', () => {
    const message = refusal({ ...base, masterKey: {} });
    expect(message).toContain('config field `masterKey.file` is required');
    expect(message).toContain('lethe init');
    expect(refusal({ ...base, vault: {} })).toContain('config field `vault.database` is required: give `url: postgres://…` or `embeddedDatabase: NAME`');
  });

  it('falls back to a generic hint for fields without one', () => {
    const message = refusal({ ...base, storage: { type: 's3', bucket: 'abc', secretAccessKey: 's' } });
    expect(message).toContain('config field `storage.accessKeyId` is required: add it (a string; see config/lethe.example.yaml)');
  });
});
