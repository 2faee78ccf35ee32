import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { recordFigures, seededRandom, sweepSeed, sweepSize } from '../../helpers/sweep.ts';

describe('sweep helpers', () => {
  const saved = { ...process.env };
  afterEach(() => {
    for (const k of ['LETHE_SWEEP', 'LETHE_SWEEP_SEED', 'LETHE_SWEEP_OUT']) {
      if (saved[k] === undefined) Reflect.deleteProperty(process.env, k);
      else process.env[k] = saved[k];
    }
  });

  it('runs fast unless the sweep runner asks for full, and takes its seed from the environment', () => {
    Reflect.deleteProperty(process.env, 'LETHE_SWEEP');
    Reflect.deleteProperty(process.env, 'LETHE_SWEEP_SEED');
    expect(sweepSize()).toBe('fast');
    expect(sweepSeed()).toBe(20261205);
    process.env['LETHE_SWEEP'] = 'full';
    process.env['LETHE_SWEEP_SEED'] = '42';
    expect(sweepSize()).toBe('full');
    expect(sweepSeed()).toBe(42);
    process.env['LETHE_SWEEP_SEED'] = '4.2';
    expect(() => sweepSeed()).toThrow(/must be an integer/);
  });

  it('draws the same sequence from the same seed, and another from another', () => {
    const a = seededRandom(7);
    const b = seededRandom(7);
    const c = seededRandom(8);
    const xs = Array.from({ length: 5 }, () => a());
    expect(Array.from({ length: 5 }, () => b())).toEqual(xs);
    expect(Array.from({ length: 5 }, () => c())).not.toEqual(xs);
    expect(xs.every((x) => x >= 0 && x < 1)).toBe(true);
  });

  it('records figures where the runner collects them, and nowhere otherwise', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'lethe-sweep-test-'));
    try {
      Reflect.deleteProperty(process.env, 'LETHE_SWEEP_OUT');
      await recordFigures('nothing', { runs: 1 });
      process.env['LETHE_SWEEP_OUT'] = dir;
      process.env['LETHE_SWEEP_SEED'] = '9';
      await recordFigures('killSweep', { runs: 3, recovered: 3 });
      expect(JSON.parse(await readFile(join(dir, 'killSweep.json'), 'utf8'))).toEqual({ key: 'killSweep', seed: 9, size: 'fast', runs: 3, recovered: 3 });
      await expect(recordFigures('../x', {})).rejects.toThrow(/plain word/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
