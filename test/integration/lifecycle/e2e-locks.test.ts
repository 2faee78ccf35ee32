import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { backup, initialize, lifecycleApply, lifecyclePlan } from '../../../src/jobs/tasks.ts';
import { addMessages } from '../../../src/store/add-messages.ts';
import { createChatTemplate, createLetheEnv, type LetheEnv, type TestDatabase } from '../../helpers/lethe-env.ts';

/**
 * Issue 3, apply: reused packs get their lock extended. With object lock on, a pack the
 * second snapshot still references must stay locked as long as that snapshot is kept
 * (its completion plus retainDays), not just as long as the first one.
 */
const DAY = 86_400_000;

describe('lifecycle apply extends the locks of reused packs', () => {
  let template: TestDatabase;
  let env: LetheEnv;

  beforeAll(async () => {
    template = await createChatTemplate('lc_locks_tpl');
    // Object lock through the config, as an operator sets it.
    env = await createLetheEnv({
      template: template.name,
      config: { storage: { type: 'filesystem', path: 'store', objectLock: { mode: 'COMPLIANCE', retainDays: 30 } } },
    });
  }, 240_000);

  afterAll(async () => {
    await env.cleanup();
    await template.drop();
  });

  it('plans and applies an extension for every pack the newest snapshot reuses, and only later dates', async () => {
    const rt = env.rt;
    {
      await initialize(rt, 'e2e');
      await backup(rt, { actor: 'e2e' });
      await new Promise((r) => setTimeout(r, 1100));
      await addMessages(env.chat.url, { count: 50, seed: 3, at: new Date('2026-11-01T00:00:00Z') });
      const b2 = await backup(rt, { actor: 'e2e' });
      const second = new Date((await (await rt.vault()).getSnapshot(b2.snapshotId)).completedAt);
      const store = await rt.store();
      const packs: string[] = [];
      for await (const o of store.list('packs/')) packs.push(o.key);
      const before = new Map<string, number>();
      for (const key of packs) before.set(key, (await store.retention(key))?.retainUntil.getTime() ?? 0);

      const plan = await lifecyclePlan(rt, { now: new Date() });
      const extends_ = plan.actions.filter((a): a is Extract<typeof a, { kind: 'extend-lock' }> => a.kind === 'extend-lock');
      expect(extends_.length).toBeGreaterThan(0);
      const result = await lifecycleApply(rt, { actor: 'e2e', now: () => new Date() });
      expect(result.locksExtended).toBe(extends_.length);
      const needed = second.getTime() + 30 * DAY;
      for (const key of packs) {
        const after = (await store.retention(key))?.retainUntil.getTime() ?? 0;
        expect(after, key).toBeGreaterThanOrEqual(before.get(key) ?? 0);
        // Every pack the newest snapshot references is now locked at least as long as it.
        if (extends_.some((a) => a.objectKey === key)) expect(after).toBeGreaterThanOrEqual(needed - 1000);
      }
      // Nothing left to extend.
      expect((await lifecyclePlan(rt, { now: new Date() })).actions.filter((a) => a.kind === 'extend-lock')).toEqual([]);
    }
  }, 240_000);
});
