import { chmod, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Check, DoctorReport } from '../../../src/doctor/index.ts';
import { createLetheEnv, expectExit, filesUnder, jsonOut, type LetheEnv, type TestDatabase } from '../../helpers/lethe-env.ts';
import { freePort } from '../../helpers/ports.ts';
import { startS3rver, type S3rverHandle } from '../../helpers/s3.ts';
import { createTinyChatTemplate } from '../e2e/tiny-chat-store.ts';

/**
 * `lethe doctor` end to end, through the CLI: a clean deployment exits 0, each kind of
 * problem is a finding (exit 3) that names its fix, an unusable config exits 2, and nothing
 * it finds ends in a stack trace.
 */

function report(result: Awaited<ReturnType<LetheEnv['cli']>>): DoctorReport {
  return jsonOut(result) as DoctorReport;
}

function byId(r: DoctorReport, id: string): Check {
  const found = r.checks.find((c) => c.id === id);
  if (found === undefined) throw new Error(`no check ${id} in ${r.checks.map((c) => c.id).join(', ')}`);
  return found;
}

function expectNoStack(text: string): void {
  expect(text).not.toMatch(/^\s+at .+\(.+:\d+:\d+\)$/m);
  expect(text).not.toContain('Unhandled');
}

let template: TestDatabase;

beforeAll(async () => {
  template = await createTinyChatTemplate('doctor_tpl');
});

afterAll(async () => {
  await template.drop();
});

describe('lethe doctor on a filesystem store', () => {
  let env: LetheEnv;

  beforeAll(async () => {
    env = await createLetheEnv({ template: template.name });
    expectExit(await env.cli(['init']), 0);
  });

  afterAll(async () => {
    await env.cleanup();
  });

  it('passes a clean deployment: exit 0, a table of checks, and JSON that parses', async () => {
    const human = await env.cli(['doctor']);
    expectExit(human, 0);
    expect(human.stdout).toMatch(/^ok\s+chat store: connection\s+PostgreSQL \d+/m);
    expect(human.stdout).toMatch(/^ok\s+vault: schema version\s+schema "lethe" at version \d+, current/m);
    expect(human.stdout).toMatch(/no findings \(\d+ checks\)/);

    const result = await env.cli(['doctor', '--json']);
    expectExit(result, 0);
    const r = report(result);
    expect(r.ok).toBe(true);
    expect(r.findings).toBe(0);
    expect(r.jobs).toEqual(['all']);
    for (const id of ['config', 'chatStore.connection', 'chatStore.tls', 'chatStore.clock', 'vault.connection', 'vault.schema', 'storage.connection', 'masterKey.file', 'masterKey.vault', 'signingKeys.backup.vault', 'signingKeys.lifecycle.vault']) {
      expect(byId(r, id).status, id).toBe('ok');
    }
    for (const op of ['list', 'put', 'get', 'delete']) expect(byId(r, `storage.credentials.${op}`).status, op).toBe('ok');
    expect(byId(r, 'chatStore.tls').detail).toContain('on this machine');
    expect(byId(r, 'chatStore.certificate').status).toBe('skipped');
    expect(byId(r, 'storage.credentials.scope').status).toBe('unknown');
    // The probe object was deleted again.
    expect((await filesUnder(env.storePath ?? '')).filter((f) => f.startsWith('doctor/'))).toEqual([]);
  });

  it('fails a master key others can read, naming chmod 600', async () => {
    await chmod(env.masterKeyFile, 0o644);
    try {
      const result = await env.cli(['doctor']);
      expectExit(result, 3);
      expect(result.stdout).toMatch(/^FAIL\s+master key\s+current epoch 1: master key file .*master\.key is accessible by group or others \(mode 0644\)/m);
      expect(result.stdout).toContain(`fix: run \`chmod 600 ${env.masterKeyFile}\``);
      expect(result.stdout).toMatch(/1 finding: 1 failed, 0 warnings/);
      expectNoStack(result.stdout + result.stderr);
    } finally {
      await chmod(env.masterKeyFile, 0o600);
    }
  });

  it('checks the daemon token and webhook secret files the config names', async () => {
    const token = join(env.dir, 'daemon-token');
    const secret = join(env.dir, 'webhook-secret');
    await writeFile(token, 'a-daemon-token-of-some-length\n', { mode: 0o640 });
    await writeFile(secret, 'a-webhook-secret-of-some-length\n', { mode: 0o600 });
    const config = await env.writeConfig('daemon.yaml', {
      ...env.raw,
      daemon: { token: { file: token } },
      alerts: { webhooks: [{ url: 'http://127.0.0.1:9/hook', secret: { file: 'webhook-secret' }, events: ['job_failed'] }] },
    });
    const result = await env.cli(['doctor', '--json', '--config', config]);
    expectExit(result, 3);
    const r = report(result);
    expect(byId(r, 'daemon.token.file')).toMatchObject({ status: 'fail', fix: `run \`chmod 600 ${token}\`` });
    expect(byId(r, 'alerts.webhooks.0.secret.file').status).toBe('ok');
    expect(result.stdout).not.toContain('a-daemon-token-of-some-length');
    expect(r.findings).toBe(1);
  });

  it('reports an unreachable vault as a finding with its fix, not a stack trace', async () => {
    const port = await freePort();
    const config = await env.writeConfig('unreachable-vault.yaml', {
      ...env.raw,
      vault: { database: { url: `postgres://lethe@127.0.0.1:${port}/vault` }, schema: 'lethe' },
    });
    const result = await env.cli(['doctor', '--json', '--config', config]);
    expectExit(result, 3);
    expect(result.stderr).toBe('');
    const r = report(result);
    const vault = byId(r, 'vault.connection');
    expect(vault.status).toBe('fail');
    expect(vault.detail).toContain('cannot connect to the vault');
    expect(vault.detail).toContain('ECONNREFUSED');
    expect(vault.fix).toContain('`vault.database.url`');
    expect(byId(r, 'vault.schema').status).toBe('skipped');
    // What does not need the vault is still checked.
    expect(byId(r, 'chatStore.connection').status).toBe('ok');
    expect(byId(r, 'masterKey.file').status).toBe('ok');

    const human = await env.cli(['doctor', '--config', config]);
    expectExit(human, 3);
    expect(human.stdout).toMatch(/^FAIL\s+vault: connection\s+cannot connect to the vault/m);
    expectNoStack(human.stdout + human.stderr);
  });

  it('exits 2 on a config it cannot use, naming the field', async () => {
    const config = await env.writeConfig('remote-clear.yaml', {
      ...env.raw,
      chatStore: { database: { url: 'postgres://lethe@chat-db.example.com/chat' } },
    });
    const result = await env.cli(['doctor', '--config', config]);
    expectExit(result, 2);
    expect(result.stderr).toContain('`chatStore.database.sslmode`');
    expect(result.stdout).toBe('');
    const usage = await env.cli(['doctor', '--job', 'backups']);
    expectExit(usage, 2);
    expect(usage.stderr).toContain('use one of all, backup, verify, lifecycle, vault-backup');
  });

  it('checks a backup-only host for what the backup must not hold', async () => {
    const result = await env.cli(['doctor', '--job', 'backup', '--json']);
    expectExit(result, 3);
    const r = report(result);
    expect(r.jobs).toEqual(['backup']);
    // The backup never reads the master key nor signs with the lifecycle key.
    expect(byId(r, 'masterKey.file').status).toBe('warn');
    expect(byId(r, 'masterKey.file').fix).toContain('remove `masterKey`');
    expect(byId(r, 'signingKeys.lifecycle').status).toBe('warn');
    expect(byId(r, 'signingKeys.backup.vault').status).toBe('ok');
    // On a directory the backup's user can read and delete what it wrote: said, not hidden.
    expect(byId(r, 'storage.credentials.put').status).toBe('ok');
    expect(byId(r, 'storage.credentials.get').status).toBe('warn');
    expect(byId(r, 'storage.credentials.delete').status).toBe('warn');
    expect(r.checks.some((c) => c.id === 'storage.credentials.scope')).toBe(false);
  });
});

describe('lethe doctor on S3 (s3rver)', () => {
  let s3: S3rverHandle;
  let env: LetheEnv;

  beforeAll(async () => {
    s3 = await startS3rver();
    env = await createLetheEnv({ template: template.name, storage: { type: 's3', server: s3 } });
    expectExit(await env.cli(['init']), 0);
  });

  afterAll(async () => {
    await env.cleanup();
    await s3.stop();
  });

  it('probes each operation and says what the server does not tell', async () => {
    const result = await env.cli(['doctor', '--json']);
    expectExit(result, 0);
    const r = report(result);
    for (const op of ['list', 'put', 'get', 'delete']) expect(byId(r, `storage.credentials.${op}`).status, op).toBe('ok');
    expect(byId(r, 'storage.credentials.put').detail).toMatch(/wrote .*doctor\/probe-/);
    // s3rver answers ?versioning with a bucket listing: not taken for "never enabled".
    expect(byId(r, 'storage.versioning')).toMatchObject({ status: 'unknown', detail: expect.stringContaining('<ListBucketResult>') as unknown });
    expect(byId(r, 'storage.objectLock')).toMatchObject({ status: 'unknown', detail: expect.stringContaining('NotImplemented') as unknown });
    expect(byId(r, 'storage.tls').detail).toContain('on this machine');
  });

  it('warns when verify credentials could write or delete', async () => {
    const result = await env.cli(['doctor', '--job', 'verify', '--json']);
    expectExit(result, 3);
    const r = report(result);
    expect(byId(r, 'storage.credentials.get').status).toBe('ok');
    for (const op of ['put', 'delete']) {
      const c = byId(r, `storage.credentials.${op}`);
      expect(c.status, op).toBe('warn');
      expect(c.fix).toContain(op === 'put' ? 's3:PutObject' : 's3:DeleteObject');
    }
    // Verify signs nothing: a signing key readable on its host is a finding too.
    expect(byId(r, 'signingKeys.backup').status).toBe('warn');
    expect(byId(r, 'signingKeys.lifecycle').status).toBe('warn');
    expect(r.checks.some((c) => c.id === 'signingKeys.backup.vault')).toBe(false);
  });

  it('fails unknown credentials without printing them', async () => {
    // s3rver checks the key id, not v4 signatures: an unknown id fails every request.
    const secret = 'not-the-S3RVER-secret-4821';
    const config = await env.writeConfig('wrong-secret.yaml', {
      ...env.raw,
      storage: { ...(env.raw['storage'] as Record<string, unknown>), accessKeyId: 'LETHEDOCTORUNKNOWNKEY', secretAccessKey: secret },
    });
    const result = await env.cli(['doctor', '--config', config]);
    expectExit(result, 3);
    expect(result.stdout).toMatch(/^FAIL\s+bucket: connection\s+listing .* failed: InvalidAccessKeyId/m);
    expect(result.stdout).toContain('check `storage.accessKeyId`, `storage.secretAccessKey` and `storage.region`');
    expect(result.stdout + result.stderr).not.toContain(secret);
    expect(result.stdout + result.stderr).not.toContain('LETHEDOCTORUNKNOWNKEY');
    expect(result.stdout).toMatch(/^skipped\s+bucket: credentials/m);
  });
});
