import pg from 'pg';
import type { DatabaseConfig } from '../config/index.ts';
import { ErrorCode, scrubSecrets, tlsFailureHint, wrapForeign } from '../errors/index.ts';
import { daysUntil, peerCertificateOf, pgClientConfig, pgEndpoint, pgTlsSocket } from '../tls/index.ts';
import { isLoopbackHost } from '../util/net.ts';
import { VAULT_SCHEMA_VERSION } from '../vault/index.ts';
import { vaultTables } from '../vault/schema-name.ts';
import { check, type Check } from './types.ts';

/** A certificate that expires sooner than this is a warning. */
export const CERTIFICATE_WARN_DAYS = 30;
/** Clock skew beyond this (after allowing for the round trip) is a warning. */
export const CLOCK_SKEW_WARN_MS = 5000;
const CONNECT_TIMEOUT_MS = 5000;
const QUERY_TIMEOUT_MS = 10_000;

/** A configured database, as doctor checks it. */
export interface DatabaseTarget {
  /** `chatStore`, `vault` or `scratch`: the prefix of the checks' ids. */
  readonly id: string;
  /** `chat store`, `vault`, `scratch server`, for people. */
  readonly label: string;
  /** The connection URL, TLS parameters included (Runtime.databaseUrl). */
  readonly url: string;
  /** The TLS settings the connection uses. */
  readonly settings: DatabaseConfig;
  /** Where the URL is configured (`vault.database.url`). */
  readonly urlField: string;
  /** Where the TLS settings are configured (`vault.database`). */
  readonly tlsField: string;
}

function field(target: DatabaseTarget, name: string): string {
  return name === 'url' ? `\`${target.urlField}\`` : `\`${target.tlsField}.${name}\``;
}

/**
 * Connects to one database and checks the connection, its TLS and server certificate, and
 * the server's clock; `more` runs further checks on the open connection (the vault's schema
 * version). Never throws: a database that cannot be reached is a failed check, and the
 * checks that need the connection are reported skipped.
 */
export async function checkDatabase(
  target: DatabaseTarget,
  now: () => Date,
  more?: (client: pg.Client) => Promise<Check[]>,
  moreIds: readonly [string, string][] = [],
): Promise<Check[]> {
  const id = target.id;
  const title = (what: string): string => `${target.label}: ${what}`;
  const skipAll = (why: string): Check[] =>
    [
      [`${id}.tls`, 'TLS'],
      [`${id}.certificate`, 'TLS certificate'],
      [`${id}.clock`, 'clock'],
      ...moreIds,
    ].map(([cid, what]) => check(cid ?? '', title(what ?? ''), 'skipped', why));

  let client: pg.Client;
  try {
    client = new pg.Client(
      pgClientConfig(target.url, {
        application_name: 'lethe doctor',
        connectionTimeoutMillis: CONNECT_TIMEOUT_MS,
        query_timeout: QUERY_TIMEOUT_MS,
      }),
    );
  } catch (err) {
    const e = wrapForeign(ErrorCode.CONFIG_INVALID, 'building the connection', err);
    return [check(`${id}.connection`, title('connection'), 'fail', e.message, `fix ${field(target, 'caFile')} or the URL`), ...skipAll('not checked: no connection')];
  }
  client.on('error', () => undefined);
  try {
    await client.connect();
  } catch (err) {
    const e = wrapForeign(ErrorCode.DATABASE, `cannot connect to the ${target.label}`, err);
    const fix =
      tlsFailureHint(err) ??
      `check ${field(target, 'url')} (host, port, database, user, password) and that the server is running and reachable from this host`;
    await client.end().catch(() => undefined);
    return [check(`${id}.connection`, title('connection'), 'fail', e.message, fix), ...skipAll('not checked: cannot connect')];
  }
  try {
    const checks: Check[] = [];
    const { rows } = await client.query<{ version: string; db: string; usr: string }>(
      "SELECT current_setting('server_version') AS version, current_database() AS db, current_user AS usr",
    );
    const info = rows[0];
    const endpoint = pgEndpoint(target.url, target.urlField);
    const where = endpoint.socket ? 'a Unix socket' : endpoint.host;
    checks.push(
      check(
        `${id}.connection`,
        title('connection'),
        'ok',
        `PostgreSQL ${info?.version ?? '?'} on ${where}, database ${info?.db ?? '?'}, role ${info?.usr ?? '?'}${target.settings.embeddedDatabase === undefined ? '' : ' (embedded)'}`,
      ),
    );
    checks.push(...tlsChecks(target, client, endpoint.socket || isLoopbackHost(endpoint.host), now()));
    checks.push(await clockCheck(target, client));
    if (more !== undefined) checks.push(...(await more(client)));
    return checks;
  } catch (err) {
    const e = wrapForeign(ErrorCode.DATABASE, `checking the ${target.label}`, err);
    return [check(`${id}.connection`, title('connection'), 'fail', e.message, `check the role in ${field(target, 'url')}`), ...skipAll('not checked: the connection failed')];
  } finally {
    await client.end().catch(() => undefined);
  }
}

function tlsChecks(target: DatabaseTarget, client: pg.Client, local: boolean, now: Date): Check[] {
  const id = target.id;
  const title = (what: string): string => `${target.label}: ${what}`;
  const socket = pgTlsSocket(client);
  const mode = target.settings.sslmode;
  if (socket === null) {
    const tls = local
      ? check(`${id}.tls`, title('TLS'), 'ok', 'not encrypted: the server is on this machine')
      : check(
          `${id}.tls`,
          title('TLS'),
          'warn',
          'not encrypted: passwords and data cross the network in clear (allowInsecure is set)',
          `turn TLS on at the server, then set ${field(target, 'sslmode')}: verify-full (with caFile) and remove allowInsecure`,
        );
    return [tls, check(`${id}.certificate`, title('TLS certificate'), 'skipped', 'no TLS')];
  }
  const cert = peerCertificateOf(socket);
  const protocol = socket.getProtocol() ?? 'TLS';
  const tls =
    mode === 'verify-full'
      ? check(`${id}.tls`, title('TLS'), 'ok', `${protocol}; certificate and host name verified (verify-full)`)
      : mode === 'verify-ca'
        ? check(`${id}.tls`, title('TLS'), 'ok', `${protocol}; certificate verified against caFile, host name not checked (verify-ca)`)
        : local
          ? check(`${id}.tls`, title('TLS'), 'ok', `${protocol}; server not authenticated (sslmode ${mode}), on this machine`)
          : check(
              `${id}.tls`,
              title('TLS'),
              'warn',
              `${protocol}, but the server is not authenticated (sslmode ${mode}): whoever can intercept the connection can pose as the server`,
              `set ${field(target, 'sslmode')}: verify-full (and caFile for a private CA)`,
            );
  return [tls, certificateCheck(`${id}.certificate`, title('TLS certificate'), cert, now)];
}

/** The expiry check of a server certificate (databases and the bucket alike). */
export function certificateCheck(
  id: string,
  title: string,
  cert: ReturnType<typeof peerCertificateOf>,
  now: Date,
): Check {
  if (cert === null) return check(id, title, 'unknown', 'the server sent no certificate');
  const days = daysUntil(cert.validTo, now);
  const until = cert.validTo.toISOString().slice(0, 10);
  const who = `${cert.subject === '' ? cert.altNames : `CN=${cert.subject}`}, issued by ${cert.issuer === '' ? '?' : cert.issuer}`;
  if (days < 0) {
    return check(id, title, 'fail', `${who}: expired on ${until}`, 'renew the server certificate now');
  }
  if (days < CERTIFICATE_WARN_DAYS) {
    return check(id, title, 'warn', `${who}: expires on ${until}, in ${days} days`, `renew the server certificate before ${until}`);
  }
  return check(id, title, 'ok', `${who}: valid until ${until} (${days} days)`);
}

/** The server's clock against this host's, allowing for the round trip. */
async function clockCheck(target: DatabaseTarget, client: pg.Client): Promise<Check> {
  const before = Date.now();
  const { rows } = await client.query<{ t: Date }>('SELECT clock_timestamp() AS t');
  const after = Date.now();
  const server = rows[0]?.t.getTime() ?? NaN;
  const skew = server - (before + after) / 2;
  const margin = (after - before) / 2;
  const title = `${target.label}: clock`;
  const seconds = (Math.abs(skew) / 1000).toFixed(1);
  if (!Number.isFinite(skew)) return check(`${target.id}.clock`, title, 'unknown', 'the server did not tell its time');
  if (Math.abs(skew) - margin > CLOCK_SKEW_WARN_MS) {
    return check(
      `${target.id}.clock`,
      title,
      'warn',
      `the server's clock is ${seconds} s ${skew > 0 ? 'ahead of' : 'behind'} this host's`,
      'synchronise both clocks (NTP: chrony or systemd-timesyncd); snapshot times, retention dates and RPO are compared across them',
    );
  }
  return check(`${target.id}.clock`, title, 'ok', `within ${seconds} s of this host's`);
}

/** The vault's schema against the version this lethe needs, on an open vault connection. */
export async function vaultSchemaCheck(client: pg.Client, schema: string): Promise<Check> {
  const title = 'vault: schema version';
  const t = vaultTables(schema);
  const present = await client.query<{ present: boolean }>('SELECT to_regclass($1) IS NOT NULL AS present', [t.migrations]);
  if (present.rows[0]?.present !== true) {
    return check('vault.schema', title, 'fail', `no vault in schema "${schema}" of this database`, 'run `lethe init` with this config');
  }
  const { rows } = await client.query<{ version: number | null }>(`SELECT max(version) AS version FROM ${t.migrations}`);
  const version = rows[0]?.version ?? 0;
  if (version < VAULT_SCHEMA_VERSION) {
    return check(
      'vault.schema',
      title,
      'fail',
      `schema "${schema}" is at version ${version}; this lethe needs ${VAULT_SCHEMA_VERSION}`,
      'stop the scheduled jobs and run `lethe init` to migrate it',
    );
  }
  if (version > VAULT_SCHEMA_VERSION) {
    return check(
      'vault.schema',
      title,
      'fail',
      `schema "${schema}" is at version ${version}, written by a newer lethe (this one knows ${VAULT_SCHEMA_VERSION})`,
      'upgrade lethe on this host',
    );
  }
  return check('vault.schema', title, 'ok', `schema "${schema}" at version ${version}, current`);
}

/** A message safe to show for any error. */
export function describeError(err: unknown): string {
  return scrubSecrets(err instanceof Error ? err.message : String(err));
}
