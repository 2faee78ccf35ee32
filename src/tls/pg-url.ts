import { ErrorCode, LetheError } from '../errors/index.ts';

/**
 * TLS settings travel with a PostgreSQL URL as libpq's own query parameters, `sslmode` and
 * `sslrootcert`: the runtime adds them to a configured database's URL once
 * ({@link withTlsParams}), every place that connects turns the URL into client options
 * with one helper (pgClientConfig), and a URL given on the command line (`restore
 * --target`) can carry them the way psql's would. So the many functions that take a
 * database URL did not have to change, and a URL copied between them cannot lose its TLS.
 */

/** The modes lethe supports; `prefer` and `allow` are left out because they fall back to clear text. */
export const SSL_MODES = ['disable', 'require', 'verify-ca', 'verify-full'] as const;
export type SslMode = (typeof SSL_MODES)[number];

/** How a connection is protected: the mode and, for verify-ca and verify-full, a CA bundle file. */
export interface PgTls {
  readonly sslmode: SslMode;
  /** PEM file of the CA (or CAs) to trust; absent: Node's built-in public CAs (verify-full only). */
  readonly caFile?: string | undefined;
}

/** libpq's TLS parameters lethe reads; the others (client certificates, ...) are refused. */
const TLS_PARAMS: ReadonlySet<string> = new Set(['sslmode', 'sslrootcert']);
const UNSUPPORTED_TLS_PARAMS: ReadonlySet<string> = new Set([
  'ssl',
  'sslcert',
  'sslkey',
  'sslpassword',
  'sslcrl',
  'sslcrldir',
  'sslsni',
  'uselibpqcompat',
]);

/** Where a PostgreSQL URL connects. */
export interface PgEndpoint {
  /** Host name or IP address (IPv6 without brackets); '' for a Unix socket. */
  readonly host: string;
  /** True for a Unix-domain socket, which never leaves the machine. */
  readonly socket: boolean;
}

/**
 * Parses a PostgreSQL URL the way pg does (a `host` query parameter wins over the URL's
 * host; a host starting with `/` is a socket directory); null when it is not a URL at all.
 * Never throws, and never puts the URL (which may hold a password) in anything it returns.
 */
export function parsePgUrl(url: string): URL | null {
  if (url.startsWith('/')) return null;
  try {
    return new URL(url);
  } catch {
    try {
      // pg accepts `postgres://user@/db?host=/run/postgresql`; WHATWG URL wants a host.
      return new URL(url.replace('@/', '@lethe-socket-placeholder/'));
    } catch {
      return null;
    }
  }
}

/**
 * The host a PostgreSQL URL connects to. Throws CONFIG_INVALID (naming `field`, never the
 * URL) when it is not a postgres:// URL.
 */
export function pgEndpoint(url: string, field: string): PgEndpoint {
  if (url.startsWith('/')) return { host: '', socket: true };
  const parsed = parsePgUrl(url);
  if (parsed === null || !/^postgres(ql)?:$|^socket:$/.test(parsed.protocol)) {
    throw new LetheError(
      ErrorCode.CONFIG_INVALID,
      `\`${field}\` is not a PostgreSQL URL: write it as postgres://USER:PASSWORD@HOST:PORT/DATABASE`,
    );
  }
  if (parsed.protocol === 'socket:') return { host: '', socket: true };
  const param = parsed.searchParams.get('host');
  if (param !== null && param !== '') {
    return param.startsWith('/') ? { host: '', socket: true } : { host: param, socket: false };
  }
  const raw = parsed.hostname === 'lethe-socket-placeholder' ? '' : parsed.hostname;
  let host: string;
  try {
    host = decodeURIComponent(raw.replace(/^\[(.+)\]$/, '$1'));
  } catch {
    host = raw;
  }
  // No host at all: pg connects to localhost.
  if (host === '') return { host: 'localhost', socket: false };
  if (host.startsWith('/')) return { host: '', socket: true };
  return { host, socket: false };
}

/**
 * The names of libpq TLS parameters present in the URL's query (`sslmode`, `sslrootcert`,
 * `sslcert`, ...), for config validation that wants them in the config's own fields.
 */
export function tlsParamsIn(url: string): string[] {
  const parsed = parsePgUrl(url);
  if (parsed === null) return [];
  return [...new Set(parsed.searchParams.keys())].filter(
    (k) => TLS_PARAMS.has(k) || UNSUPPORTED_TLS_PARAMS.has(k),
  );
}

/**
 * `url` with `sslmode` (and `sslrootcert` when a CA file is given) set to `tls`, replacing
 * any there. A URL that is not a URL (a bare socket path) is returned as it is when TLS
 * is disabled, and refused (CONFIG_INVALID) otherwise: a socket needs no TLS.
 */
export function withTlsParams(url: string, tls: PgTls): string {
  const parsed = parsePgUrl(url);
  if (parsed === null || parsed.hostname === 'lethe-socket-placeholder') {
    if (tls.sslmode === 'disable') return url;
    throw new LetheError(
      ErrorCode.CONFIG_INVALID,
      `sslmode ${tls.sslmode} is set for a Unix-socket connection, which TLS cannot protect: leave sslmode out`,
    );
  }
  parsed.searchParams.delete('sslrootcert');
  parsed.searchParams.set('sslmode', tls.sslmode);
  if (tls.caFile !== undefined) parsed.searchParams.set('sslrootcert', tls.caFile);
  return parsed.toString();
}

/**
 * The TLS settings a URL carries and the URL without them, for pg. `tls` is undefined when
 * the URL names no `sslmode` (then pg's own default applies: no TLS, or PGSSLMODE).
 * Throws CONFIG_INVALID for an unknown sslmode, a TLS parameter lethe does not support,
 * or `sslrootcert` without a verifying mode.
 */
export function splitTlsParams(url: string): { url: string; tls: PgTls | undefined } {
  const parsed = parsePgUrl(url);
  if (parsed === null) return { url, tls: undefined };
  if (parsed.hostname === 'lethe-socket-placeholder') {
    // A socket: TLS does not apply, and pg reads sslmode=disable itself.
    const mode = parsed.searchParams.get('sslmode');
    if (mode === null || mode === 'disable') return { url, tls: undefined };
    throw new LetheError(
      ErrorCode.CONFIG_INVALID,
      `sslmode ${mode} is set for a Unix-socket connection, which TLS cannot protect: leave sslmode out`,
    );
  }
  const unsupported = [...parsed.searchParams.keys()].filter((k) => UNSUPPORTED_TLS_PARAMS.has(k));
  if (unsupported.length > 0) {
    throw new LetheError(
      ErrorCode.CONFIG_INVALID,
      `the database URL has ${unsupported.map((k) => `\`${k}\``).join(', ')}, which lethe does not support: ` +
        'use sslmode (disable, require, verify-ca or verify-full) and sslrootcert (a CA file) only',
    );
  }
  const mode = parsed.searchParams.get('sslmode');
  const caFile = parsed.searchParams.get('sslrootcert') ?? undefined;
  if (mode === null) {
    if (caFile !== undefined) {
      throw new LetheError(ErrorCode.CONFIG_INVALID, 'the database URL has sslrootcert but no sslmode: add sslmode=verify-full');
    }
    return { url, tls: undefined };
  }
  if (!(SSL_MODES as readonly string[]).includes(mode)) {
    throw new LetheError(
      ErrorCode.CONFIG_INVALID,
      `the database URL has sslmode=${JSON.stringify(mode).slice(1, -1)}, which lethe does not support: use one of ${SSL_MODES.join(', ')}`,
    );
  }
  const sslmode = mode as SslMode;
  if (caFile !== undefined && sslmode !== 'verify-ca' && sslmode !== 'verify-full') {
    throw new LetheError(
      ErrorCode.CONFIG_INVALID,
      `a CA file is given with sslmode ${sslmode}, which does not check the server's certificate: use verify-full`,
    );
  }
  if (sslmode === 'verify-ca' && caFile === undefined) {
    throw new LetheError(
      ErrorCode.CONFIG_INVALID,
      "sslmode verify-ca needs a CA file (caFile): with the public CAs, any certificate they issued to anyone would pass; use verify-full",
    );
  }
  parsed.searchParams.delete('sslmode');
  parsed.searchParams.delete('sslrootcert');
  return { url: parsed.toString(), tls: { sslmode, caFile } };
}
