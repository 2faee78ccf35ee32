import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { backup, initialize, lifecycleApply, lifecyclePlan, verify } from '../../../src/jobs/tasks.ts';
import {
  createChatTemplate,
  createLetheEnv,
  expectExit,
  jsonOut,
  type LetheEnv,
  type TableContent,
  type TestDatabase,
} from '../../helpers/lethe-env.ts';
import { contents, restoreToNewDatabase } from './fixture.ts';

/**
 * Must hold (issue 3, retention): with messages kept 365 days and the clock moved forward,
 * apply leaves no readable message older than 365 days plus at most one period (a month
 * here) in any snapshot, and every message younger than 365 days intact.
 */
const NOW = new Date('2027-05-15T00:00:00Z');
const DAY = 86_400_000;
const CUTOFF = new Date(NOW.getTime() - 365 * DAY);
/** One period (the longest month) before the cutoff: nothing older may remain readable. */
const FLOOR = new Date(CUTOFF.getTime() - 31 * DAY);

/** The rows of the messages class by their own timestamps: younger than `at`, or older than it. */
function messagesClass(table: string, at: Date, side: 'younger' | 'older'): string {
  const op = side === 'younger' ? '>=' : '<';
  switch (table) {
    case 'messages':
      return `t.created_at ${op} '${at.toISOString()}'::timestamptz`;
    case 'message_edits':
      return `t.edited_at_ms ${op} ${at.getTime()}`;
    default:
      return 'false';
  }
}

describe('retention shred of messages older than 365 days', () => {
  let template: TestDatabase;
  let env: LetheEnv;
  const snapshots: string[] = [];
  const youngAt: Record<string, TableContent>[] = [];

  beforeAll(async () => {
    template = await createChatTemplate('lc_ret_tpl');
    env = await createLetheEnv({
      template: template.name,
      config: { retention: { classes: { messages: '365d' } } },
    });
    await initialize(env.rt, 'e2e');
    snapshots.push((await backup(env.rt, { actor: 'e2e' })).snapshotId);
    youngAt.push(await contents(env.chat.url, (t) => messagesClass(t, CUTOFF, 'younger')));
  }, 240_000);

  afterAll(async () => {
    await env.cleanup();
    await template.drop();
  });

  it('forecasts the shred with lifecycle plan --now, changing nothing', async () => {
    const out = await env.cli(['lifecycle', 'plan', '--config', env.configPath, '--now', NOW.toISOString(), '--json']);
    expectExit(out, 0);
    const plan = jsonOut(out) as { actions: { kind: string; keyId?: string; cause?: { kind: string } }[] };
    const destroys = plan.actions.filter((a) => a.kind === 'destroy-key');
    expect(destroys.length).toBeGreaterThan(0);
    expect(destroys.every((a) => a.cause?.kind === 'retention' && a.keyId?.startsWith('period:') === true && a.keyId.includes('/messages/'))).toBe(true);
    const human = await env.cli(['lifecycle', 'plan', '--config', env.configPath, '--now', NOW.toISOString()]);
    expectExit(human, 0);
    expect(human.stdout).toMatch(/365d/);
    // Nothing changed: the plan made at the same instant is the same.
    expect((await lifecyclePlan(env.rt, { now: NOW })).actions.length).toBe(plan.actions.length);
  });

  it('refuses a --now that is not a date', async () => {
    const out = await env.cli(['lifecycle', 'plan', '--config', env.configPath, '--now', 'next tuesday']);
    expectExit(out, 2);
    expect(out.stderr).toMatch(/ISO-8601/);
  });

  it('applies on the injected clock, then backs up again', async () => {
    const result = await lifecycleApply(env.rt, { actor: 'e2e', now: () => NOW });
    expect(result.keysDestroyed).toBeGreaterThan(0);
    expect(result.vaultBackup).toMatch(/^vault\//);
    const again = await lifecyclePlan(env.rt, { now: NOW });
    expect(again.actions.filter((a) => a.kind === 'destroy-key')).toEqual([]);
    const after = await backup(env.rt, { actor: 'e2e' });
    snapshots.push(after.snapshotId);
    youngAt.push(await contents(env.chat.url, (t) => messagesClass(t, CUTOFF, 'younger')));
  }, 240_000);

  it('leaves nothing older than retention plus one period readable, and everything younger intact', async () => {
    for (const [i, snapshot] of snapshots.entries()) {
      const url = await restoreToNewDatabase(env, snapshot);
      const old = await contents(url, (t) => messagesClass(t, FLOOR, 'older'));
      expect(old['messages']?.rows, snapshot).toBe(0);
      expect(old['message_edits']?.rows, snapshot).toBe(0);
      const young = await contents(url, (t) => messagesClass(t, CUTOFF, 'younger'));
      expect(young['messages']?.rows).toBeGreaterThan(0);
      expect(young, snapshot).toEqual(youngAt[i]);
      // Other classes are kept forever by default.
      const all = await contents(url);
      const source = await contents(env.chat.url);
      for (const table of ['tenants', 'users', 'conversations', 'memberships', 'attachments']) {
        expect(all[table], `${snapshot} ${table}`).toEqual(source[table]);
      }
    }
  }, 240_000);

  it('verify reports the shredded periods with their retention records and no failure', async () => {
    const result = await verify(env.rt, { snapshot: snapshots[0] ?? '', actor: 'e2e' });
    expect(result.ok, JSON.stringify(result.findings)).toBe(true);
    expect(result.cellsFailed).toBe(0);
    expect(result.shredded.length).toBeGreaterThan(0);
    for (const s of result.shredded) {
      expect(s.keyId).toMatch(/^period:.*\/messages\//);
      expect(s.record.cause.kind).toBe('retention');
    }
  }, 240_000);
});
