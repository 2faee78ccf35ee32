import { describe, expect, it } from 'vitest';
import { measureRpo, type RestorePoint } from '../../../src/report/index.ts';

const H = 3_600_000;
const T0 = Date.parse('2026-03-01T00:00:00Z');
const at = (hours: number): Date => new Date(T0 + hours * H);
/** A snapshot started at `start` hours and complete `took` hours later. */
const snap = (id: string, start: number, took = 0.5): RestorePoint => ({
  id,
  startedAt: at(start),
  completedAt: at(start + took),
});

describe('measureRpo', () => {
  it('is the age of the newest complete snapshot just before each completion and at the end', () => {
    // Before the period: one at -2 h. In it: backups at 4 h and 10 h (each 30 min); measured to 24 h.
    const m = measureRpo([snap('c', 10), snap('a', -2), snap('b', 4)], at(0), at(24), 12 * 3600);
    expect(m.completions).toBe(2);
    // Just before 4.5 h the newest is from -2 h: 6.5 h; just before 10.5 h: 6.5 h; at 24 h: 14 h.
    expect(m.worstSeconds).toBe(14 * 3600);
    expect(m.worstAt).toBe(at(24).toISOString());
    expect(m.met).toBe(false);
    // Over 12 h from 22 h (10 h + 12 h) to the end.
    expect(m.breaches).toEqual([
      { from: at(22).toISOString(), to: at(24).toISOString(), worstSeconds: 14 * 3600 },
    ]);
    expect(m.withoutBackup).toBeNull();
  });

  it('meets an objective the backups keep, and has no verdict without one', () => {
    const points = [
      snap('a', -1),
      ...Array.from({ length: 4 }, (_, i) => snap(`s${i}`, 6 * (i + 1) - 1)),
    ];
    const m = measureRpo(points, at(0), at(24), 8 * 3600);
    expect(m.met).toBe(true);
    expect(m.breaches).toEqual([]);
    // Just before 5.5 h: newest from -1 h: 6.5 h. The largest gap.
    expect(m.worstSeconds).toBe(6.5 * 3600);
    const none = measureRpo(points, at(0), at(24), null);
    expect(none.met).toBeNull();
    expect(none.objectiveSeconds).toBeNull();
    expect(none.worstSeconds).toBe(6.5 * 3600);
  });

  it('reports the time before the first snapshot as without backup, and as a breach', () => {
    const m = measureRpo([snap('a', 5)], at(0), at(10), 3600);
    expect(m.withoutBackup).toEqual({ from: at(0).toISOString(), to: at(5.5).toISOString() });
    expect(m.worstSeconds).toBeNull();
    expect(m.met).toBe(false);
    // No backup until 5.5 h; then over 1 h again from 6 h (5 h + 1 h) to the end: two breaches.
    expect(m.breaches).toEqual([
      { from: at(0).toISOString(), to: at(5.5).toISOString(), worstSeconds: null },
      { from: at(6).toISOString(), to: at(10).toISOString(), worstSeconds: 5 * 3600 },
    ]);
    const empty = measureRpo([], at(0), at(10), null);
    expect(empty.withoutBackup).toEqual({ from: at(0).toISOString(), to: at(10).toISOString() });
    expect(empty.breaches).toEqual([]);
  });

  it('merges breaches that touch: a completion that leaves the RPO over the objective', () => {
    // Objective 2 h. Newest -10 h; a backup started at -1 h completes at 3 h (slow): still 4 h old then.
    const m = measureRpo([snap('old', -10), snap('slow', -1, 4)], at(0), at(5), 2 * 3600);
    // From 0 (already 10 h old) to 3 h, then from 3 h (newest -1 h: 4 h old) to 5 h: one breach.
    expect(m.breaches).toEqual([
      { from: at(0).toISOString(), to: at(5).toISOString(), worstSeconds: 13 * 3600 },
    ]);
  });

  it('counts a snapshot from its completion, and the newest start, not the last completion', () => {
    // Two overlapping runs (sharded workers): the later-started one completes first.
    const m = measureRpo(
      [snap('a', -4), snap('late', 2, 1), snap('early', 1, 3)],
      at(0),
      at(6),
      null,
    );
    // Just before 3 h: newest -4 h → 7 h; at 3 h 'late' (2 h) is in; 'early' (1 h) at 4 h changes nothing; at 6 h: 4 h.
    expect(m.worstSeconds).toBe(7 * 3600);
    expect(m.worstAt).toBe(at(3).toISOString());
  });

  it('ignores snapshots completed after the measured end', () => {
    const m = measureRpo([snap('a', -1), snap('later', 30)], at(0), at(10), null);
    expect(m.completions).toBe(0);
    expect(m.worstSeconds).toBe(11 * 3600);
    expect(m.measuredUntil).toBe(at(10).toISOString());
  });
});
