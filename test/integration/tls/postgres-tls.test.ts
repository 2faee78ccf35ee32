import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../../../src/config/index.ts';
import { isLetheError, type LetheError } from '../../../src/errors/index.ts';
import { backup, initialize, verify } from '../../../src/jobs/tasks.ts';
import { Runtime } from '../../../src/jobs/runtime.ts';
import { createLogger } from '../../../src/log/index.ts';
import { BUILTIN_BLOB_STORE } from '../../../src/mapping/index.ts';
import { REFERENCE_SCHEMA_SQL, withClient } from '../../../src/store/index.ts';
import { peerCertificateOf, pgClientConfig, pgTlsSocket, withTlsParams, type SslMode } from '../../../src/tls/index.ts';
import { startExtraPostgres, type ExtraPostgres } from '../../helpers/extra-postgres.ts';
import { createCa, handToPostgres, issueServerCert, type CertFiles } from '../../helpers/tls-certs.ts';
import { ROWS_SQL } from '../e2e/tiny-chat-store.ts';

/**
 * lethe against a PostgreSQL with TLS on, with a CA and server certificates this test makes
 * with `openssl`. The server accepts clear text only on its `postgres` database (where the
 * harness checks that it is up and creates databases); every other database takes TLS
 * connections only, so any connection lethe opened without TLS would fail the round trip.
 */

let dir: string;
let server: ExtraPostgres;
let ca: CertFiles;
let otherCa: CertFiles;
let good: CertFiles;
let misnamed: CertFiles;
/** The files the server's ssl_cert_file and ssl_key_file name. */
let served: CertFiles;
const runtimes: Runtime[] = [];

function runtime(database: string, tls: { sslmode?: SslMode; caFile?: string }, extra: Record<string, unknown> = {}): Runtime {
  const url = server.url(database);
  const raw = {
    // The built-in mapping's `files` table keeps its bytes in a blob store (empty here).
    chatStore: { database: { url, ...tls }, blobStores: { [BUILTIN_BLOB_STORE]: { url: 'chat-files' } } },
    vault: { database: { url: server.url('vault'), ...tls } },
    storage: { type: 'filesystem', path: 'store' },
    masterKey: { file: 'master.key' },
    signingKeys: { backup: { file: 'backup.key' }, lifecycle: { file: 'lifecycle.key' } },
    backup: { packSizeMiB: 1 },
    ...extra,
  };
  const rt = new Runtime(parseConfig(raw, dir, {}), createLogger('silent'));
  runtimes.push(rt);
  return rt;
}

/** What the server says about this connection's TLS, through lethe's own connection code. */
async function sslOfChatStore(rt: Runtime): Promise<{ ssl: boolean; version: string | null }> {
  return withClient(await rt.chatStoreUrl(), 'checking TLS', async (client) => {
    const { rows } = await client.query<{ ssl: boolean; version: string | null }>(
      'SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()',
    );
    const row = rows[0];
    if (row === undefined) throw new Error('no pg_stat_ssl row');
    return row;
  });
}

async function refusal(promise: Promise<unknown>): Promise<LetheError> {
  try {
    await promise;
  } catch (err) {
    if (isLetheError(err)) return err;
    throw err;
  }
  throw new Error('expected the connection to be refused');
}

/**
 * Serves `cert` from now on, and waits until a new connection is handed it. The server reads
 * its certificate from fixed paths (given on its command line, which ALTER SYSTEM cannot
 * override), so the files there are replaced and the configuration reloaded.
 */
async function serve(cert: CertFiles, subject: string): Promise<void> {
  await writeFile(served.cert, await readFile(cert.cert));
  await writeFile(served.key, await readFile(cert.key));
  const admin = new pg.Client({ connectionString: server.url('postgres') });
  await admin.connect();
  try {
    await admin.query('SELECT pg_reload_conf()');
  } finally {
    await admin.end();
  }
  const url = withTlsParams(server.url('postgres'), { sslmode: 'require' });
  for (let attempt = 0; attempt < 100; attempt += 1) {
    const client = new pg.Client(pgClientConfig(url));
    await client.connect();
    const socket = pgTlsSocket(client);
    const seen = socket === null ? null : peerCertificateOf(socket)?.subject;
    await client.end();
    if (seen === subject) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`the server never served ${subject}`);
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'lethe-tls-'));
  // The server (as `postgres` when tests run as root) reads its certificate from here.
  await chmod(dir, 0o755);
  await mkdir(join(dir, 'chat-files'), { mode: 0o700 });
  ca = await createCa(dir, 'lethe-test-ca');
  otherCa = await createCa(dir, 'other-ca');
  good = await issueServerCert(dir, ca, 'db-good', ['IP:127.0.0.1', 'DNS:localhost']);
  misnamed = await issueServerCert(dir, ca, 'db-misnamed', ['DNS:db.example.com']);
  served = { cert: join(dir, 'served.pem'), key: join(dir, 'served.key') };
  await writeFile(served.cert, await readFile(good.cert), { mode: 0o644 });
  await writeFile(served.key, await readFile(good.key), { mode: 0o600 });
  await handToPostgres(served);
  const hba = join(dir, 'pg_hba.conf');
  await writeFile(
    hba,
    'host    postgres all 127.0.0.1/32 scram-sha-256\n' + 'hostssl all      all 127.0.0.1/32 scram-sha-256\n',
    { mode: 0o644 },
  );
  server = await startExtraPostgres(['ssl=on', `ssl_cert_file=${served.cert}`, `ssl_key_file=${served.key}`, `hba_file=${hba}`]);
  await server.createDatabase('chat');
  await server.createDatabase('vault');
  const chat = new pg.Client(pgClientConfig(withTlsParams(server.url('chat'), { sslmode: 'verify-full', caFile: ca.cert })));
  await chat.connect();
  try {
    await chat.query(REFERENCE_SCHEMA_SQL);
    await chat.query(ROWS_SQL);
  } finally {
    await chat.end();
  }
});

afterAll(async () => {
  for (const rt of runtimes) await rt.close();
  await (server as ExtraPostgres | undefined)?.stop();
  await rm(dir, { recursive: true, force: true });
});

describe('PostgreSQL over TLS', () => {
  it('connects with verify-full and the CA that signed the server certificate', async () => {
    const rt = runtime('chat', { sslmode: 'verify-full', caFile: ca.cert });
    const ssl = await sslOfChatStore(rt);
    expect(ssl.ssl).toBe(true);
    expect(ssl.version).toMatch(/^TLSv1\.[23]$/);
  });

  it('refuses a server whose certificate another CA signed, saying to set caFile', async () => {
    const rt = runtime('chat', { sslmode: 'verify-full', caFile: otherCa.cert });
    const err = await refusal(sslOfChatStore(rt));
    expect(err.code).toBe('DATABASE');
    expect(err.message).toContain('cannot connect');
    expect(err.message).toContain("not signed by a CA lethe trusts: set `caFile`");
    // Without a caFile, verify-full trusts only the public CAs, which did not sign this one either.
    const publicOnly = await refusal(sslOfChatStore(runtime('chat', { sslmode: 'verify-full' })));
    expect(publicOnly.message).toContain('not signed by a CA lethe trusts');
  });

  it('says that the server takes TLS connections only when sslmode is disable', async () => {
    const err = await refusal(sslOfChatStore(runtime('chat', {})));
    expect(err.code).toBe('DATABASE');
    expect(err.message).toContain('accepts only TLS connections: set `sslmode: verify-full`');
  });

  it('encrypts with sslmode require without checking the certificate', async () => {
    const ssl = await sslOfChatStore(runtime('chat', { sslmode: 'require' }));
    expect(ssl.ssl).toBe(true);
  });

  it('refuses sslmode disable to a database on another host before connecting', () => {
    const raw = {
      chatStore: { database: { url: 'postgres://lethe@db.example.com:5432/chat', sslmode: 'disable' } },
      vault: { database: { url: server.url('vault') } },
      storage: { type: 'filesystem', path: 'store' },
      masterKey: { file: 'master.key' },
    };
    expect(() => parseConfig(raw, dir, {})).toThrow(/`chatStore\.database\.sslmode`: the server "db\.example\.com" is not on this machine/);
  });

  it('backs up and verifies with every connection over TLS', async () => {
    const rt = runtime('chat', { sslmode: 'verify-full', caFile: ca.cert });
    await initialize(rt, 'tls-test');
    const taken = await backup(rt, { actor: 'tls-test' });
    expect(taken.rows).toBeGreaterThan(10);
    const checked = await verify(rt, { snapshot: taken.snapshotId, actor: 'tls-test' });
    expect(checked.ok).toBe(true);
    expect(checked.cellsVerified).toBe(taken.cells);
  });

  it('refuses a certificate for another name under verify-full and accepts it under verify-ca', async () => {
    await serve(misnamed, 'db-misnamed');
    try {
      const full = await refusal(sslOfChatStore(runtime('chat', { sslmode: 'verify-full', caFile: ca.cert })));
      expect(full.code).toBe('DATABASE');
      expect(full.message).toContain("is not for the host name in the URL");
      expect(full.message).toContain('verify-ca');
      const ssl = await sslOfChatStore(runtime('chat', { sslmode: 'verify-ca', caFile: ca.cert }));
      expect(ssl.ssl).toBe(true);
      // verify-ca still checks the CA.
      const wrongCa = await refusal(sslOfChatStore(runtime('chat', { sslmode: 'verify-ca', caFile: otherCa.cert })));
      expect(wrongCa.message).toContain('not signed by a CA lethe trusts');
    } finally {
      await serve(good, 'db-good');
    }
  });
});
