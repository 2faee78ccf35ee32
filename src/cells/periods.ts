import { NO_PERIOD } from './ids.ts';

/**
 * The time span of a period label, as the cell query writes them (UTC): `2026-03` (month),
 * `2026-W11` (ISO week, Monday to Monday) and `2026-03-14` (day). `start` is inclusive,
 * `end` exclusive. Returns null for {@link NO_PERIOD} and for anything else that is not a
 * period label, so a caller never shreds on a label it misread.
 */
export function periodRange(label: string): { start: Date; end: Date } | null {
  if (label === NO_PERIOD) return null;
  let m = /^(\d{4})-(\d{2})$/.exec(label);
  if (m !== null) {
    const year = Number(m[1]);
    const month = Number(m[2]);
    if (month < 1 || month > 12) return null;
    return { start: new Date(Date.UTC(year, month - 1, 1)), end: new Date(Date.UTC(year, month, 1)) };
  }
  m = /^(\d{4})-W(\d{2})$/.exec(label);
  if (m !== null) {
    const year = Number(m[1]);
    const week = Number(m[2]);
    if (week < 1 || week > isoWeeksIn(year)) return null;
    const start = new Date(isoWeekOneMonday(year) + (week - 1) * WEEK_MS);
    return { start, end: new Date(start.getTime() + WEEK_MS) };
  }
  m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(label);
  if (m !== null) {
    const start = new Date(Date.UTC(Number(m[1]), Number(m[2]) - 1, Number(m[3])));
    // Date.UTC rolls 2026-02-30 over into March: such a label is not a day.
    if (start.toISOString().slice(0, 10) !== label) return null;
    return { start, end: new Date(start.getTime() + DAY_MS) };
  }
  return null;
}

/**
 * Whether period `label` shares any instant with [from, to] (both inclusive, either open
 * when null). A row with no period ({@link NO_PERIOD}) has no time, so it overlaps every
 * range: a hold on a user's March keeps their profile too.
 */
export function periodOverlaps(label: string, from: Date | null, to: Date | null): boolean {
  if (label === NO_PERIOD) return true;
  const range = periodRange(label);
  if (range === null) return true; // unknown label: keep rather than risk losing held data
  if (from !== null && range.end.getTime() <= from.getTime()) return false;
  if (to !== null && range.start.getTime() > to.getTime()) return false;
  return true;
}

const DAY_MS = 86_400_000;
const WEEK_MS = 7 * DAY_MS;

/** Monday of ISO week 1 of `year` (the week holding January 4th), in ms since the epoch. */
function isoWeekOneMonday(year: number): number {
  const jan4 = Date.UTC(year, 0, 4);
  const weekday = (new Date(jan4).getUTCDay() + 6) % 7; // Monday = 0
  return jan4 - weekday * DAY_MS;
}

function isoWeeksIn(year: number): number {
  return Math.round((isoWeekOneMonday(year + 1) - isoWeekOneMonday(year)) / WEEK_MS);
}
