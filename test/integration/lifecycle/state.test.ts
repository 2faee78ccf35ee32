import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Config } from '../../../src/config/index.ts';
import { backup, initialize } from '../../../src/jobs/tasks.ts';
import { formatPlan } from '../../../src/lifecycle/plan-format.ts';
import { parsePeriodKeyId, planLifecycle, type PlanInput } from '../../../src/lifecycle/plan.ts';
import { RetentionSchema } from '../../../src/lifecycle/rules.ts';
import { loadPlanInput } from '../../../src/lifecycle/state.ts';
import { placeHold, releaseHold } from '../../../src/lifecycle/holds.ts';
import { demoSample } from '../../../src/store/demo-sample.ts';
import { createChatTemplate, createLetheEnv, queryValue, type LetheEnv, type TestDatabase } from '../../helpers/lethe-env.ts';
import { startS3rver, type S3rverHandle } from '../../helpers/s3.ts';

/**
 * loadPlanInput against a real vault and filesystem store after a real backup: the state
 * is complete and consistent, plans nothing without retention rules, and plans the
 * messages periods' destruction with `messages: 30d`.
 */
describe.each(['filesystem', 's3'] as const)('loadPlanInput (%s store)', (kind) => {
  let template: TestDatabase;
  let s3: S3rverHandle | undefined;
  let env: LetheEnv;
  let snapshotId: string;
  let input: PlanInput;
  const NOW = new Date('2030-01-01T00:00:00Z');

  beforeAll(async () => {
    template = await createChatTemplate(`lc_state_tpl_${kind}`);
    if (kind === 's3') s3 = await startS3rver();
    env = await createLetheEnv({
      template: template.name,
      storage: s3 === undefined ? { type: 'filesystem' } : { type: 's3', server: s3 },
    });
    await initialize(env.rt, 'test');
    snapshotId = (await backup(env.rt, { actor: 'test' })).snapshotId;
    input = await loadPlanInput(await env.rt.vault(), await env.rt.store(), env.config, NOW);
  }, 240_000);

  afterAll(async () => {
    await env.cleanup();
    await template.drop();
    await s3?.stop();
  });

  it('loads keys, cell keys with usage, the snapshot and the objects it references', async () => {
    expect(input.now).toEqual(NOW);
    expect(input.objectLock).toBeNull();
    expect(input.holds).toEqual([]);
    expect(input.eraseRequests).toEqual([]);
    expect(input.heldCellKeys).toEqual([]);

    const kinds = new Set(input.dimensionKeys.map((k) => k.kind));
    for (const kind of ['tenant', 'user', 'conversation', 'period']) expect(kinds).toContain(kind);
    expect(input.dimensionKeys.every((k) => !k.destroyed)).toBe(true);

    // No hold: no cell key is loaded (memory follows held data, not the store); what each
    // period key protects comes aggregated by the vault instead.
    expect(input.cellKeys).toEqual([]);
    const periods = input.dimensionKeys.filter((k) => k.kind === 'period').map((k) => k.id);
    expect(input.periodKeyUsage?.map((u) => u.keyId)).toEqual(periods);
    for (const u of input.periodKeyUsage ?? []) {
      expect(u.snapshots).toBe(1);
      expect(u.cells).toBeGreaterThanOrEqual(u.cellKeys);
      expect(u.cellKeys).toBeGreaterThan(0);
    }

    expect(input.snapshots).toHaveLength(1);
    const snap = input.snapshots[0];
    expect(snap?.id).toBe(snapshotId);
    expect(snap?.status).toBe('complete');
    expect(snap?.manifestKey).toMatch(/^snapshots\//);
    expect(snap?.manifestRetainUntil).toBeNull();

    // Every pack in the store is there once, referenced by the snapshot, with its tenants.
    const listed: string[] = [];
    for await (const o of (await env.rt.store()).list('packs/')) listed.push(o.key);
    const packs = input.objects.filter((o) => o.kind === 'pack');
    expect(packs.map((p) => p.key)).toEqual(listed);
    expect(packs.length).toBeGreaterThanOrEqual(2);
    for (const p of packs) {
      expect(p.referencedBy).toEqual([snapshotId]);
      expect(p.tenants.length).toBeGreaterThan(0);
      expect(p.size).toBeGreaterThan(0);
      expect(p.retainUntil).toBeNull();
    }
    const tenantsInPacks = new Set(packs.flatMap((p) => p.tenants));
    expect(tenantsInPacks.has('1')).toBe(true);

    // Cell keys are derived, not stored: a snapshot writes no key file.
    expect(input.objects.filter((o) => o.kind === 'key-file')).toEqual([]);
    // Bytes add up: every timestamped cell of the snapshot is under exactly one period key.
    const bytesPlain = (input.periodKeyUsage ?? []).reduce((n, u) => n + u.bytesPlain, 0);
    expect(bytesPlain).toBe(
      Number(await queryValue<string>(env.vaultDb.url, `SELECT sum(bytes_plain)::text AS v FROM lethe.snapshot_cells WHERE period <> '-'`)),
    );
  });

  it('loads the cell keys an active hold selects, with their usage, and only those', async () => {
    const vault = await env.rt.vault();
    const { tenant, user } = await demoSample(env.chat.url);
    await placeHold(vault, { caseId: 'STATE-1', tenant, user, reason: 'loader test', actor: 'legal', allowUnsigned: true });
    try {
      const held = await loadPlanInput(vault, await env.rt.store(), env.config, NOW);
      expect(held.cellKeys.length).toBeGreaterThan(0);
      for (const c of held.cellKeys) {
        expect([c.tenant, c.author]).toEqual([tenant, user]);
        expect(c.usage.snapshots).toBe(1);
        expect(c.usage.cells).toBeGreaterThan(0);
      }
      const expected = await queryValue<string>(
        env.vaultDb.url,
        'SELECT count(*)::text AS v FROM lethe.cell_keys WHERE tenant = $1 AND author = $2',
        [tenant, user],
      );
      expect(held.cellKeys.length).toBe(Number(expected));
    } finally {
      await releaseHold(vault, 'STATE-1', { actor: 'legal', allowUnsigned: true });
    }
  });

  it('plans nothing without retention rules, however late', () => {
    const plan = planLifecycle(input);
    expect(plan.actions).toEqual([]);
    expect(plan.deferred).toEqual([]);
    expect(plan.blocked).toEqual([]);
    expect(formatPlan(plan)).toContain('Nothing is due.');
  });

  it('plans the destruction of every messages period with messages: 30d', async () => {
    const config: Config = { ...env.config, retention: RetentionSchema.parse({ classes: { messages: '30d' } }) };
    const late = await loadPlanInput(await env.rt.vault(), await env.rt.store(), config, NOW);
    const plan = planLifecycle(late);
    const destroyed = plan.actions.map((a) => (a.kind === 'destroy-key' ? a.keyId : `other:${a.kind}`));
    const expected = late.dimensionKeys
      .filter((k) => k.kind === 'period' && parsePeriodKeyId(k.id)?.class === 'messages')
      .map((k) => k.id);
    expect(expected.length).toBeGreaterThan(3);
    expect(destroyed).toEqual(expected);
    const cells = plan.actions.reduce((n, a) => n + (a.kind === 'destroy-key' ? a.impact.cells : 0), 0);
    expect(cells).toBe(
      Number(await queryValue<string>(env.vaultDb.url, `SELECT count(*)::text AS v FROM lethe.snapshot_cells WHERE data_class = 'messages' AND period <> '-'`)),
    );
    expect(plan.summary.keysToDestroy).toBe(expected.length);

    // Only what is past 30 days plus its month at a date inside the data: fewer keys.
    const early = planLifecycle({ ...late, now: new Date(Math.max(...late.dimensionKeys
      .filter((k) => k.kind === 'period')
      .map((k) => Date.parse(`${parsePeriodKeyId(k.id)?.period ?? ''}-01T00:00:00Z`) || 0))) });
    expect(early.summary.keysToDestroy).toBeLessThan(expected.length);
    expect(formatPlan(plan)).toMatch(/messages of tenant \S+ from \d{4}-\d{2} are past the 30d retention since/);
  });
  // s3rver has no Object Lock; the S3 backend's locks are covered by the storage conformance suite.
  if (kind === 'filesystem') it('reads object locks from the store and plans orphans and old vault backups', async () => {
    const store = await env.rt.store();
    const until = new Date('2031-01-01T00:00:00Z');
    // As a crashed backup and an old vault backup leave them: recorded by lethe before upload.
    await (await env.rt.vault()).recordStoreObjects(store.description, [
      { key: 'vault/20290101T000000000Z.age', kind: 'vault-backup', snapshotId: null },
      { key: 'packs/zz/orphan', kind: 'pack', snapshotId: null },
    ]);
    await store.put('vault/20290101T000000000Z.age', new Uint8Array([1, 2, 3]), { lock: { mode: 'GOVERNANCE', retainUntil: until } });
    await store.put('packs/zz/orphan', new Uint8Array(10));
    // Not written by lethe: only reported.
    await store.put('packs/zz/foreign', new Uint8Array(7));
    const withObjects = await loadPlanInput(await env.rt.vault(), store, env.config, NOW);
    const backupObj = withObjects.objects.find((o) => o.key === 'vault/20290101T000000000Z.age');
    expect(backupObj?.kind).toBe('vault-backup');
    expect(backupObj?.retainUntil).toEqual(until);
    expect(withObjects.objects.find((o) => o.key === 'packs/zz/orphan')?.referencedBy).toEqual([]);
    const plan = planLifecycle(withObjects);
    expect(plan.actions).toEqual([
      expect.objectContaining({ kind: 'delete-object', objectKey: 'packs/zz/orphan', objectKind: 'pack', size: 10 }),
    ]);
    expect(plan.deferred).toEqual([
      expect.objectContaining({ objectKey: 'vault/20290101T000000000Z.age', until: until.toISOString() }),
    ]);
    expect(plan.unknownObjects).toEqual([expect.objectContaining({ objectKey: 'packs/zz/foreign', size: 7 })]);
    expect(formatPlan(plan)).toMatch(/no record of writing to this store \(1\): left alone:\n {2}packs\/zz\/foreign/);
    await store.delete('packs/zz/orphan');
    await store.delete('packs/zz/foreign');
  });
});
