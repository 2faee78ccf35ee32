import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

/**
 * The sweeps of test/sweep/ (faults, kills, mutations, vectors, secrets, fuzz) each run in
 * two sizes: `fast`, a seeded subset that `npm test` runs in a few seconds, and `full`, the
 * whole sweep that `npm run test:sweep` runs (scripts/sweep.mjs sets LETHE_SWEEP=full).
 * Every sweep derives all its randomness from {@link sweepSeed}, so a failure names the seed
 * that reproduces it, and reports its figures with {@link recordFigures} for the table.
 */

export type SweepSize = 'fast' | 'full';

/** `full` under `npm run test:sweep`, else `fast`. */
export function sweepSize(): SweepSize {
  return process.env['LETHE_SWEEP'] === 'full' ? 'full' : 'fast';
}

/** The run's seed: LETHE_SWEEP_SEED when set (to reproduce a run), else a fixed one. */
export function sweepSeed(): number {
  const raw = process.env['LETHE_SWEEP_SEED'];
  if (raw === undefined || raw === '') return 20261205;
  const seed = Number(raw);
  if (!Number.isSafeInteger(seed)) throw new Error(`LETHE_SWEEP_SEED must be an integer, got ${JSON.stringify(raw)}`);
  return seed;
}

/** A small seeded generator (mulberry32): the same seed gives the same sequence everywhere. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Figures of one sweep, as `npm run test:sweep` prints them: numbers, and the seed used. */
export type Figures = Readonly<Record<string, number | string>>;

/**
 * Records a sweep's figures under `key` (e.g. `faultProxy`, `killSweep`, `mutation`, `cctv`,
 * `secrets`, `fuzz`) for scripts/sweep.mjs, which collects them from LETHE_SWEEP_OUT; a
 * no-op otherwise (plain `npm test`). The figures should include `seed` and `size`.
 */
export async function recordFigures(key: string, figures: Figures): Promise<void> {
  const dir = process.env['LETHE_SWEEP_OUT'];
  if (dir === undefined || dir === '') return;
  if (!/^[A-Za-z][A-Za-z0-9]*$/.test(key)) throw new Error(`sweep key ${JSON.stringify(key)} must be a plain word`);
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, `${key}.json`), `${JSON.stringify({ key, seed: sweepSeed(), size: sweepSize(), ...figures })}\n`);
}
