import { pgEndpoint, tlsParamsIn, type SslMode } from '../tls/pg-url.ts';
import { isLoopbackHost } from '../util/net.ts';

/**
 * The TLS rules of the config, as pure checks the zod schema runs: a connection to another
 * machine must be encrypted unless the config says `allowInsecure: true`, and TLS settings
 * live in the config's own fields, where these rules can see them, not in a URL's query.
 */

/** One problem, with the path below the schema it was found in. */
export interface TlsIssue {
  readonly path: (string | number)[];
  readonly message: string;
}

interface DatabaseTls {
  readonly url?: string | undefined;
  readonly embeddedDatabase?: string | undefined;
  readonly sslmode: SslMode;
  readonly caFile?: string | undefined;
  readonly allowInsecure: boolean;
}

/** Where a database URL points, or null (with an issue) when it is not a postgres:// URL. */
function remoteHost(url: string, issues: TlsIssue[], path: (string | number)[]): string | null {
  try {
    const endpoint = pgEndpoint(url, path.join('.'));
    return endpoint.socket || isLoopbackHost(endpoint.host) ? null : endpoint.host;
  } catch {
    issues.push({ path, message: 'not a PostgreSQL URL: write it as postgres://USER:PASSWORD@HOST:PORT/DATABASE' });
    return null;
  }
}

function paramsInUrl(url: string, path: (string | number)[], fields: string): TlsIssue[] {
  const params = tlsParamsIn(url);
  if (params.length === 0) return [];
  return [
    {
      path,
      message: `remove ${params.map((p) => `\`${p}\``).join(', ')} from the URL and set TLS with ${fields}`,
    },
  ];
}

/** Issues of one `database` section (chatStore.database, vault.database). */
export function databaseTlsIssues(d: DatabaseTls): TlsIssue[] {
  const issues: TlsIssue[] = [];
  if (d.embeddedDatabase !== undefined) {
    if (d.sslmode !== 'disable' || d.caFile !== undefined) {
      issues.push({
        path: ['sslmode'],
        message: 'the embedded PostgreSQL listens on 127.0.0.1 without TLS: leave `sslmode` and `caFile` out',
      });
    }
    return issues;
  }
  if (d.url === undefined) return issues;
  issues.push(...paramsInUrl(d.url, ['url'], '`sslmode` and `caFile` beside `url`'));
  const host = remoteHost(d.url, issues, ['url']);
  if (host !== null && d.sslmode === 'disable' && !d.allowInsecure) {
    issues.push({
      path: ['sslmode'],
      message:
        `the server ${JSON.stringify(host)} is not on this machine and TLS is off (sslmode disable): ` +
        'set `sslmode: verify-full` (with `caFile: /path/to/ca.pem` for a private CA), or set ' +
        '`allowInsecure: true` to send passwords and data unencrypted',
    });
  }
  if (d.sslmode === 'verify-ca' && d.caFile === undefined) {
    issues.push({
      path: ['caFile'],
      message:
        'sslmode verify-ca needs `caFile`: against the public CAs it would accept a certificate issued to anyone; ' +
        'give the CA that signs your database servers, or use verify-full',
    });
  }
  if (d.caFile !== undefined && (d.sslmode === 'disable' || d.sslmode === 'require')) {
    issues.push({
      path: ['caFile'],
      message: `\`caFile\` is used only to verify the server, which sslmode ${d.sslmode} does not do: set \`sslmode: verify-full\``,
    });
  }
  return issues;
}

interface StorageTls {
  readonly endpoint?: string | undefined;
  readonly caFile?: string | undefined;
  readonly allowInsecure: boolean;
}

/** Issues of an S3 `storage` section. */
export function storageTlsIssues(s: StorageTls): TlsIssue[] {
  if (s.endpoint === undefined) return [];
  let url: URL;
  try {
    url = new URL(s.endpoint);
  } catch {
    return []; // the endpoint's own check reports it
  }
  const issues: TlsIssue[] = [];
  if (url.protocol === 'http:') {
    if (!isLoopbackHost(url.hostname) && !s.allowInsecure) {
      issues.push({
        path: ['endpoint'],
        message:
          `the endpoint ${JSON.stringify(url.host)} is not on this machine and uses http: use https, or set ` +
          '`allowInsecure: true` to accept that anyone on the network path can read and alter the requests',
      });
    }
    if (s.caFile !== undefined) {
      issues.push({ path: ['caFile'], message: '`caFile` is used only with an https endpoint' });
    }
  } else if (url.protocol !== 'https:') {
    issues.push({ path: ['endpoint'], message: `use an https:// (or, on this machine, http://) URL, not ${url.protocol}` });
  }
  return issues;
}

/**
 * Issues of `verify.scratchUrl`, which is on the chat store's server or one like it and
 * uses the chat store's TLS settings (`sslmode`, `caFile`, `allowInsecure`).
 */
export function scratchTlsIssues(scratchUrl: string, chat: DatabaseTls): TlsIssue[] {
  const issues = paramsInUrl(scratchUrl, [], '`chatStore.database.sslmode` and `caFile`, which it uses');
  const host = remoteHost(scratchUrl, issues, []);
  if (host !== null && chat.sslmode === 'disable' && !chat.allowInsecure) {
    issues.push({
      path: [],
      message:
        `the scratch server ${JSON.stringify(host)} is not on this machine and uses the chat store's TLS settings, ` +
        'which have TLS off: set `chatStore.database.sslmode: verify-full` (and `caFile`)',
    });
  }
  if (host !== null && chat.embeddedDatabase !== undefined) {
    issues.push({
      path: [],
      message: 'the chat store is embedded (no TLS settings to use) and the scratch server is not on this machine: use a scratch server on this machine',
    });
  }
  return issues;
}
