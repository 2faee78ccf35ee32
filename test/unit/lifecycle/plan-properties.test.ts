import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { activeHolds, caseKeyId, holdCovers } from '../../../src/lifecycle/hold-match.ts';
import { planLifecycle, type Plan, type PlanInput } from '../../../src/lifecycle/plan.ts';
import { RetentionSchema } from '../../../src/lifecycle/rules.ts';
import { expandInput } from './golden-loader.ts';

/**
 * Properties of the planner over random states of two tenants, three users, two
 * conversations, six months, random holds (some released), re-wraps already done and keys
 * already destroyed.
 */

const TENANTS = ['3', '7'];
const USERS = ['u1', 'u2', 'u3'];
const CONVS = ['c1', 'c2'];
const MONTHS = ['2025-01', '2025-02', '2025-03', '2025-04', '2025-05', '2025-06'];

const cellArb = fc.record({
  tenant: fc.constantFrom(...TENANTS),
  month: fc.constantFrom(...MONTHS),
  user: fc.constantFrom(...USERS),
  conv: fc.constantFrom(...CONVS),
});
const dateArb = fc.integer({ min: Date.UTC(2024, 11, 1), max: Date.UTC(2025, 7, 1) }).map((t) => new Date(t).toISOString());
const holdArb = fc.record({
  caseId: fc.constantFrom('CASE-A', 'CASE-B', 'CASE-C'),
  tenant: fc.constantFrom(...TENANTS),
  user: fc.option(fc.constantFrom(...USERS), { nil: undefined }),
  conversation: fc.option(fc.constantFrom(...CONVS), { nil: undefined }),
  from: fc.option(dateArb, { nil: undefined }),
  to: fc.option(dateArb, { nil: undefined }),
  released: fc.boolean(),
});

const stateArb = fc.record({
  cells: fc.uniqueArray(cellArb, { minLength: 1, maxLength: 25, selector: (c) => JSON.stringify(c) }),
  holds: fc.array(holdArb, { maxLength: 4 }),
  destroyedUsers: fc.subarray(USERS),
  destroyedMonths: fc.subarray(MONTHS),
  rewrapped: fc.array(fc.tuple(fc.nat(), fc.constantFrom('CASE-A', 'CASE-B', 'CASE-C')), { maxLength: 5 }),
  now: fc.integer({ min: Date.UTC(2025, 5, 1), max: Date.UTC(2026, 9, 1) }),
  maxAge: fc.constantFrom('30d', '6m', '365d'),
});

type State = typeof stateArb extends fc.Arbitrary<infer S> ? S : never;

function buildInput(s: State): PlanInput {
  const cellKeys = s.cells.map((c) => ({
    id: `cell:${c.tenant}/messages/${c.month}/${c.user}/${c.conv}`,
    tenant: c.tenant,
    class: 'messages',
    period: c.month,
    author: c.user,
    conversation: c.conv,
    dimensionIds: [`period:${c.tenant}/messages/${c.month}`, `user:${c.tenant}/${c.user}`, `conversation:${c.tenant}/${c.conv}`, `tenant:${c.tenant}`],
  }));
  const dimensionKeys: { id: string; destroyed: boolean }[] = [];
  for (const t of TENANTS) {
    for (const u of s.destroyedUsers) dimensionKeys.push({ id: `user:${t}/${u}`, destroyed: true });
    // A destroyed period key may only have been destroyed when it was due; holds then had re-wraps.
    for (const m of s.destroyedMonths) dimensionKeys.push({ id: `period:${t}/messages/${m}`, destroyed: true });
    for (const c of ['CASE-A', 'CASE-B', 'CASE-C']) dimensionKeys.push({ id: caseKeyId(t, c), destroyed: false });
  }
  const heldCellKeys = s.rewrapped.flatMap(([i, caseId]) => {
    const cell = cellKeys[i % cellKeys.length];
    if (cell === undefined) return [];
    return [{ caseId, keyId: cell.id, dimensionIds: [caseKeyId(cell.tenant, caseId), ...cell.dimensionIds.slice(1)] }];
  });
  const unique = new Map(heldCellKeys.map((h) => [`${h.caseId}/${h.keyId}`, h]));
  return expandInput({
    now: new Date(s.now),
    rules: {},
    cellKeys,
    dimensionKeys,
    heldCellKeys: [...unique.values()],
    holds: s.holds.map((h) => ({
      caseId: h.caseId,
      tenant: h.tenant,
      user: h.user,
      conversation: h.conversation,
      from: h.from === undefined ? undefined : new Date(h.from),
      to: h.to === undefined ? undefined : new Date(h.to),
      releasedAt: h.released ? new Date('2025-05-01T00:00:00Z') : undefined,
      releasedBy: h.released ? 'legal' : undefined,
    })),
    snapshots: [{ id: 's1', completedAt: new Date(s.now - 3_600_000) }],
  });
}

function withRules(input: PlanInput, maxAge: string): PlanInput {
  return { ...input, rules: RetentionSchema.parse({ classes: { messages: maxAge } }) };
}

/** Whether some wrapping of each cell is readable with the keys alive after `plan` ran. */
function readable(input: PlanInput, plan: Plan | null): Map<string, boolean> {
  const gone = new Set(input.dimensionKeys.filter((k) => k.destroyed).map((k) => k.id));
  const wrappings = new Map<string, string[][]>(input.cellKeys.map((c) => [c.id, [[...c.dimensionIds]]]));
  for (const h of input.heldCellKeys) wrappings.get(h.keyId)?.push([...h.dimensionIds]);
  if (plan !== null) {
    for (const a of plan.actions) {
      if (a.kind === 'destroy-key') gone.add(a.keyId);
      if (a.kind === 'rewrap') wrappings.get(a.cellKeyId)?.push(a.dimensionIds);
    }
  }
  return new Map([...wrappings].map(([id, ws]) => [id, ws.some((w) => w.every((d) => !gone.has(d)))]));
}

describe('planLifecycle properties', () => {
  it('never loses data an active hold covers, and re-wraps before it destroys', () => {
    fc.assert(
      fc.property(stateArb, (s) => {
        const input = withRules(buildInput(s), s.maxAge);
        const plan = planLifecycle(input);
        const before = readable(input, null);
        const after = readable(input, plan);
        for (const hold of activeHolds(input.holds)) {
          for (const cell of input.cellKeys) {
            if (holdCovers(hold, cell) && before.get(cell.id) === true) expect(after.get(cell.id)).toBe(true);
          }
        }
        const index = new Map(plan.actions.map((a, i) => [a.kind === 'destroy-key' ? a.keyId : `#${i}`, i]));
        plan.actions.forEach((a, i) => {
          if (a.kind !== 'rewrap') return;
          const destroyAt = index.get(a.replaces);
          expect(destroyAt).toBeDefined();
          expect(i).toBeLessThan(destroyAt ?? -1);
          expect(a.dimensionIds[0]).toBe(a.caseKeyId);
          expect(a.dimensionIds).not.toContain(a.replaces);
        });
        const blockedIds = new Set(plan.blocked.map((b) => b.keyId));
        for (const a of plan.actions) if (a.kind === 'destroy-key') expect(blockedIds.has(a.keyId)).toBe(false);
        // Kinds come in the documented order.
        const order = ['finish-request', 'rewrap', 'destroy-key', 'expire-snapshot', 'extend-lock', 'delete-object'];
        const ranks = plan.actions.map((a) => order.indexOf(a.kind));
        expect(ranks).toEqual([...ranks].sort((a, b) => a - b));
      }),
      { numRuns: 300 },
    );
  });

  it('destroys exactly the period keys whose period end plus the maximum age has passed', () => {
    fc.assert(
      fc.property(stateArb, (s) => {
        const input = withRules(buildInput(s), s.maxAge);
        const plan = planLifecycle(input);
        const destroyed = new Set(plan.actions.flatMap((a) => (a.kind === 'destroy-key' ? [a.keyId] : [])));
        for (const k of input.dimensionKeys) {
          if (k.kind !== 'period') continue;
          const month = k.id.split('/')[2] ?? '';
          const [y, m] = month.split('-').map(Number);
          const end = new Date(Date.UTC(y ?? 0, m ?? 0, 1));
          const due =
            s.maxAge === '30d'
              ? end.getTime() + 30 * 86_400_000
              : s.maxAge === '365d'
                ? end.getTime() + 365 * 86_400_000
                : Date.UTC(end.getUTCFullYear(), end.getUTCMonth() + 6, 1);
          expect(destroyed.has(k.id)).toBe(!k.destroyed && due <= s.now);
        }
      }),
      { numRuns: 200 },
    );
  });

  it('gives the same plan whatever the order of its input', () => {
    fc.assert(
      fc.property(stateArb, fc.integer(), (s, seed) => {
        const input = withRules(buildInput(s), s.maxAge);
        const shuffle = <T>(xs: readonly T[]): T[] => {
          const out = [...xs];
          let r = seed;
          for (let i = out.length - 1; i > 0; i--) {
            r = (r * 1103515245 + 12345) & 0x7fffffff;
            const j = r % (i + 1);
            [out[i], out[j]] = [out[j] as T, out[i] as T];
          }
          return out;
        };
        const shuffled: PlanInput = {
          ...input,
          dimensionKeys: shuffle(input.dimensionKeys),
          cellKeys: shuffle(input.cellKeys),
          heldCellKeys: shuffle(input.heldCellKeys),
          holds: shuffle(input.holds),
        };
        expect(JSON.stringify(planLifecycle(shuffled))).toBe(JSON.stringify(planLifecycle(input)));
      }),
      { numRuns: 200 },
    );
  });
});
