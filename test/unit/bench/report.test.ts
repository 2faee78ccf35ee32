import { describe, expect, it } from 'vitest';
import { summarize, summaryChecks, tableRows, type RunMeasurements } from '../../../bench/report.ts';

interface RunFigures {
  full: number;
  baseline: number;
  verify: number;
  plain: number;
  stored: number;
  cells: number;
  rss: number;
  /** lethe's incremental wall time; default `full`. */
  incremental?: number;
  /** What the incremental added to storage; default 0. */
  incrementalStored?: number;
  /** pg_dump | restic's incremental wall time; null: restic missing. Default null. */
  resticIncremental?: number | null;
  /** Bytes of the chat store's files (the baseline's tar stream, restic's files backup); default 0. */
  files?: number;
}

function run(o: RunFigures): RunMeasurements {
  const stats = (wallMs: number): { wallMs: number; peakRssBytes: number } => ({ wallMs, peakRssBytes: o.rss });
  const backup = { snapshotId: 's', cells: o.cells, cellsReused: 0, cellsWritten: o.cells, rows: 1, bytesPlain: o.plain, bytesStored: o.stored, durationMs: 1 };
  const filesBytes = o.files ?? 0;
  const resticRun = (wallMs: number): unknown => ({ wallMs, peakRssBytes: 1, stored: { data: 5 }, dataAdded: 5, dumpBytes: 1, filesBytes, filesWallMs: 1 });
  const resticIncremental = o.resticIncremental ?? null;
  return {
    databaseBytes: o.plain,
    databaseBytesAfterChurn: o.plain,
    full: { stats: stats(o.full), output: backup, stored: { packs: o.stored - 10, snapshots: 10 } },
    incremental: { stats: stats(o.incremental ?? o.full), output: backup, stored: { packs: o.incrementalStored ?? 0 } },
    churn: { messagesBefore: 100, added: 1, edited: 1, deleted: 1 },
    verify: { stats: stats(o.verify), output: { snapshotId: 's', ok: true, cells: 1, cellsVerified: 1, cellsFailed: 0, rows: 1, findings: [], durationMs: 1 } },
    baseline: {
      wallMs: o.baseline,
      peakRssBytes: 1,
      outputBytes: 1,
      dumpBytes: 1,
      pgDump: { peakRssBytes: 1 },
      age: { peakRssBytes: 1 },
      files: { wallMs: 1, tar: { peakRssBytes: 1 }, age: { peakRssBytes: 1 }, outputBytes: 1, tarBytes: filesBytes },
    },
    restic: resticIncremental === null ? null : { full: resticRun(o.baseline), incremental: resticRun(resticIncremental) },
  } as unknown as RunMeasurements;
}

describe('bench summary', () => {
  it('computes the ratios the targets are set on', () => {
    const s = summarize('medium', [
      run({ full: 4000, baseline: 2000, verify: 8000, plain: 1e6, stored: 1.05e6, cells: 1000, rss: 250e6, incremental: 400, incrementalStored: 21_000, resticIncremental: 4000 }),
    ]);
    expect(s).toEqual({
      scale: 'medium',
      ratios: { fullVsBaseline: 0.5, verifyVsFull: 0.5, incrementalVsFull: 0.1, incrementalVsRestic: 0.1 },
      storedVsPlain: 1.05,
      incrementalStoredVsFull: 0.02,
      peakRssMb: { full: 250, incremental: 250, verify: 250 },
      cellsPerSecond: 250,
    });
    const checks = Object.fromEntries(summaryChecks(s).map((c) => [c.name, c.pass]));
    expect(checks).toEqual({
      'ratios.fullVsBaseline': false,
      'ratios.verifyVsFull': false,
      'ratios.incrementalVsFull': true,
      'ratios.incrementalVsRestic': true,
      storedVsPlain: true,
      incrementalStoredVsFull: true,
      'peakRssMb.full': true,
      'peakRssMb.incremental': true,
      'peakRssMb.verify': true,
    });
  });

  it('checks incrementalVsFull against its scale’s target, and not at small', () => {
    const figures = { full: 1000, baseline: 1000, verify: 1000, plain: 1e6, stored: 1e6, cells: 10, rss: 100e6, incremental: 100 };
    const pass = (scale: string): boolean | null | undefined =>
      summaryChecks(summarize(scale, [run(figures)])).find((c) => c.name === 'ratios.incrementalVsFull')?.pass;
    expect(pass('medium')).toBe(true);
    expect(pass('large')).toBe(false);
    expect(pass('small')).toBeNull();
  });

  it('reports restic as not measured, not failed, where it is missing', () => {
    const r = run({ full: 1000, baseline: 1000, verify: 1000, plain: 1e6, stored: 1e6, cells: 10, rss: 100e6, incrementalStored: 50_000 });
    const s = summarize('large', [r]);
    expect(s.ratios.incrementalVsRestic).toBeNull();
    const checks = summaryChecks(s);
    expect(checks.find((c) => c.name === 'ratios.incrementalVsRestic')).toMatchObject({ figure: 'n/a', pass: null });
    expect(checks.find((c) => c.name === 'incrementalStoredVsFull')?.pass).toBe(false);
    expect(tableRows([r]).map((row) => row.step)).not.toContain('pg_dump | restic (incremental)');
  });

  it('counts the files outside the database in the baselines\' rates', () => {
    const rows = tableRows([run({ full: 1000, baseline: 1000, verify: 1000, plain: 1e6, stored: 1e6, cells: 10, rss: 100e6, files: 3e6, resticIncremental: 2000 })]);
    const rate = (step: string): number | undefined => rows.find((row) => row.step === step)?.mbPerSecond;
    // (1 MB of database + 3 MB of files) per second.
    expect(rate('pg_dump | age')).toBe(4);
    expect(rate('pg_dump | restic (full)')).toBe(4);
    expect(rate('pg_dump | restic (incremental)')).toBe(2);
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
