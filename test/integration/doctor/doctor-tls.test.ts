import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Check, DoctorReport } from '../../../src/doctor/index.ts';
import { REFERENCE_SCHEMA_SQL } from '../../../src/store/index.ts';
import { pgClientConfig, withTlsParams } from '../../../src/tls/index.ts';
import { startExtraPostgres, type ExtraPostgres } from '../../helpers/extra-postgres.ts';
import { createLetheEnv, expectExit, jsonOut, type LetheEnv, type TestDatabase } from '../../helpers/lethe-env.ts';
import { startS3rver, type S3rverHandle } from '../../helpers/s3.ts';
import { createCa, handToPostgres, issueServerCert, type CertFiles } from '../../helpers/tls-certs.ts';
import { createTinyChatTemplate, ROWS_SQL } from '../e2e/tiny-chat-store.ts';

/**
 * lethe with TLS everywhere, through the CLI: PostgreSQL (chat store and vault) with ssl=on
 * and a certificate that expires in 10 days, and s3rver over https, both signed by a CA this
 * test makes with openssl and names in `caFile`. init, backup and verify work over it, and
 * doctor reports TLS on each connection and the certificate that expires soon.
 */

let dir: string;
let ca: CertFiles;
let otherCa: CertFiles;
let server: ExtraPostgres;
let s3: S3rverHandle;
let template: TestDatabase;
let env: LetheEnv;
let config: string;

function byId(r: DoctorReport, id: string): Check {
  const found = r.checks.find((c) => c.id === id);
  if (found === undefined) throw new Error(`no check ${id}`);
  return found;
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'lethe-doctor-tls-'));
  await chmod(dir, 0o755);
  ca = await createCa(dir, 'doctor-test-ca');
  otherCa = await createCa(dir, 'unrelated-ca');
  const db = await issueServerCert(dir, ca, 'db-soon', ['IP:127.0.0.1'], 10);
  await handToPostgres(db);
  const bucket = await issueServerCert(dir, ca, 's3-host', ['IP:127.0.0.1'], 400);
  const hba = join(dir, 'pg_hba.conf');
  await writeFile(hba, 'host postgres all 127.0.0.1/32 scram-sha-256\nhostssl all all 127.0.0.1/32 scram-sha-256\n', { mode: 0o644 });
  server = await startExtraPostgres(['ssl=on', `ssl_cert_file=${db.cert}`, `ssl_key_file=${db.key}`, `hba_file=${hba}`]);
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
  s3 = await startS3rver({ cert: bucket.cert, key: bucket.key });
  template = await createTinyChatTemplate('doctor_tls_tpl');
  env = await createLetheEnv({ template: template.name, storage: { type: 's3', server: s3 } });
  const tls = { sslmode: 'verify-full', caFile: ca.cert };
  config = await env.writeConfig('tls.yaml', {
    ...env.raw,
    chatStore: { ...(env.raw['chatStore'] as Record<string, unknown>), database: { url: server.url('chat'), ...tls } },
    vault: { database: { url: server.url('vault'), ...tls }, schema: 'lethe' },
    storage: { ...(env.raw['storage'] as Record<string, unknown>), caFile: ca.cert },
  });
});

afterAll(async () => {
  // Whatever beforeAll got to before a failure.
  await (env as LetheEnv | undefined)?.cleanup();
  await (template as TestDatabase | undefined)?.drop();
  await (s3 as S3rverHandle | undefined)?.stop();
  await (server as ExtraPostgres | undefined)?.stop();
  await rm(dir, { recursive: true, force: true });
});

describe('TLS everywhere, through the CLI', () => {
  it('initialises, backs up to an https bucket and verifies, with each CA from caFile', async () => {
    expect(s3.endpoint).toMatch(/^https:/);
    expectExit(await env.cli(['init', '--config', config]), 0);
    const taken = await env.cli(['backup', '--json', '--config', config]);
    expectExit(taken, 0);
    expect((jsonOut(taken) as { rows: number }).rows).toBeGreaterThan(10);
    expectExit(await env.cli(['verify', '--snapshot', 'latest', '--config', config]), 0);
  });

  it('doctor: TLS verified on each connection, and the certificate that expires in 10 days is a finding', async () => {
    const result = await env.cli(['doctor', '--json', '--config', config]);
    expectExit(result, 3);
    const r = jsonOut(result) as DoctorReport;
    for (const id of ['chatStore', 'vault']) {
      expect(byId(r, `${id}.tls`)).toMatchObject({ status: 'ok', detail: expect.stringMatching(/^TLSv1\.[23]; certificate and host name verified \(verify-full\)$/) as unknown });
      const cert = byId(r, `${id}.certificate`);
      expect(cert.status).toBe('warn');
      expect(cert.detail).toMatch(/CN=db-soon, issued by doctor-test-ca: expires on \d{4}-\d\d-\d\d, in (9|10) days/);
      expect(cert.fix).toMatch(/^renew the server certificate before/);
    }
    expect(byId(r, 'storage.tls').detail).toContain('certificate and host name verified');
    expect(byId(r, 'storage.certificate')).toMatchObject({ status: 'ok', detail: expect.stringMatching(/CN=s3-host, issued by doctor-test-ca: valid until .* \((399|400) days\)/) as unknown });
    expect(byId(r, 'storage.credentials.put').status).toBe('ok');
    // Only the two certificates are findings.
    expect(r.checks.filter((c) => c.status === 'warn' || c.status === 'fail').map((c) => c.id).sort()).toEqual(['chatStore.certificate', 'vault.certificate']);
  });

  it('doctor and the backup name storage.caFile when the bucket is signed by another CA', async () => {
    const wrong = await env.writeConfig('wrong-s3-ca.yaml', {
      ...env.raw,
      chatStore: { ...(env.raw['chatStore'] as Record<string, unknown>), database: { url: server.url('chat'), sslmode: 'verify-full', caFile: ca.cert } },
      vault: { database: { url: server.url('vault'), sslmode: 'verify-full', caFile: ca.cert }, schema: 'lethe' },
      storage: { ...(env.raw['storage'] as Record<string, unknown>), caFile: otherCa.cert },
    });
    const result = await env.cli(['doctor', '--json', '--config', wrong]);
    expectExit(result, 3);
    const r = jsonOut(result) as DoctorReport;
    expect(byId(r, 'storage.tls')).toMatchObject({ status: 'fail', fix: expect.stringContaining('set `storage.caFile`') as unknown });
    expect(byId(r, 'storage.connection')).toMatchObject({ status: 'fail', fix: expect.stringContaining('set `storage.caFile`') as unknown });
    const backup = await env.cli(['backup', '--config', wrong]);
    expect(backup.code).not.toBe(0);
    expect(backup.stderr).toContain('not signed by a CA lethe trusts: set `storage.caFile`');
  });
});
