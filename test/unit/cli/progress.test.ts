import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { clock, ProgressBar } from '../../../src/cli/progress.ts';

/** A terminal that records what is written to it. */
function terminal(columns = 200): { columns: number; writes: string[]; write(text: string): void; frames(): string[] } {
  const writes: string[] = [];
  return {
    columns,
    writes,
    write(text: string) {
      writes.push(text);
    },
    /** The lines drawn (each write that starts a frame), without control codes. */
    frames() {
      return writes.filter((w) => w.startsWith('\r\x1b[2K') && w.length > 5).map((w) => w.slice(5));
    },
  };
}

describe('ProgressBar', () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('writes nothing when not enabled (not a terminal, or --json)', () => {
    const tty = terminal();
    const bar = new ProgressBar(tty, { enabled: false, now: () => Date.now() });
    bar.update({ step: 'verify', cells: 1, cellsTotal: 10 });
    bar.print('lethe: warning: x\n');
    bar.done();
    vi.advanceTimersByTime(1000);
    expect(tty.writes).toEqual(['lethe: warning: x\n']);
  });

  it('redraws at most ten times a second however often the job reports, and shows the last report', () => {
    const tty = terminal();
    const bar = new ProgressBar(tty, { enabled: true, now: () => Date.now() });
    // 13,673 cells over 2 seconds, one report per cell (as verify reports them).
    const total = 13_673;
    for (let cell = 1; cell <= total; cell++) {
      bar.update({ step: 'verify', cells: cell, cellsTotal: total, rows: cell * 2 });
      if (cell % 7 === 0) vi.advanceTimersByTime(1);
    }
    vi.advanceTimersByTime(200);
    const frames = tty.frames();
    expect(frames.length).toBeGreaterThan(5);
    expect(frames.length).toBeLessThanOrEqual(22);
    expect(frames.at(-1)).toContain(`13,673/13,673 cells`);
    expect(frames.at(-1)).toContain('100%');
  });

  it('shows the bar, counts against totals, the rate and an ETA from the bytes', () => {
    const tty = terminal();
    const bar = new ProgressBar(tty, { enabled: true, now: () => Date.now() });
    const MiB = 1024 * 1024;
    for (let t = 0; t <= 20; t++) {
      bar.update({ step: 'verify', cells: t * 100, cellsTotal: 10_000, rows: t * 300, bytes: t * 0.1 * MiB, bytesTotal: 10 * MiB });
      vi.advanceTimersByTime(100);
    }
    // 2 MiB after 2 s at 1 MiB/s, 8 MiB to go.
    const line = tty.frames().at(-1) ?? '';
    expect(line.startsWith('verify [####----------------]  20%')).toBe(true);
    expect(line).toContain('2,000/10,000 cells');
    expect(line).toContain('6,000 rows');
    expect(line).toContain('2.0 MiB of 10.0 MiB');
    expect(line).toContain('1.0 MiB/s');
    expect(line).toContain('ETA 0:08');
  });

  it('gives no ETA while the total may still grow, and marks the total with +', () => {
    const tty = terminal();
    const bar = new ProgressBar(tty, { enabled: true, now: () => Date.now() });
    for (let t = 0; t <= 20; t++) {
      bar.update({ step: 'backup', detail: 'table messages (3/7)', rows: t * 1000, rowsTotal: 50_000, totalGrows: true, cells: t * 10 });
      vi.advanceTimersByTime(100);
    }
    const line = tty.frames().at(-1) ?? '';
    expect(line).toContain('table messages (3/7)');
    expect(line).toContain('20,000/50,000+ rows');
    expect(line).not.toContain('ETA');
  });

  it('moves out of the way of a printed line and comes back; done() erases it', () => {
    const tty = terminal();
    const bar = new ProgressBar(tty, { enabled: true, now: () => Date.now() });
    bar.update({ step: 'restore', cells: 5 });
    tty.writes.length = 0;
    bar.print('lethe: warning: careful\n');
    expect(tty.writes).toEqual(['\r\x1b[2K', 'lethe: warning: careful\n', '\r\x1b[2Krestore  5 cells']);
    tty.writes.length = 0;
    bar.done();
    expect(tty.writes).toEqual(['\r\x1b[2K']);
    bar.print('next\n');
    expect(tty.writes).toEqual(['\r\x1b[2K', 'next\n']);
  });

  it('cuts the line to the terminal width', () => {
    const tty = terminal(40);
    const bar = new ProgressBar(tty, { enabled: true, now: () => Date.now() });
    bar.update({ step: 'backup', detail: 'table a_table_with_a_rather_long_name (1/7)', cells: 123456, rows: 7654321 });
    const line = tty.frames().at(-1) ?? '';
    expect(line.length).toBe(39);
    expect(line.endsWith('…')).toBe(true);
  });

  it('formats durations as m:ss and h:mm:ss', () => {
    expect(clock(7)).toBe('0:07');
    expect(clock(754)).toBe('12:34');
    expect(clock(3723)).toBe('1:02:03');
  });
});
