import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { formatPlan } from '../../../src/lifecycle/plan-format.ts';
import { planLifecycle } from '../../../src/lifecycle/plan.ts';
import { GOLDEN_DIR, goldenNames, loadGoldenInput, loadGoldenPlan } from './golden-loader.ts';

/**
 * Golden planner tests: each `golden/<name>.input.json` must plan to exactly
 * `golden/<name>.plan.json`, and print as `golden/<name>.plan.txt`. After an intended change
 * of the planner, regenerate with `UPDATE_GOLDEN=1 npx vitest run test/unit/lifecycle`
 * and review the diff line by line: the expected files are the specification.
 */
const update = process.env['UPDATE_GOLDEN'] === '1';

describe('planLifecycle golden files', () => {
  const names = goldenNames();
  it('has fixtures', () => {
    expect(names.length).toBeGreaterThanOrEqual(15);
  });

  it.each(names)('%s', (name) => {
    const plan = planLifecycle(loadGoldenInput(name));
    const json = JSON.parse(JSON.stringify(plan)) as unknown;
    const text = formatPlan(plan);
    if (update) {
      writeFileSync(join(GOLDEN_DIR, `${name}.plan.json`), `${JSON.stringify(json, null, 2)}\n`);
      writeFileSync(join(GOLDEN_DIR, `${name}.plan.txt`), `${text}\n`);
    }
    expect(json).toEqual(loadGoldenPlan(name));
    expect(`${text}\n`).toBe(readFileSync(join(GOLDEN_DIR, `${name}.plan.txt`), 'utf8'));
    // Same input, same bytes: plans diff cleanly.
    expect(JSON.stringify(planLifecycle(loadGoldenInput(name)))).toBe(JSON.stringify(plan));
  });
});
