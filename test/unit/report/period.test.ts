import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { LetheError } from '../../../src/errors/index.ts';
import { parseReportDate, parseReportPeriod } from '../../../src/report/index.ts';

const NOW = new Date('2026-06-15T12:00:00Z');

function usageMessage(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(LetheError);
    expect((err as LetheError).code).toBe('USAGE');
    return (err as LetheError).message;
  }
  throw new Error('expected a USAGE error');
}

describe('report period', () => {
  it('takes a date alone as a whole UTC day, --to included', () => {
    const p = parseReportPeriod('2026-03-01', '2026-03-31', NOW);
    expect(p.from.toISOString()).toBe('2026-03-01T00:00:00.000Z');
    expect(p.to.toISOString()).toBe('2026-03-31T23:59:59.999Z');
    expect(p.asGiven).toEqual({ from: '2026-03-01', to: '2026-03-31' });
    const day = parseReportPeriod('2026-02-28', '2026-02-28', NOW);
    expect(day.to.getTime() - day.from.getTime()).toBe(86_400_000 - 1);
  });

  it('takes instants with a zone to the millisecond', () => {
    expect(parseReportDate('2026-03-01T10:15:30Z', 'from').toISOString()).toBe(
      '2026-03-01T10:15:30.000Z',
    );
    expect(parseReportDate('2026-03-01T10:15+02:00', 'from').toISOString()).toBe(
      '2026-03-01T08:15:00.000Z',
    );
    expect(parseReportDate('2026-03-01T10:15:00-0530', 'to').toISOString()).toBe(
      '2026-03-01T15:45:00.000Z',
    );
    expect(parseReportDate('2026-03-01T00:00:00.123456789Z', 'from').toISOString()).toBe(
      '2026-03-01T00:00:00.123Z',
    );
    expect(parseReportDate('2026-03-01T00:00:00.5Z', 'from').toISOString()).toBe(
      '2026-03-01T00:00:00.500Z',
    );
    expect(parseReportDate('2024-02-29', 'from').toISOString()).toBe('2024-02-29T00:00:00.000Z');
  });

  it('refuses what JavaScript would quietly roll over, and anything without a zone', () => {
    for (const bad of [
      '2026-02-30',
      '2025-02-29',
      '2026-13-01',
      '2026-00-10',
      '2026-02-30T10:00:00Z',
      '2026-01-01T24:00:00Z',
      '2026-01-01T10:60Z',
      '2026-06-30T23:59:60Z',
      '2026-01-01T10:00+24:00',
    ]) {
      expect(usageMessage(() => parseReportDate(bad, 'from'))).toMatch(
        /--from ".*" is not a (calendar date|valid date and time)|impossible UTC offset/,
      );
    }
    for (const bad of [
      '2026-01-01T10:00:00',
      'yesterday',
      '1 March 2026',
      '2026-3-1',
      '20260301',
      '',
      '0099-01-01',
      '1969-12-31',
    ]) {
      expect(usageMessage(() => parseReportDate(bad, 'to'))).toMatch(
        /--to ".*" is not a|use YYYY-MM-DD/,
      );
    }
  });

  it('names the missing option, a reversed period, and a period that has not begun', () => {
    expect(usageMessage(() => parseReportPeriod(undefined, '2026-03-01', NOW))).toMatch(
      /needs --from DATE/,
    );
    expect(usageMessage(() => parseReportPeriod('2026-03-01', '  ', NOW))).toMatch(
      /needs --to DATE/,
    );
    expect(usageMessage(() => parseReportPeriod('2026-03-02', '2026-03-01', NOW))).toMatch(
      /--from 2026-03-02 .* is after --to 2026-03-01/,
    );
    expect(usageMessage(() => parseReportPeriod('2026-07-01', '2026-07-31', NOW))).toMatch(
      /is in the future/,
    );
    // A period still running is fine: the report covers it up to now.
    expect(parseReportPeriod('2026-06-01', '2026-06-30', NOW).to.toISOString()).toBe(
      '2026-06-30T23:59:59.999Z',
    );
  });

  it('agrees with the calendar for every day from 1970 to 2199', () => {
    fc.assert(
      fc.property(
        fc.date({
          min: new Date('1970-01-01T00:00:00Z'),
          max: new Date('2199-12-31T23:59:59Z'),
          noInvalidDate: true,
        }),
        (d) => {
          const day = d.toISOString().slice(0, 10);
          expect(parseReportDate(day, 'from').toISOString()).toBe(`${day}T00:00:00.000Z`);
          const instant = d.toISOString();
          expect(parseReportDate(instant, 'to').getTime()).toBe(d.getTime());
        },
      ),
    );
  });
});
