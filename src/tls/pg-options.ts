import type { ConnectionOptions } from 'node:tls';
import type pg from 'pg';
import { readCaFile } from './ca-file.ts';
import { splitTlsParams, type PgTls } from './pg-url.ts';

/** Everything of pg's client or pool options but where to connect and how to protect it. */
export type PgOptions = Omit<pg.PoolConfig, 'connectionString' | 'ssl'>;

/**
 * node:tls options for a mode: `require` encrypts without checking who answers;
 * `verify-ca` checks that a CA in the bundle signed the certificate but not the name in it
 * (right for a private CA that signs only database servers); `verify-full` checks both,
 * against the CA file or, without one, Node's built-in public CAs.
 */
export function tlsOptions(tls: PgTls): false | ConnectionOptions {
  switch (tls.sslmode) {
    case 'disable':
      return false;
    case 'require':
      return { rejectUnauthorized: false };
    case 'verify-ca':
    case 'verify-full': {
      const ca = tls.caFile === undefined ? undefined : readCaFile(tls.caFile, 'caFile');
      return {
        rejectUnauthorized: true,
        ...(ca === undefined ? {} : { ca }),
        ...(tls.sslmode === 'verify-ca' ? { checkServerIdentity: () => undefined } : {}),
      };
    }
  }
}

/**
 * pg client (or pool) options for `url`, with the TLS its `sslmode` and `sslrootcert`
 * parameters ask for (see pg-url.ts), and `options` (application_name, timeouts, ...).
 * Every connection lethe opens from a configured database goes through here, so TLS is
 * applied the same way everywhere; pg's own reading of those parameters differs from
 * libpq's (its verify-ca checks the host name too) and is not used.
 *
 * A URL without `sslmode` is passed as it is (pg's default: no TLS unless PGSSLMODE says
 * otherwise). Throws CONFIG_INVALID for unsupported parameters or an unreadable CA file.
 */
export function pgClientConfig(url: string, options: PgOptions = {}): pg.PoolConfig {
  const split = splitTlsParams(url);
  if (split.tls === undefined) return { ...options, connectionString: url };
  return { ...options, connectionString: split.url, ssl: tlsOptions(split.tls) };
}
