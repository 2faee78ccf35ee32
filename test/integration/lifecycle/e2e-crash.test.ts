import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import pg from 'pg';
import { backup, initialize, lifecyclePlan, verify } from '../../../src/jobs/tasks.ts';
import { addMessages } from '../../../src/store/add-messages.ts';
import { demoSample } from '../../../src/store/demo-sample.ts';
import {
  createChatTemplate,
  createLetheEnv,
  expectExit,
  waitForAdvisoryLocksReleased,
  type LetheEnv,
  type TestDatabase,
} from '../../helpers/lethe-env.ts';

/**
 * Must hold (issue 3, crash): `lethe lifecycle apply` killed (SIGKILL) at several points and
 * then run again ends in the same state as an uninterrupted run, and deletes nothing a live
 * snapshot still references. Apply runs on the real clock here: the reference store's
 * history is two years long, so a 365-day rule has a year of months due.
 */
const RETENTION = { classes: { messages: '365d' }, snapshots: { keepLast: 1 } };

interface State {
  keys: string[];
  held: string[];
  destructions: string[];
  snapshots: string[];
  objects: Record<string, { count: number; bytes: number }>;
  tombstones: string[];
}

async function stateOf(env: LetheEnv): Promise<State> {
  const client = new pg.Client({ connectionString: env.vaultDb.url });
  await client.connect();
  try {
    const list = async (sql: string): Promise<string[]> => (await client.query<{ v: string }>(sql)).rows.map((r) => r.v);
    const objects: State['objects'] = {};
    const tombstones: string[] = [];
    const store = await env.rt.store();
    for await (const info of store.list('')) {
      const prefix = info.key.split('/')[0] ?? '';
      if (prefix === 'vault' || prefix === 'audit') continue; // timestamps and sequence numbers differ run to run
      if (prefix === 'destructions') tombstones.push(info.key);
      const entry = (objects[prefix] ??= { count: 0, bytes: 0 });
      entry.count += 1;
      // Manifests and segments name their snapshot ids (random), so only packs compare by size.
      if (prefix !== 'snapshots' && prefix !== 'segments' && prefix !== 'keys' && prefix !== 'destructions') entry.bytes += info.size;
    }
    return {
      keys: await list(`SELECT id || ':' || (wrapped_identity IS NULL)::text AS v FROM lethe.dimension_keys ORDER BY id`),
      held: await list(`SELECT case_id || ':' || key_id AS v FROM lethe.held_cell_keys ORDER BY 1`),
      destructions: await list(`SELECT key_id AS v FROM lethe.destructions ORDER BY 1`),
      snapshots: await list(`SELECT status AS v FROM lethe.snapshots ORDER BY started_at, id`),
      objects,
      tombstones: tombstones.sort(),
    };
  } finally {
    await client.end();
  }
}

async function prepare(template: string): Promise<{ env: LetheEnv }> {
  const env = await createLetheEnv({ template, config: { retention: RETENTION } });
  await initialize(env.rt, 'e2e');
  await backup(env.rt, { actor: 'e2e' });
  const { tenant, user } = await demoSample(env.chat.url);
  const hold = ['hold', 'place', '--config', env.configPath, '--case', 'CASE-7', '--tenant', tenant, '--user', user,
    '--from', '2024-11-01', '--to', '2025-02-28', '--reason', 'crash test hold', '--actor', 'legal'];
  expectExit(await env.cli(hold), 0);
  return { env };
}

/** Runs apply with `points` armed one after another, each expected to kill the run; then once clean. */
async function applyThroughCrashes(env: LetheEnv, points: readonly string[]): Promise<number> {
  let killed = 0;
  for (const point of points) {
    const out = await env.cli(['lifecycle', 'apply', '--config', env.configPath, '--json'], { env: { LETHE_FAILPOINTS: point }, timeoutMs: 180_000 });
    if (out.signal === 'SIGKILL') killed += 1;
    else expectExit(out, 0);
    await waitForAdvisoryLocksReleased(env.vaultDb.name);
  }
  expectExit(await env.cli(['lifecycle', 'apply', '--config', env.configPath, '--json'], { timeoutMs: 180_000 }), 0);
  return killed;
}

describe('lifecycle apply killed at several points', () => {
  let template: TestDatabase;
  let clean: LetheEnv;
  let crashed: LetheEnv;

  beforeAll(async () => {
    template = await createChatTemplate('lc_crash_tpl');
    clean = (await prepare(template.name)).env;
    crashed = (await prepare(template.name)).env;
  }, 300_000);

  afterAll(async () => {
    await clean.cleanup();
    await crashed.cleanup();
    await template.drop();
  });

  it('finishes a retention shred with re-wraps after crashes, like an uninterrupted run', async () => {
    expectExit(await clean.cli(['lifecycle', 'apply', '--config', clean.configPath, '--json'], { timeoutMs: 180_000 }), 0);
    const killed = await applyThroughCrashes(crashed, ['apply.after-rewrap', 'apply.after-destroy:1', 'apply.after-vault-backup']);
    expect(killed).toBeGreaterThanOrEqual(2);
    expect(await stateOf(crashed)).toEqual(await stateOf(clean));
  }, 600_000);

  it('finishes snapshot expiry and pack deletion after crashes, deleting nothing still referenced', async () => {
    for (const env of [clean, crashed]) {
      expectExit(await env.cli(['hold', 'release', '--config', env.configPath, '--case', 'CASE-7', '--actor', 'legal']), 0);
      await addMessages(env.chat.url, { count: 300, seed: 5, at: new Date('2026-11-01T00:00:00Z') });
      await backup(env.rt, { actor: 'e2e' });
      // What a backup killed mid-run leaves behind: uploaded packs no snapshot references,
      // recorded in the vault as lethe's before their upload began.
      const store = await env.rt.store();
      const leftovers = ['0a/0a0a0a0a', '0b/0b0b0b0b', '0c/0c0c0c0c'].map((name) => `packs/${name}`);
      await (await env.rt.vault()).recordStoreObjects(store.description, leftovers.map((key) => ({ key, kind: 'pack', snapshotId: null })));
      for (const key of leftovers) await store.put(key, Buffer.alloc(4096, 7));
    }
    const before = await lifecyclePlan(clean.rt, { now: new Date() });
    expect(before.actions.some((a) => a.kind === 'expire-snapshot')).toBe(true);
    expect(before.actions.some((a) => a.kind === 'delete-object' && a.objectKind === 'pack')).toBe(true);
    expectExit(await clean.cli(['lifecycle', 'apply', '--config', clean.configPath, '--json'], { timeoutMs: 180_000 }), 0);
    const killed = await applyThroughCrashes(crashed, ['apply.after-manifest-delete', 'apply.after-object-delete:1', 'apply.after-object-delete:2']);
    expect(killed).toBeGreaterThanOrEqual(2);
    expect(await stateOf(crashed)).toEqual(await stateOf(clean));
    // Nothing due is left, and the live snapshot reads back whole.
    const after = await lifecyclePlan(crashed.rt, { now: new Date() });
    expect(after.actions.filter((a) => a.kind !== 'delete-object' || a.objectKind !== 'vault-backup')).toEqual([]);
    const result = await verify(crashed.rt, { snapshot: 'latest', actor: 'e2e' });
    expect(result.ok, JSON.stringify(result.findings)).toBe(true);
    expect(result.cellsFailed).toBe(0);
  }, 600_000);
});
