import { execFile } from 'node:child_process';
import { chmod, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initialize } from '../../../src/jobs/tasks.ts';
import { startDaemon, type DaemonChild } from '../../helpers/daemon.ts';
import { createChatTemplate, createLetheEnv, REPO_ROOT, type LetheEnv, type TestDatabase } from '../../helpers/lethe-env.ts';

const TOKEN = 'deploy-probe-token-0c41f9';

/** bin/lethe-probe.js as the Dockerfile's HEALTHCHECK and the Deployment's readiness probe run it. */
function probe(url: string, env: Record<string, string> = {}): Promise<{ code: number; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [join(REPO_ROOT, 'bin', 'lethe-probe.js'), url], { env: { PATH: process.env['PATH'] ?? '', ...env } }, (err, _stdout, stderr) => {
      resolve({ code: err === null ? 0 : typeof err.code === 'number' ? err.code : -1, stderr });
    });
  });
}

/**
 * The health probe of the image and the manifests against the real `lethe daemon`, with a
 * bearer token from a 0600 file as the production install has it: /healthz passes without
 * the token, /readyz only with it (from the environment, as in Kubernetes, or from the
 * file, as on a systemd host), and the daemon still stops with exit 0 on SIGTERM.
 */
describe('bin/lethe-probe.js against lethe daemon', () => {
  let template: TestDatabase;
  let env: LetheEnv;
  let daemon: DaemonChild;
  let base: string;
  let tokenFile: string;

  beforeAll(async () => {
    template = await createChatTemplate('deploy_probe_tpl');
    env = await createLetheEnv({ template: template.name });
    await initialize(env.rt, 'test');
    tokenFile = join(env.dir, 'daemon-token');
    await writeFile(tokenFile, `${TOKEN}\n`);
    await chmod(tokenFile, 0o600);
    // No schedules: the daemon serves HTTP and runs nothing, so the test is quick and quiet.
    const config = await env.writeConfig('daemon.yaml', { ...env.raw, daemon: { listen: '127.0.0.1:0', token: { file: tokenFile } } });
    daemon = startDaemon(env, config);
    base = (await daemon.url).replace(/\/$/, '');
  }, 180_000);
  afterAll(async () => {
    await daemon.stop('SIGKILL');
    await env.cleanup();
    await template.drop();
  });

  it('passes /healthz without a token', async () => {
    expect(await probe(`${base}/healthz`)).toEqual({ code: 0, stderr: '' });
  });

  it('fails /readyz and /metrics without the token, naming the fix', async () => {
    for (const path of ['/readyz', '/metrics']) {
      const result = await probe(`${base}${path}`);
      expect(result.code, path).toBe(1);
      expect(result.stderr, path).toBe(`lethe-probe: ${base}${path}: HTTP 401 (set LETHE_DAEMON_TOKEN or LETHE_DAEMON_TOKEN_FILE to the daemon token)\n`);
    }
    expect((await probe(`${base}/readyz`, { LETHE_DAEMON_TOKEN: 'not-the-token' })).code).toBe(1);
  });

  it('passes /readyz with the token from the environment or from the token file', async () => {
    expect(await probe(`${base}/readyz`, { LETHE_DAEMON_TOKEN: TOKEN })).toEqual({ code: 0, stderr: '' });
    expect(await probe(`${base}/readyz`, { LETHE_DAEMON_TOKEN_FILE: tokenFile })).toEqual({ code: 0, stderr: '' });
    expect(await probe(`${base}/metrics`, { LETHE_DAEMON_TOKEN_FILE: tokenFile })).toEqual({ code: 0, stderr: '' });
  });

  it('fails once the daemon has stopped on SIGTERM (exit 0)', async () => {
    const stopped = await daemon.stop('SIGTERM');
    expect(stopped.code, daemon.stderr()).toBe(0);
    const after = await probe(`${base}/healthz`);
    expect(after).toEqual({ code: 1, stderr: `lethe-probe: ${base}/healthz: ECONNREFUSED\n` });
  });
});
