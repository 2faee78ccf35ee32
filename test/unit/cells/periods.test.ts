import { describe, expect, it } from 'vitest';
import { periodOverlaps, periodRange } from '../../../src/cells/periods.ts';

const iso = (d: Date | undefined): string | undefined => d?.toISOString();

describe('periodRange', () => {
  it('spans a calendar month, December into January', () => {
    const r = periodRange('2025-12');
    expect([iso(r?.start), iso(r?.end)]).toEqual(['2025-12-01T00:00:00.000Z', '2026-01-01T00:00:00.000Z']);
  });

  it('spans an ISO week from Monday, including week 1 starting in December and week 53', () => {
    // 2026-W01 starts Monday 2025-12-29 (January 4th 2026 is a Sunday).
    expect(iso(periodRange('2026-W01')?.start)).toBe('2025-12-29T00:00:00.000Z');
    expect(iso(periodRange('2026-W11')?.start)).toBe('2026-03-09T00:00:00.000Z');
    expect(iso(periodRange('2026-W53')?.start)).toBe('2026-12-28T00:00:00.000Z');
    expect(periodRange('2025-W53')).toBeNull(); // 2025 has 52 ISO weeks
    const w = periodRange('2026-W11');
    expect((w?.end.getTime() ?? 0) - (w?.start.getTime() ?? 0)).toBe(7 * 86_400_000);
  });

  it('spans a day, and refuses days that do not exist', () => {
    expect(iso(periodRange('2024-02-29')?.end)).toBe('2024-03-01T00:00:00.000Z');
    expect(periodRange('2025-02-29')).toBeNull();
    expect(periodRange('2025-13')).toBeNull();
  });

  it('has no range for rows without a period or for labels it does not know', () => {
    for (const label of ['-', '', '2025', '2025-3', 'W11', '2025-03-01T00']) expect(periodRange(label)).toBeNull();
  });
});

describe('periodOverlaps', () => {
  const march = (from: string | null, to: string | null): boolean =>
    periodOverlaps('2026-03', from === null ? null : new Date(from), to === null ? null : new Date(to));

  it('treats both bounds as inclusive and the period end as exclusive', () => {
    expect(march('2026-03-31T23:59:59Z', null)).toBe(true);
    expect(march('2026-04-01T00:00:00Z', null)).toBe(false);
    expect(march(null, '2026-03-01T00:00:00Z')).toBe(true);
    expect(march(null, '2026-02-28T23:59:59Z')).toBe(false);
    expect(march('2026-03-10T00:00:00Z', '2026-03-12T00:00:00Z')).toBe(true);
    expect(march(null, null)).toBe(true);
  });

  it('keeps rows without a period, and unknown labels, inside every range', () => {
    expect(periodOverlaps('-', new Date('2030-01-01'), new Date('2030-01-02'))).toBe(true);
    expect(periodOverlaps('garbage', new Date('2030-01-01'), new Date('2030-01-02'))).toBe(true);
  });
});
