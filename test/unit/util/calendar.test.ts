import { describe, expect, it } from 'vitest';
import { parseHoldDate } from '../../../src/lifecycle/holds.ts';
import { calendarFieldsValid } from '../../../src/util/calendar.ts';

describe('calendar fields', () => {
  it('accepts real dates and times, leap days included', () => {
    for (const ok of ['2026-03-01', '2028-02-29', '2026-12-31T23:59:59Z', '2026-06-01T00:00+02:00']) expect(calendarFieldsValid(ok), ok).toBe(true);
  });

  it('refuses what Date would roll over into another day or month', () => {
    for (const bad of ['2026-02-30', '2027-02-29', '2026-13-01', '2026-00-10', '2026-04-31T10:00:00Z', '2026-03-01T24:00Z', '2026-03-01T10:60Z', '2026-03-01T10:00:60Z']) {
      expect(calendarFieldsValid(bad), bad).toBe(false);
    }
  });

  it('keeps a hold edge from landing on a day nobody typed', () => {
    expect(() => parseHoldDate('2026-02-30T10:00:00Z', 'from')).toThrow(/--from "2026-02-30T10:00:00Z" is not a date/);
    expect(parseHoldDate('2026-02-28T10:00:00Z', 'from').toISOString()).toBe('2026-02-28T10:00:00.000Z');
  });
});
