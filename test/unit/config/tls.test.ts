import { describe, expect, it } from 'vitest';
import { isLetheError } from '../../../src/errors/index.ts';
import { parseConfig } from '../../../src/config/index.ts';

const local = {
  chatStore: { database: { url: 'postgres://reader@127.0.0.1:5432/chat' } },
  vault: { database: { url: 'postgres://lethe@localhost/vault' } },
  storage: { type: 'filesystem', path: './objects' },
  masterKey: { file: './master.key' },
};

function refused(raw: unknown): string {
  try {
    parseConfig(raw, '/etc/lethe', {});
  } catch (err) {
    if (isLetheError(err, 'CONFIG_INVALID')) return err.message;
    throw err;
  }
  throw new Error('expected the config to be refused');
}

const s3 = {
  type: 's3',
  bucket: 'backups',
  accessKeyId: 'AKIAEXAMPLE',
  secretAccessKey: 'example-secret',
  forcePathStyle: true,
};

describe('TLS settings in the config', () => {
  it('needs no TLS on this machine and defaults to sslmode disable', () => {
    const config = parseConfig({ ...local, vault: { database: { url: 'postgres://lethe@[::1]/vault' } } }, '/etc/lethe', {});
    expect(config.chatStore.database.sslmode).toBe('disable');
    expect(config.chatStore.database.allowInsecure).toBe(false);
    expect(config.vault.database.sslmode).toBe('disable');
  });

  it('refuses a remote database without TLS, naming the field and the fix', () => {
    const message = refused({ ...local, vault: { database: { url: 'postgres://lethe:hunter2@vault-db.internal/v' } } });
    expect(message).toContain('`vault.database.sslmode`');
    expect(message).toContain('"vault-db.internal" is not on this machine');
    expect(message).toContain('`sslmode: verify-full`');
    expect(message).toContain('`allowInsecure: true`');
    expect(message).not.toContain('hunter2');
    // A `host` parameter pointing elsewhere counts as remote too.
    expect(refused({ ...local, chatStore: { database: { url: 'postgres://r@127.0.0.1/chat?host=10.1.2.3' } } })).toContain('"10.1.2.3"');
  });

  it('accepts a remote database with TLS, or without it when allowInsecure says so', () => {
    const config = parseConfig(
      {
        ...local,
        chatStore: { database: { url: 'postgres://r@chat-db.internal/chat', sslmode: 'verify-full', caFile: 'ca/db.pem' } },
        vault: { database: { url: 'postgres://l@10.0.0.7/vault', allowInsecure: true } },
      },
      '/etc/lethe',
      {},
    );
    // caFile is relative to the config file.
    expect(config.chatStore.database.caFile).toBe('/etc/lethe/ca/db.pem');
    expect(config.vault.database.sslmode).toBe('disable');
    expect(parseConfig({ ...local, vault: { database: { url: 'postgres://l@db/v', sslmode: 'require' } } }, '/', {}).vault.database.sslmode).toBe('require');
  });

  it('refuses settings that would not do what they say', () => {
    expect(refused({ ...local, vault: { database: { url: 'postgres://l@db/v', sslmode: 'verify-ca' } } })).toContain(
      '`vault.database.caFile`: sslmode verify-ca needs `caFile`',
    );
    expect(refused({ ...local, vault: { database: { url: 'postgres://l@db/v', sslmode: 'require', caFile: '/ca.pem' } } })).toContain(
      'set `sslmode: verify-full`',
    );
    expect(refused({ ...local, vault: { database: { url: 'postgres://l@db/v', sslmode: 'prefer' } } })).toContain(
      'use one of disable, require, verify-ca, verify-full',
    );
    expect(refused({ ...local, vault: { database: { url: 'postgres://l@db/v?sslmode=verify-full' } } })).toContain(
      'remove `sslmode` from the URL',
    );
    expect(
      refused({ ...local, embedded: { dataDir: 'pg', passwordFile: 'pw' }, vault: { database: { embeddedDatabase: 'v', sslmode: 'verify-full' } } }),
    ).toContain('the embedded PostgreSQL listens on 127.0.0.1 without TLS');
  });

  it('checks verify.scratchUrl against the chat store TLS settings it uses', () => {
    expect(refused({ ...local, verify: { scratchUrl: 'postgres://v@scratch.internal/postgres' } })).toContain(
      '`verify.scratchUrl`: the scratch server "scratch.internal" is not on this machine',
    );
    const config = parseConfig(
      {
        ...local,
        chatStore: { database: { url: 'postgres://r@chat-db.internal/chat', sslmode: 'verify-full' } },
        verify: { scratchUrl: 'postgres://v@scratch.internal/postgres' },
      },
      '/',
      {},
    );
    expect(config.verify.scratchUrl).toBe('postgres://v@scratch.internal/postgres');
  });

  it('refuses an http S3 endpoint on another machine unless allowInsecure', () => {
    expect(refused({ ...local, storage: { ...s3, endpoint: 'http://minio.internal:9000' } })).toContain(
      '`storage.endpoint`: the endpoint "minio.internal:9000" is not on this machine and uses http',
    );
    expect(refused({ ...local, storage: { ...s3, endpoint: 'http://127.0.0.1:9000', caFile: 'ca.pem' } })).toContain(
      '`storage.caFile`: `caFile` is used only with an https endpoint',
    );
    const ok = parseConfig({ ...local, storage: { ...s3, endpoint: 'http://minio.internal:9000', allowInsecure: true } }, '/', {});
    expect(ok.storage.type === 's3' && ok.storage.allowInsecure).toBe(true);
    const tls = parseConfig({ ...local, storage: { ...s3, endpoint: 'https://minio.internal:9000', caFile: 'ca.pem' } }, '/etc/lethe', {});
    expect(tls.storage.type === 's3' && tls.storage.caFile).toBe('/etc/lethe/ca.pem');
    // AWS's own endpoint (none configured) is always https.
    expect(parseConfig({ ...local, storage: s3 }, '/', {}).storage.type).toBe('s3');
  });
});
