import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  createChatTemplate,
  createLetheEnv,
  expectExit,
  filesUnder,
  jsonOut,
  type CliResult,
  type LetheEnv,
  type RawConfig,
  type TestDatabase,
} from '../../helpers/lethe-env.ts';
import { startS3rver, type S3rverHandle } from '../../helpers/s3.ts';

/**
 * Must hold: secrets — the master identity, object-store keys, database passwords — never
 * reach stdout, stderr or logs, even at debug level and even when the operation that holds
 * them fails.
 */

const DEBUG = { LETHE_LOG_LEVEL: 'debug' };

/** Every form a secret could be printed in. */
function forms(secret: string): string[] {
  return [...new Set([secret, secret.toLowerCase(), encodeURIComponent(secret)])];
}

function expectNoSecrets(run: CliResult, secrets: Record<string, string>, label: string): void {
  const shown = `${run.stdout}\n${run.stderr}`;
  for (const [name, secret] of Object.entries(secrets)) {
    expect(secret.length, name).toBeGreaterThan(8);
    for (const form of forms(secret)) {
      expect(shown.includes(form), `${label}: ${name} appears in the output`).toBe(false);
    }
  }
}

function withUrlPassword(url: string, password: string): string {
  const u = new URL(url);
  u.password = password;
  return u.toString();
}

describe('secrets stay out of output and logs', () => {
  let template: TestDatabase;
  let s3: S3rverHandle;
  let env: LetheEnv;
  let secrets: Record<string, string>;
  const wrongS3Secret = `lethe-e2e-s3-secret-${randomBytes(9).toString('hex')}`;
  const wrongDbPassword = `lethe-e2e-db-pw-${randomBytes(9).toString('hex')}`;
  const ok: Record<string, CliResult> = {};

  function variant(change: (raw: RawConfig) => RawConfig): RawConfig {
    return change(structuredClone(env.raw));
  }

  beforeAll(async () => {
    [template, s3] = await Promise.all([createChatTemplate('e2e_sec_tpl'), startS3rver()]);
    env = await createLetheEnv({ template: template.name });
    // The CLI creates the master key itself, at debug level, and must not print it.
    ok['init'] = await env.cli(['init', '--config', env.configPath, '--json'], { env: DEBUG });
    expectExit(ok['init'], 0);
    const keyFile = await readFile(env.masterKeyFile, 'utf8');
    const identity = /^AGE-SECRET-KEY-1[0-9A-Z]+$/m.exec(keyFile)?.[0];
    if (identity === undefined) throw new Error('no identity in the master key file');
    const dbPassword = decodeURIComponent(new URL(env.chat.url).password);
    secrets = {
      'master identity': identity,
      'master identity (data part)': identity.slice('AGE-SECRET-KEY-1'.length),
      'database password': dbPassword,
      'wrong S3 secret key': wrongS3Secret,
      'wrong database password': wrongDbPassword,
    };
  });
  afterAll(async () => {
    await env.cleanup();
    await s3.stop();
    await template.drop();
  });

  it('a successful init, backup and verify at debug level print none', async () => {
    ok['backup'] = await env.cli(['backup', '--config', env.configPath, '--json'], { env: DEBUG });
    expectExit(ok['backup'], 0);
    ok['verify'] = await env.cli(['verify', '--config', env.configPath, '--json'], { env: DEBUG });
    expectExit(ok['verify'], 0);
    expect((jsonOut(ok['verify']) as { ok: boolean }).ok).toBe(true);
    // Debug logging really was on, so there was something to leak.
    expect(ok['backup'].stderr).toMatch(/"msg":"backup complete"/);
    expect(ok['verify'].stderr).toMatch(/"msg":"verify done"/);
    for (const [name, run] of Object.entries(ok)) expectNoSecrets(run, secrets, name);
  });

  it('the bucket holds none of them either', async () => {
    const root = env.storePath ?? '';
    const objects = await filesUnder(root);
    expect(objects.some((k) => k.startsWith('snapshots/'))).toBe(true);
    for (const key of objects) {
      const text = (await readFile(join(root, key))).toString('latin1');
      for (const name of ['master identity', 'database password']) {
        expect(text.includes(secrets[name] ?? '<none>'), `${name} in ${key}`).toBe(false);
      }
    }
  });

  it('failing runs at debug level print none of them', async () => {
    const s3Bad = await env.writeConfig(
      's3-bad.yaml',
      variant((r) => ({
        ...r,
        storage: {
          type: 's3',
          endpoint: s3.endpoint,
          bucket: s3.bucket,
          prefix: 'secrets/',
          forcePathStyle: true,
          // s3rver does not check v4 signatures, so an unknown key id makes every request
          // fail while the planted secret key still signs each one.
          accessKeyId: 'LETHEE2EUNKNOWNKEYID',
          secretAccessKey: wrongS3Secret,
        },
      })),
    );
    const vaultBad = await env.writeConfig(
      'vault-bad.yaml',
      variant((r) => ({
        ...r,
        vault: {
          schema: 'lethe',
          database: { url: withUrlPassword(env.vaultDb.url, wrongDbPassword) },
        },
      })),
    );
    const chatBad = await env.writeConfig(
      'chat-bad.yaml',
      variant((r) => ({
        ...r,
        chatStore: {
          ...(r['chatStore'] as Record<string, unknown>),
          mapping: 'builtin',
          database: { url: withUrlPassword(env.chat.url, wrongDbPassword) },
        },
      })),
    );
    const target = await env.database('e2e_sec_target');
    const [s3Backup, vaultBackup, vaultVerify, badTarget, missingSnapshot] = await Promise.all([
      env.cli(['backup', '--config', s3Bad], { env: DEBUG }),
      env.cli(['backup', '--config', vaultBad], { env: DEBUG }),
      env.cli(['verify', '--config', vaultBad, '--json'], { env: DEBUG }),
      env.cli(
        [
          'restore',
          '--config',
          env.configPath,
          '--snapshot',
          'latest',
          '--target',
          withUrlPassword(target.url, wrongDbPassword),
          '--blob-target',
          env.blobTarget(),
        ],
        { env: DEBUG },
      ),
      // Reads the master key, then fails.
      env.cli(['verify', '--config', env.configPath, '--snapshot', 'no-such-snapshot'], {
        env: DEBUG,
      }),
    ]);
    // After the S3 run: two backups at once would meet each other's job lock.
    const chatBackup = await env.cli(['backup', '--config', chatBad], { env: DEBUG });
    const runs = { s3Backup, vaultBackup, vaultVerify, badTarget, missingSnapshot, chatBackup };

    // Each failed, for the reason planted.
    expectExit(s3Backup, 1);
    expect(s3Backup.stderr).toMatch(/InvalidAccessKeyId/);
    expectExit(vaultBackup, 1);
    expect(vaultBackup.stderr).toMatch(/password authentication failed/);
    expectExit(vaultVerify, 1);
    expect(vaultVerify.stdout).toMatch(/password authentication failed/);
    expectExit(badTarget, 1);
    expect(badTarget.stderr).toMatch(/password authentication failed/);
    expectExit(missingSnapshot, 2);
    expect(missingSnapshot.stderr).toMatch(/no-such-snapshot/);
    expectExit(chatBackup, 1);
    expect(chatBackup.stderr).toMatch(/password authentication failed/);

    for (const [name, run] of Object.entries(runs)) expectNoSecrets(run, secrets, name);
  });
});
