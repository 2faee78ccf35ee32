import { ErrorCode, LetheError } from '../errors/index.ts';

/**
 * The period a report covers: every instant from `from` to `to`, both included, on the vault
 * database's clock. `asGiven` keeps the operator's words, so the report says what was asked.
 */
export interface ReportPeriod {
  readonly from: Date;
  readonly to: Date;
  readonly asGiven: { readonly from: string; readonly to: string };
}

const DAY_MS = 86_400_000;

const DATE_ONLY = /^(\d{4})-(\d{2})-(\d{2})$/;
// Hours and minutes, optional seconds and fraction, and a zone that is not optional: an
// evidence period must not depend on the time zone of the machine that printed it.
const INSTANT =
  /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?(Z|([+-])(\d{2}):?(\d{2}))$/;

const USAGE_HINT =
  'use YYYY-MM-DD (a whole UTC day) or an ISO-8601 instant with a zone, e.g. 2026-03-01T00:00:00Z';

function daysInMonth(year: number, month: number): number {
  return new Date(Date.UTC(year, month, 0)).getUTCDate();
}

function badDate(edge: 'from' | 'to', value: string, why: string): LetheError {
  return new LetheError(
    ErrorCode.USAGE,
    `--${edge} ${JSON.stringify(value)} ${why}: ${USAGE_HINT}`,
    {
      details: { option: `--${edge}`, value },
    },
  );
}

/** The UTC instant of a calendar date and time; null when a field is out of its range. */
function utc(
  year: number,
  month: number,
  day: number,
  hour = 0,
  minute = 0,
  second = 0,
  ms = 0,
): number | null {
  // Date.UTC reads years 0..99 as 1900..1999; lethe has no facts from before 1970 anyway.
  if (year < 1970) return null;
  if (month < 1 || month > 12 || day < 1 || day > daysInMonth(year, month)) return null;
  if (hour > 23 || minute > 59 || second > 59) return null;
  return Date.UTC(year, month - 1, day, hour, minute, second, ms);
}

/**
 * One edge of a period. A date alone is a whole UTC day: as `from`, its first instant; as
 * `to`, its last millisecond, so `--from 2026-03-01 --to 2026-03-31` is all of March. An
 * instant needs a zone (`Z`, `+01:00`, `-0500`) and is taken to the millisecond (further
 * digits are cut off). Every field is range-checked: `2026-02-30` and `T24:00` are refused
 * (JavaScript's Date would quietly roll them over into the next month or day), and so is a
 * leap second. Throws USAGE naming the option and the value.
 */
export function parseReportDate(value: string, edge: 'from' | 'to'): Date {
  const text = value.trim();
  const date = DATE_ONLY.exec(text);
  if (date !== null) {
    const start = utc(Number(date[1]), Number(date[2]), Number(date[3]));
    if (start === null) throw badDate(edge, value, 'is not a calendar date');
    return new Date(edge === 'from' ? start : start + DAY_MS - 1);
  }
  const instant = INSTANT.exec(text);
  if (instant === null) throw badDate(edge, value, 'is not a date');
  const [, y, mo, d, h, mi, s, fraction, zone, sign, zh, zm] = instant;
  const ms = fraction === undefined ? 0 : Number(fraction.padEnd(3, '0').slice(0, 3));
  const local = utc(Number(y), Number(mo), Number(d), Number(h), Number(mi), Number(s ?? 0), ms);
  if (local === null) throw badDate(edge, value, 'is not a valid date and time');
  if (zone === 'Z') return new Date(local);
  const offsetHours = Number(zh);
  const offsetMinutes = Number(zm);
  if (offsetHours > 23 || offsetMinutes > 59)
    throw badDate(edge, value, 'has an impossible UTC offset');
  const offsetMs = (offsetHours * 60 + offsetMinutes) * 60_000 * (sign === '-' ? -1 : 1);
  return new Date(local - offsetMs);
}

/**
 * Parses `--from` and `--to` into a period. Throws USAGE when either is missing, is not a
 * date, when `from` is after `to`, or when `from` is after `now` (nothing has happened in
 * such a period yet). A `to` in the future is allowed: the report then covers up to the
 * moment it is made, and says so.
 */
export function parseReportPeriod(
  from: string | undefined,
  to: string | undefined,
  now: Date,
): ReportPeriod {
  if (from === undefined || from.trim() === '') {
    throw new LetheError(
      ErrorCode.USAGE,
      `the report needs --from DATE, the first day of the period (${USAGE_HINT})`,
    );
  }
  if (to === undefined || to.trim() === '') {
    throw new LetheError(
      ErrorCode.USAGE,
      `the report needs --to DATE, the last day of the period, included (${USAGE_HINT})`,
    );
  }
  const start = parseReportDate(from, 'from');
  const end = parseReportDate(to, 'to');
  if (start.getTime() > end.getTime()) {
    throw new LetheError(
      ErrorCode.USAGE,
      `--from ${from.trim()} (${start.toISOString()}) is after --to ${to.trim()} (${end.toISOString()}): ` +
        'give the earlier date as --from',
      { details: { from: start.toISOString(), to: end.toISOString() } },
    );
  }
  if (start.getTime() > now.getTime()) {
    throw new LetheError(
      ErrorCode.USAGE,
      `--from ${from.trim()} (${start.toISOString()}) is in the future (now is ${now.toISOString()}): nothing has happened in that period yet`,
      { details: { from: start.toISOString(), now: now.toISOString() } },
    );
  }
  return { from: start, to: end, asGiven: { from: from.trim(), to: to.trim() } };
}
