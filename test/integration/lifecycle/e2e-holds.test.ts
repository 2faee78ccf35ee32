import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { backup, initialize, lifecycleApply } from '../../../src/jobs/tasks.ts';
import { demoSample } from '../../../src/store/demo-sample.ts';
import {
  createChatTemplate,
  createLetheEnv,
  expectExit,
  jsonOut,
  queryValue,
  type LetheEnv,
  type TestDatabase,
} from '../../helpers/lethe-env.ts';
import { contents, restoreToNewDatabase } from './fixture.ts';

/**
 * Must hold (issue 3, holds): a hold on user U for a date range survives the retention
 * shred of those periods — U's held messages restore, other users' messages of the same
 * periods do not — and after release and apply they are gone too. An erasure of U under
 * hold is refused with the case named.
 */
const NOW = new Date('2027-05-15T00:00:00Z');
const CASE = 'CASE-42';

describe('a legal hold through a retention shred', () => {
  let template: TestDatabase;
  let env: LetheEnv;
  let tenant: string;
  let user: string;
  let from: Date;
  let to: Date;
  let snapshot: string;
  let requestId: string;
  /** U's messages and everyone else's inside the held range, in the chat store. */
  let heldSource: Awaited<ReturnType<typeof contents>>;

  const inRange = (t: string, who: 'user' | 'others'): string => {
    const range = `t.created_at >= '${from.toISOString()}'::timestamptz AND t.created_at <= '${to.toISOString()}'::timestamptz`;
    if (t !== 'messages') return 'false';
    return `${range} AND t.sender_id ${who === 'user' ? '=' : '<>'} ${Number(user)}`;
  };

  beforeAll(async () => {
    template = await createChatTemplate('lc_hold_tpl');
    env = await createLetheEnv({ template: template.name, config: { retention: { classes: { messages: '365d' } } } });
    await initialize(env.rt, 'e2e');
    ({ tenant, user } = await demoSample(env.chat.url));
    // The first two months in which U wrote, both long past retention on NOW.
    const first = await queryValue<Date>(
      env.chat.url,
      `SELECT min(date_trunc('month', created_at AT TIME ZONE 'UTC')) AT TIME ZONE 'UTC' AS v FROM public.messages WHERE sender_id = $1`,
      [Number(user)],
    );
    from = new Date(first);
    to = new Date(Date.UTC(from.getUTCFullYear(), from.getUTCMonth() + 2, 1) - 1000);
    expect(to.getTime()).toBeLessThan(new Date('2026-04-01T00:00:00Z').getTime());
    snapshot = (await backup(env.rt, { actor: 'e2e' })).snapshotId;
    heldSource = await contents(env.chat.url, (t) => inRange(t, 'user'));
    expect(heldSource['messages']?.rows).toBeGreaterThan(0);
  }, 240_000);

  afterAll(async () => {
    await env.cleanup();
    await template.drop();
  });

  it('places the hold', async () => {
    const out = await env.cli([
      'hold', 'place', '--config', env.configPath, '--case', CASE, '--tenant', tenant, '--user', user,
      '--from', from.toISOString(), '--to', to.toISOString(), '--reason', 'litigation 2027-17', '--actor', 'legal-ann', '--json',
    ]);
    expectExit(out, 0);
    const list = await env.cli(['hold', 'list', '--config', env.configPath, '--json']);
    expectExit(list, 0);
    expect(JSON.stringify(jsonOut(list))).toContain(CASE);
  });

  it('refuses an erasure of the held user, naming the case', async () => {
    const req = await env.cli(['erase', 'request', '--config', env.configPath, '--tenant', tenant, '--user', user, '--reason', 'erasure request', '--actor', 'dpo-dan', '--json']);
    expectExit(req, 0);
    requestId = (jsonOut(req) as { id: string }).id;
    const approve = await env.cli(['erase', 'approve', requestId, '--config', env.configPath, '--actor', 'dpo-eve']);
    expect(approve.code).not.toBe(0);
    expect(`${approve.stdout}${approve.stderr}`).toContain(CASE);
  });

  it('keeps exactly the held messages through the retention shred', async () => {
    const result = await lifecycleApply(env.rt, { actor: 'e2e', now: () => NOW });
    expect(result.cellsRewrapped).toBeGreaterThan(0);
    expect(result.keysDestroyed).toBeGreaterThan(0);
    const url = await restoreToNewDatabase(env, snapshot);
    expect(await contents(url, (t) => inRange(t, 'user'))).toEqual(heldSource);
    expect((await contents(url, (t) => inRange(t, 'others')))['messages']?.rows).toBe(0);
    // U's messages outside the hold, in shredded months, are gone as well.
    const outside = await queryValue<string>(
      url,
      `SELECT count(*)::text AS v FROM public.messages WHERE sender_id = $1 AND created_at > $2 AND created_at < '2026-04-01'`,
      [Number(user), to.toISOString()],
    );
    expect(outside).toBe('0');
  }, 240_000);

  it('exports the held messages for e-discovery', async () => {
    const dir = join(env.dir, 'export-case');
    const out = await env.cli(['export', '--config', env.configPath, '--case', CASE, '--out', dir, '--json']);
    expectExit(out, 0);
    const files = await readdir(dir);
    expect(files).toContain('messages.ndjson');
    const lines = (await readFile(join(dir, 'messages.ndjson'), 'utf8')).trim().split('\n');
    expect(lines.length).toBe(heldSource['messages']?.rows);
    for (const line of lines) expect((JSON.parse(line) as { sender_id: string }).sender_id).toBe(user);
    const again = await env.cli(['export', '--config', env.configPath, '--case', CASE, '--out', dir]);
    expectExit(again, 2);
  }, 120_000);

  it('lets the data go after release and apply, and then lets the erasure through', async () => {
    const release = await env.cli(['hold', 'release', '--config', env.configPath, '--case', CASE, '--actor', 'legal-ann']);
    expectExit(release, 0);
    const result = await lifecycleApply(env.rt, { actor: 'e2e', now: () => NOW });
    expect(result.keysDestroyed).toBe(1);
    const url = await restoreToNewDatabase(env, snapshot, 'lc_restore_after');
    expect((await contents(url, (t) => inRange(t, 'user')))['messages']?.rows).toBe(0);
    const approve = await env.cli(['erase', 'approve', requestId, '--config', env.configPath, '--actor', 'dpo-eve', '--json']);
    expectExit(approve, 0);
    const audit = await env.cli(['audit', 'verify', '--config', env.configPath]);
    expectExit(audit, 0);
  }, 240_000);
});
