import { describe, expect, it } from 'vitest';
import { isLetheError } from '../../../src/errors/index.ts';
import { pgClientConfig, pgEndpoint, splitTlsParams, tlsParamsIn, withTlsParams } from '../../../src/tls/index.ts';
import { isLoopbackHost } from '../../../src/util/net.ts';

function refusal(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    if (isLetheError(err, 'CONFIG_INVALID')) return err.message;
    throw err;
  }
  throw new Error('expected CONFIG_INVALID');
}

describe('pgEndpoint', () => {
  it('finds the host pg connects to', () => {
    expect(pgEndpoint('postgres://u:p@db.internal:5432/chat', 'f')).toEqual({ host: 'db.internal', socket: false });
    expect(pgEndpoint('postgresql://u@[::1]:5432/chat', 'f')).toEqual({ host: '::1', socket: false });
    // A `host` parameter wins over the URL's host, as in pg.
    expect(pgEndpoint('postgres://u@127.0.0.1/chat?host=db.example.com', 'f')).toEqual({ host: 'db.example.com', socket: false });
    expect(pgEndpoint('postgres://u@/chat?host=/run/postgresql', 'f')).toEqual({ host: '', socket: true });
    expect(pgEndpoint('/run/postgresql chat', 'f').socket).toBe(true);
    expect(pgEndpoint('postgres:///chat', 'f')).toEqual({ host: 'localhost', socket: false });
  });

  it('refuses what is not a postgres URL, without echoing it', () => {
    const message = refusal(() => pgEndpoint('mysql://u:hunter2@db/x', 'chatStore.database.url'));
    expect(message).toContain('`chatStore.database.url` is not a PostgreSQL URL');
    expect(message).not.toContain('hunter2');
  });
});

describe('isLoopbackHost', () => {
  it('accepts only addresses that stay on this machine', () => {
    for (const host of ['localhost', 'LOCALHOST', '127.0.0.1', '127.1.2.3', '::1', '[::1]']) expect(isLoopbackHost(host), host).toBe(true);
    for (const host of ['db.internal', '10.0.0.1', '127.0.0.256', '127.0.0.1.example.com', 'localhost.example.com', '::2', '0.0.0.0', ''])
      expect(isLoopbackHost(host), host).toBe(false);
  });
});

describe('TLS parameters on a URL', () => {
  it('round-trips through withTlsParams and splitTlsParams', () => {
    const url = withTlsParams('postgres://u:p%40ss@db.internal:5432/chat?application_name=x', {
      sslmode: 'verify-full',
      caFile: '/etc/lethe/ca.pem',
    });
    expect(tlsParamsIn(url).sort()).toEqual(['sslmode', 'sslrootcert']);
    const split = splitTlsParams(url);
    expect(split.tls).toEqual({ sslmode: 'verify-full', caFile: '/etc/lethe/ca.pem' });
    expect(split.url).toBe('postgres://u:p%40ss@db.internal:5432/chat?application_name=x');
  });

  it('replaces TLS parameters already on the URL', () => {
    const url = withTlsParams('postgres://u@h/d?sslmode=require&sslrootcert=/old.pem', { sslmode: 'disable' });
    expect(splitTlsParams(url).tls).toEqual({ sslmode: 'disable', caFile: undefined });
  });

  it('leaves a URL without sslmode to pg', () => {
    expect(splitTlsParams('postgres://u@h/d').tls).toBeUndefined();
    expect(pgClientConfig('postgres://u@h/d')).toEqual({ connectionString: 'postgres://u@h/d' });
  });

  it('refuses modes and parameters lethe does not support', () => {
    expect(refusal(() => splitTlsParams('postgres://u@h/d?sslmode=prefer'))).toContain('verify-full');
    expect(refusal(() => splitTlsParams('postgres://u@h/d?sslmode=verify-full&sslcert=/c.pem'))).toContain('`sslcert`');
    expect(refusal(() => splitTlsParams('postgres://u@h/d?sslmode=require&sslrootcert=/c.pem'))).toContain('use verify-full');
    expect(refusal(() => splitTlsParams('postgres://u@h/d?sslmode=verify-ca'))).toContain('needs a CA file');
    expect(refusal(() => splitTlsParams('postgres://u@h/d?sslrootcert=/c.pem'))).toContain('no sslmode');
    expect(refusal(() => withTlsParams('/run/postgresql chat', { sslmode: 'require' }))).toContain('Unix-socket');
  });

  it('turns each mode into the TLS options pg needs', () => {
    expect(pgClientConfig('postgres://u@h/d?sslmode=disable', { application_name: 'a' })).toEqual({
      application_name: 'a',
      connectionString: 'postgres://u@h/d',
      ssl: false,
    });
    expect(pgClientConfig('postgres://u@h/d?sslmode=require').ssl).toEqual({ rejectUnauthorized: false });
    const full = pgClientConfig('postgres://u@h/d?sslmode=verify-full').ssl;
    expect(full).toEqual({ rejectUnauthorized: true });
  });

  it('names an unreadable CA file and the fix', () => {
    const message = refusal(() => pgClientConfig('postgres://u@h/d?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem'));
    expect(message).toContain('/nonexistent/ca.pem');
    expect(message).toContain('ENOENT');
  });
});
