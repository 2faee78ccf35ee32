import { Cron } from 'croner';

/**
 * A daemon job's cron schedule: five fields (minute hour day-of-month month day-of-week) or
 * six with a leading seconds field, evaluated in an IANA time zone. croner computes the
 * times; lethe only ever asks "which slots fall in (after, until]", so every daemon on a
 * vault, given the same config, names the same slots (the vault keys runs by slot).
 */
export class Schedule {
  readonly #cron: Cron;

  private constructor(
    readonly expression: string,
    readonly timezone: string,
  ) {
    this.#cron = new Cron(expression, { timezone, paused: true, mode: expression.trim().split(/\s+/).length === 6 ? '6-part' : '5-part' });
  }

  /** Parses `expression`; throws an Error whose message says what is wrong (for the config's error). */
  static parse(expression: string, timezone: string): Schedule {
    const fields = expression.trim().split(/\s+/);
    if (fields.length !== 5 && fields.length !== 6) {
      throw new Error(`a cron expression has 5 fields (minute hour day month weekday) or 6 with leading seconds; got ${fields.length}`);
    }
    checkTimezone(timezone);
    try {
      const schedule = new Schedule(expression, timezone);
      if (schedule.next(new Date()) === null) throw new Error('it never fires');
      return schedule;
    } catch (err) {
      throw new Error(`not a valid cron expression: ${(err as Error).message.replace(/^CronPattern: /, '')}`, { cause: err });
    }
  }

  /** The first slot strictly after `after`, or null when there is none. */
  next(after: Date): Date | null {
    return this.#cron.nextRun(after);
  }

  /**
   * The slots in (after, until], oldest first. `limit` bounds the walk (a per-second schedule
   * after a week down): past it, the newest slot is still returned last and `more` is true.
   */
  slotsBetween(after: Date, until: Date, limit = 1000): { slots: Date[]; more: boolean } {
    const newest = this.latestAtOrBefore(until, after);
    if (newest === null) return { slots: [], more: false };
    const slots: Date[] = [];
    let more = false;
    for (let at = this.next(after); at !== null && at.getTime() < newest.getTime(); at = this.next(at)) {
      if (slots.length === limit) {
        more = true;
        break;
      }
      slots.push(at);
    }
    slots.push(newest);
    return { slots, more };
  }

  /**
   * The newest slot at or before `until` and after `floor`, or null. Searches backwards in
   * growing windows, so a yearly schedule and a per-second one both cost a few steps.
   */
  latestAtOrBefore(until: Date, floor: Date): Date | null {
    const end = until.getTime();
    for (let windowMs = 1000; ; windowMs *= 8) {
      const from = Math.max(end - windowMs, floor.getTime());
      let found: Date | null = null;
      for (let at = this.next(new Date(from)); at !== null && at.getTime() <= end; at = this.next(at)) found = at;
      if (found !== null) return found;
      if (from <= floor.getTime()) return null;
    }
  }
}

/** Throws when `timezone` is not an IANA zone this Node.js knows. */
export function checkTimezone(timezone: string): void {
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: timezone });
  } catch {
    throw new Error(`unknown time zone ${JSON.stringify(timezone)}: use an IANA name such as UTC or Europe/Berlin`);
  }
}
