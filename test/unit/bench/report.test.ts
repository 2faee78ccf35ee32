import { describe, expect, it } from 'vitest';
import { summarize, summaryChecks, type RunMeasurements } from '../../../bench/report.ts';

function run(o: { full: number; baseline: number; verify: number; plain: number; stored: number; cells: number; rss: number }): RunMeasurements {
  const stats = (wallMs: number): { wallMs: number; peakRssBytes: number } => ({ wallMs, peakRssBytes: o.rss });
  const backup = { snapshotId: 's', cells: o.cells, cellsReused: 0, cellsWritten: o.cells, rows: 1, bytesPlain: o.plain, bytesStored: o.stored, durationMs: 1 };
  return {
    databaseBytes: o.plain,
    full: { stats: stats(o.full), output: backup, stored: { packs: o.stored - 10, snapshots: 10 } },
    incremental: { stats: stats(o.full), output: backup, stored: {}, messagesAdded: 1 },
    verify: { stats: stats(o.verify), output: { snapshotId: 's', ok: true, cells: 1, cellsVerified: 1, cellsFailed: 0, rows: 1, findings: [], durationMs: 1 } },
    baseline: { wallMs: o.baseline, peakRssBytes: 1, outputBytes: 1, dumpBytes: 1, pgDump: { peakRssBytes: 1 }, age: { peakRssBytes: 1 } },
  } as unknown as RunMeasurements;
}

describe('bench summary', () => {
  it('computes the ratios the targets are set on', () => {
    const s = summarize('medium', [run({ full: 4000, baseline: 2000, verify: 8000, plain: 1e6, stored: 1.05e6, cells: 1000, rss: 250e6 })]);
    expect(s).toEqual({
      scale: 'medium',
      ratios: { fullVsBaseline: 0.5, verifyVsFull: 0.5 },
      storedVsPlain: 1.05,
      peakRssMb: { full: 250, incremental: 250, verify: 250 },
      cellsPerSecond: 250,
    });
    const checks = Object.fromEntries(summaryChecks(s).map((c) => [c.name, c.pass]));
    expect(checks).toEqual({
      'ratios.fullVsBaseline': false,
      'ratios.verifyVsFull': false,
      storedVsPlain: true,
      'peakRssMb.full': true,
      'peakRssMb.incremental': true,
      'peakRssMb.verify': true,
    });
  });

  it('takes medians over runs and the highest peak', () => {
    const s = summarize('small', [
      run({ full: 1000, baseline: 2000, verify: 1000, plain: 1e6, stored: 1e6, cells: 10, rss: 100e6 }),
      run({ full: 1000, baseline: 3000, verify: 1000, plain: 1e6, stored: 1e6, cells: 10, rss: 320e6 }),
      run({ full: 1000, baseline: 4000, verify: 1000, plain: 1e6, stored: 1e6, cells: 10, rss: 100e6 }),
    ]);
    expect(s.ratios.fullVsBaseline).toBe(3);
    expect(s.peakRssMb.full).toBe(320);
    expect(summaryChecks(s).find((c) => c.name === 'peakRssMb.full')?.pass).toBe(false);
  });
});
