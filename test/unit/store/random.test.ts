import { describe, expect, it } from 'vitest';
import { CumulativeTable, Prng, zipfWeights } from '../../../src/store/random.ts';

const take = (rng: Prng, n: number): number[] => Array.from({ length: n }, () => rng.nextU32());

describe('Prng', () => {
  it('is a pure function of (seed, stream, purpose)', () => {
    expect(take(new Prng(42, 7, 1), 5)).toEqual(take(new Prng(42, 7, 1), 5));
    expect(take(new Prng(42, 7, 1), 5)).not.toEqual(take(new Prng(43, 7, 1), 5));
    expect(take(new Prng(42, 7, 1), 5)).not.toEqual(take(new Prng(42, 8, 1), 5));
    expect(take(new Prng(42, 7, 1), 5)).not.toEqual(take(new Prng(42, 7, 2), 5));
    // Seeds above 2^32 are not folded onto small ones.
    expect(take(new Prng(2 ** 32 + 5), 3)).not.toEqual(take(new Prng(5), 3));
  });

  it('reseed restarts the same stream as a fresh instance', () => {
    const rng = new Prng(1);
    take(rng, 10);
    rng.reseed(9, 3, 4);
    expect(take(rng, 4)).toEqual(take(new Prng(9, 3, 4), 4));
  });

  it('pins the stream, so seeded data cannot drift silently', () => {
    expect(take(new Prng(1), 3)).toMatchInlineSnapshot(`
      [
        554408185,
        2556678742,
        2575962343,
      ]
    `);
  });

  it('yields values in range', () => {
    const rng = new Prng(5);
    const seen = new Set<number>();
    let min = 1;
    let max = 0;
    for (let i = 0; i < 10_000; i++) {
      const x = rng.next();
      min = Math.min(min, x);
      max = Math.max(max, x);
      seen.add(rng.range(3, 5));
    }
    expect(min).toBeGreaterThanOrEqual(0);
    expect(max).toBeLessThan(1);
    expect([...seen].sort()).toEqual([3, 4, 5]);
  });
});

describe('CumulativeTable', () => {
  it('samples proportionally to weight and only within the prefix asked for', () => {
    const table = new CumulativeTable(zipfWeights(100, 1.5));
    const rng = new Prng(3);
    const counts = new Array<number>(100).fill(0);
    for (let i = 0; i < 50_000; i++) {
      const k = table.sample(rng);
      counts[k] = (counts[k] ?? 0) + 1;
    }
    expect(counts[0]).toBeGreaterThan((counts[9] ?? 0) * 10);
    for (let i = 0; i < 1000; i++) expect(table.sample(rng, 3)).toBeLessThan(3);
    expect(table.sample(rng, 0)).toBe(0);
  });
});
