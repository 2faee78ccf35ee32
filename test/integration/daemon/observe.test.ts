import { readFile, writeFile } from 'node:fs/promises';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { verifyAlertSignature } from '../../../src/daemon/alerts.ts';
import { initialize } from '../../../src/jobs/tasks.ts';
import { launchChromium, type ChromiumHandle } from '../../helpers/chromium.ts';
import { parsePrometheusText, sampleValue, startDaemon, waitFor, type DaemonChild } from '../../helpers/daemon.ts';
import { createChatTemplate, createLetheEnv, expectExit, queryValue, type LetheEnv, type TestDatabase } from '../../helpers/lethe-env.ts';

/**
 * Must hold: /metrics parses as Prometheus text and its values match the vault's after a
 * backup and a failed drill; the status page shows the snapshots and the failed drill in
 * headless Chromium (a screenshot is saved); the webhook receiver gets a correctly signed
 * failure event after refusing the first attempts.
 */

interface Delivery {
  readonly status: number;
  readonly headers: IncomingHttpHeaders;
  readonly body: string;
}

/** A webhook receiver on loopback that answers 503 to the first `refuse` requests, then 200. */
async function startReceiver(refuse: number): Promise<{ url: string; deliveries: Delivery[]; server: Server }> {
  const deliveries: Delivery[] = [];
  const server = createServer((req, res) => {
    let body = '';
    req.setEncoding('utf8').on('data', (t: string) => (body += t));
    req.on('end', () => {
      const status = deliveries.length < refuse ? 503 : 200;
      deliveries.push({ status, headers: req.headers, body });
      res.writeHead(status).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return { url: `http://127.0.0.1:${port}/hook`, deliveries, server };
}

describe('a daemon watched: metrics, status page, alerts', () => {
  let template: TestDatabase;
  let env: LetheEnv;
  let receiver: Awaited<ReturnType<typeof startReceiver>>;
  let daemon: DaemonChild;
  let base: string;
  let chromium: ChromiumHandle | undefined;
  const token = 'test-token-1f0c9a77e2b54c1d';
  const secret = 'whsec-7b1e0d9c44aa4e0f9a51';
  const auth = { authorization: `Bearer ${token}` };
  let snapshotId: string;

  beforeAll(async () => {
    template = await createChatTemplate('daemon_obs_tpl');
    env = await createLetheEnv({ template: template.name });
    await initialize(env.rt, 'test');
    await writeFile(join(env.dir, 'daemon.token'), `${token}\n`, { mode: 0o600 });
    await writeFile(join(env.dir, 'webhook.secret'), `${secret}\n`, { mode: 0o600 });
    receiver = await startReceiver(2);
    const daemonSection = (schedules: Record<string, string>): Record<string, unknown> => ({
      ...env.raw,
      daemon: { listen: '127.0.0.1:0', token: { file: 'daemon.token' }, objectives: { rpoMinutes: 60, rtoMinutes: 30 }, schedules },
      alerts: { webhooks: [{ url: receiver.url, secret: { file: 'webhook.secret' }, events: ['job_failed', 'drill_failed'] }] },
    });

    // A daemon takes a backup…
    const backupOnly = await env.writeConfig('backup.yaml', daemonSection({ backup: '*/2 * * * * *' }));
    const first = startDaemon(env, backupOnly);
    await waitFor('a scheduled backup', async () =>
      (await queryValue<number>(env.vaultDb.url, "SELECT count(*)::int AS v FROM lethe.daemon_runs WHERE job = 'backup' AND state = 'ok'")) > 0 ? true : undefined,
    );
    expect((await first.stop()).code, first.stderr()).toBe(0);
    snapshotId = await queryValue<string>(env.vaultDb.url, "SELECT id AS v FROM lethe.snapshots WHERE status = 'complete' ORDER BY seq DESC LIMIT 1");

    // …a hold and a deletion request are placed on it…
    const tenant = await queryValue<string>(env.vaultDb.url, "SELECT tenant AS v FROM lethe.dimension_keys WHERE kind = 'user' ORDER BY id LIMIT 1");
    const user = await queryValue<string>(env.vaultDb.url, "SELECT split_part(id, '/', 2) AS v FROM lethe.dimension_keys WHERE kind = 'user' ORDER BY id LIMIT 1");
    expectExit(await env.cli(['hold', 'place', '--config', env.configPath, '--case', 'CASE-7', '--tenant', tenant, '--reason', 'litigation <script>alert(1)</script>', '--actor', 'legal-ann']), 0);
    expectExit(await env.cli(['erase', 'request', '--config', env.configPath, '--tenant', tenant, '--user', user, '--reason', 'art. 17 request', '--actor', 'privacy-pia']), 0);

    // …one byte of one of its packs turns, and the next scheduled drill fails.
    const cell = await queryValue<{ pack: string; off: number | string; len: number | string }>(
      env.vaultDb.url,
      'SELECT json_build_object(\'pack\', pack, \'off\', pack_offset, \'len\', pack_length) AS v FROM lethe.snapshot_cells WHERE snapshot_id = $1 ORDER BY cell_id LIMIT 1',
      [snapshotId],
    );
    const packFile = join(env.storePath ?? '', ...cell.pack.split('/'));
    const bytes = await readFile(packFile);
    const at = Number(cell.off) + Math.floor(Number(cell.len) / 2);
    bytes[at] = (bytes[at] ?? 0) ^ 0x40;
    await writeFile(packFile, bytes);

    const drills = await env.writeConfig('drills.yaml', daemonSection({ verify: '*/3 * * * * *' }));
    const drilling = startDaemon(env, drills);
    await drilling.url;
    await waitFor('a failed drill', async () =>
      (await queryValue<number>(env.vaultDb.url, "SELECT count(*)::int AS v FROM lethe.daemon_runs WHERE job = 'verify' AND state = 'failed'")) > 0 ? true : undefined,
    );
    await waitFor('the alert accepted', () => Promise.resolve(receiver.deliveries.find((d) => d.status === 200)), 60_000);
    expect((await drilling.stop()).code, drilling.stderr()).toBe(0);

    // The figures are read by a daemon that runs nothing, so the vault holds still under the test.
    const watching = await env.writeConfig('watch.yaml', daemonSection({}));
    daemon = startDaemon(env, watching);
    base = await daemon.url;
  }, 240_000);

  afterAll(async () => {
    await chromium?.close();
    const stopped = await daemon.stop();
    expect(stopped.code, daemon.stderr()).toBe(0);
    await new Promise((resolve) => receiver.server.close(resolve));
    await env.cleanup();
    await template.drop();
  });

  it('serves /healthz to anyone, and everything else only with the bearer token', async () => {
    expect((await fetch(new URL('/healthz', base))).status).toBe(200);
    for (const path of ['/', '/metrics', '/readyz']) {
      expect((await fetch(new URL(path, base))).status, path).toBe(401);
      expect((await fetch(new URL(path, base), { headers: { authorization: 'Bearer wrong' } })).status, path).toBe(401);
    }
    expect((await fetch(new URL('/readyz', base), { headers: auth })).status).toBe(200);
    expect((await fetch(new URL('/metrics', base), { method: 'POST', headers: auth })).status).toBe(405);
  });

  it('exports metrics that parse as Prometheus text and match the vault', async () => {
    await waitFor('the audit chain check', async () => {
      const text = await (await fetch(new URL('/metrics', base), { headers: auth })).text();
      return Number.isNaN(sampleValue(parsePrometheusText(text).samples, 'lethe_audit_chain_ok')) ? undefined : true;
    });
    const response = await fetch(new URL('/metrics', base), { headers: auth });
    expect(response.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
    const { samples, types } = parsePrometheusText(await response.text());
    const failedDrills = await queryValue<number>(env.vaultDb.url, "SELECT count(*)::int AS v FROM lethe.daemon_runs WHERE job = 'verify' AND state = 'failed'");
    expect(types.get('lethe_job_duration_seconds')).toBe('histogram');
    expect(types.get('lethe_job_failures_total')).toBe('counter');

    const v = (name: string, labels: Record<string, string> = {}): number => sampleValue(samples, name, labels);
    expect(v('lethe_job_failures_total', { job: 'verify', code: 'VERIFY_FAILED' })).toBe(failedDrills);
    expect(v('lethe_job_failures_total', { job: 'backup', code: 'none' })).toBe(0);
    expect(v('lethe_verify_ok')).toBe(0);
    const lastDrillMs = await queryValue<number>(env.vaultDb.url, 'SELECT duration_ms::float8 AS v FROM lethe.verifications ORDER BY started_at DESC, id DESC LIMIT 1');
    expect(v('lethe_rto_seconds')).toBeCloseTo(lastDrillMs / 1000, 2);
    const lastBackup = await queryValue<number>(env.vaultDb.url, "SELECT extract(epoch FROM max(finished_at))::float8 AS v FROM lethe.daemon_runs WHERE job = 'backup' AND state = 'ok'");
    expect(v('lethe_job_last_success_timestamp_seconds', { job: 'backup' })).toBeCloseTo(lastBackup, 2);
    const stats = await queryValue<Record<string, number>>(env.vaultDb.url, 'SELECT stats AS v FROM lethe.snapshots WHERE id = $1', [snapshotId]);
    expect(v('lethe_snapshot_bytes', { kind: 'plain' })).toBe(stats['bytesPlain']);
    expect(v('lethe_snapshot_bytes', { kind: 'stored' })).toBe(stats['bytesStored']);
    expect(v('lethe_snapshot_cells', { state: 'written' })).toBe(stats['cellsWritten']);
    expect(v('lethe_snapshot_cells', { state: 'reused' })).toBe(stats['cellsReused']);
    const age = await queryValue<number>(env.vaultDb.url, 'SELECT extract(epoch FROM now() - started_at)::float8 AS v FROM lethe.snapshots WHERE id = $1', [snapshotId]);
    expect(Math.abs(v('lethe_rpo_seconds') - age)).toBeLessThan(5);
    expect(v('lethe_rpo_objective_seconds')).toBe(3600);
    expect(v('lethe_rto_objective_seconds')).toBe(1800);
    expect(v('lethe_holds_active')).toBe(1);
    expect(v('lethe_erase_requests_pending')).toBe(1);
    const tenantKeys = await queryValue<number>(env.vaultDb.url, "SELECT count(*)::int AS v FROM lethe.dimension_keys WHERE kind = 'tenant' AND destroyed_at IS NULL");
    expect(v('lethe_keys', { kind: 'tenant', state: 'live' })).toBe(tenantKeys);
    expect(v('lethe_audit_chain_ok')).toBe(1);
    // The histogram is this process's own: the watching daemon ran nothing.
    expect(samples.filter((x) => x.name === 'lethe_job_duration_seconds_count')).toEqual([]);
  });

  it('delivered a signed drill_failed alert after the receiver refused the first attempts', () => {
    const accepted = receiver.deliveries.find((d) => d.status === 200);
    if (accepted === undefined) throw new Error('no delivery was accepted');
    const id = accepted.headers['x-lethe-delivery'];
    const attempts = receiver.deliveries.filter((d) => d.headers['x-lethe-delivery'] === id);
    expect(attempts.length).toBe(3);
    expect(attempts.slice(0, 2).map((d) => d.status)).toEqual([503, 503]);
    expect(accepted.headers['x-lethe-event']).toBe('drill_failed');
    const header = accepted.headers['x-lethe-signature'];
    expect(verifyAlertSignature(secret, typeof header === 'string' ? header : undefined, accepted.body, 300)).toBe(true);
    expect(verifyAlertSignature('another secret', typeof header === 'string' ? header : undefined, accepted.body, 300)).toBe(false);
    const body = JSON.parse(accepted.body) as { event: string; details: { snapshot: string; findings: number } };
    expect(body.event).toBe('drill_failed');
    expect(body.details.snapshot).toBe(snapshotId);
    expect(body.details.findings).toBeGreaterThan(0);
    expect(accepted.body).not.toContain(token);
  });

  it('shows the snapshots and the failed drill on the status page in Chromium, on a phone', async () => {
    chromium = await launchChromium();
    const { page, watch } = await chromium.newPage({ viewport: { width: 390, height: 844 }, mobile: true, headers: auth });
    const response = await page.goto(base);
    expect(response?.status()).toBe(200);
    expect(response?.headers()['content-security-policy']).toContain("default-src 'none'");
    expect(await page.locator('[data-testid="snapshot"]').count()).toBeGreaterThanOrEqual(1);
    expect(await page.textContent('body')).toContain(snapshotId);
    const failed = page.locator('[data-testid="drill"][data-state="failed"]');
    expect(await failed.count()).toBeGreaterThanOrEqual(1);
    expect((await failed.first().textContent())?.toLowerCase()).toContain('failed');
    expect(await page.locator('[data-testid="health"]').getAttribute('data-state')).toBe('attention');
    expect(await page.locator('[data-testid="hold"]').count()).toBe(1);
    expect(await page.locator('[data-testid="erasure"]').count()).toBe(1);
    expect(await page.locator('[data-testid="failure"]').count()).toBeGreaterThanOrEqual(1);
    expect(await page.textContent('[data-testid="failure"]')).toContain('VERIFY_FAILED');
    // Hostile text from the vault is shown as text, never run or parsed as markup.
    expect(await page.locator('[data-testid="hold"] script, [data-testid="hold"] b').count()).toBe(0);
    expect(watch.dialogs).toEqual([]);
    expect(watch.consoleErrors).toEqual([]);
    expect(watch.requests.every((u) => u.startsWith(base))).toBe(true);
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
    expect(overflow).toBeLessThanOrEqual(0);
    const shot = join(tmpdir(), `lethe-status-page-${process.pid}.png`);
    await page.screenshot({ path: shot, fullPage: true });
    expect((await readFile(shot)).subarray(1, 4).toString()).toBe('PNG');
    process.stdout.write(`status page screenshot: ${shot}\n`);
  }, 120_000);
});
