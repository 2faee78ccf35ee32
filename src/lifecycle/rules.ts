import { z } from 'zod';
import { DATA_CLASSES, type DataClass } from '../mapping/schema.ts';

/**
 * Retention rules: how long each data class lives (per tenant when overridden), which
 * snapshots are kept, and the vault-backup grace window. The zod schema here is the
 * `retention:` section of the config (src/config/schema.ts embeds it), so a rule is
 * checked once, where the config is read, and refused with its path and the fix.
 *
 * This module is a leaf (zod and the list of data classes only): config imports it, and it
 * imports nothing from config, so the rules are parsed in one place without a cycle.
 */

/** A maximum age: a whole number of days, weeks, calendar months or years; or forever. */
export type Duration =
  | { readonly count: number; readonly unit: 'd' | 'w' | 'm' | 'y' }
  | { readonly unit: 'forever' };

export const FOREVER: Duration = { unit: 'forever' };

/**
 * A restic-like keep policy over complete snapshots. Each `keepX` keeps the newest snapshot
 * of each of the last X hours/days/weeks/months/years (UTC) that has one; `keepLast` keeps
 * the newest N. A snapshot kept by any rule is kept; the newest is always kept.
 */
export interface SnapshotPolicy {
  readonly keepLast: number;
  readonly keepHourly: number;
  readonly keepDaily: number;
  readonly keepWeekly: number;
  readonly keepMonthly: number;
  readonly keepYearly: number;
}

export interface RetentionRules {
  /** Maximum age per data class; a class not written in the config is kept forever. */
  readonly classes: Readonly<Record<DataClass, Duration>>;
  /** Per-tenant overrides (chat-store tenant id → class → maximum age). */
  readonly tenants: Readonly<Record<string, Readonly<Partial<Record<DataClass, Duration>>>>>;
  /** Null: every snapshot is kept. */
  readonly snapshots: SnapshotPolicy | null;
  /** Days a vault backup is kept; a destroyed key is gone from every copy after this. */
  readonly graceWindowDays: number;
}

const DURATION_FIX = 'write a whole number and one unit: d (days), w (weeks), m (calendar months) or y (years), e.g. 365d, or `forever`';

/**
 * Parses a duration as written in the config (`365d`, `6m`, `forever`). Returns the
 * duration, or a message saying what is wrong and how to fix it (the caller adds the path).
 */
export function parseDuration(value: unknown): Duration | { error: string } {
  if (typeof value === 'number') {
    return { error: `${value} has no unit: ${DURATION_FIX}` };
  }
  if (typeof value !== 'string') return { error: `expected a duration such as 365d: ${DURATION_FIX}` };
  const text = value.trim();
  if (text === 'forever') return FOREVER;
  if (text === '') return { error: `empty duration: ${DURATION_FIX}` };
  const parts = [...text.matchAll(/(-?[0-9.,]+)\s*([a-zA-Z]*)/g)];
  const joined = parts.map((p) => p[0]).join('');
  if (parts.length > 1 && joined.replaceAll(/\s/g, '') === text.replaceAll(/\s/g, '')) {
    return { error: `\`${text}\` mixes units: use one unit, e.g. 18m instead of 1y6m` };
  }
  const m = /^(-?)([0-9]+(?:[.,][0-9]+)?)\s*([a-zA-Z]*)$/.exec(text);
  if (m === null) return { error: `\`${text}\` is not a duration: ${DURATION_FIX}` };
  const [, sign = '', digits = '', unit = ''] = m;
  if (unit === '') return { error: `\`${text}\` has no unit: ${DURATION_FIX}` };
  if (!['d', 'w', 'm', 'y'].includes(unit)) {
    return { error: `\`${text}\` has the unknown unit \`${unit}\`: use d, w, m or y (e.g. 365d, 12w, 6m, 2y)` };
  }
  if (sign === '-') return { error: `\`${text}\` is negative: a maximum age must be at least 1${unit}` };
  if (/[.,]/.test(digits)) {
    return { error: `\`${text}\` is not a whole number: use a smaller unit instead (e.g. 18m rather than 1.5y)` };
  }
  const count = Number(digits);
  if (count === 0) {
    return { error: `\`${text}\` is zero, which would destroy data the moment its period ends: give at least 1${unit}, or \`forever\` to keep it` };
  }
  if (!Number.isSafeInteger(count) || count > 100_000) {
    return { error: `\`${text}\` is too large: use \`forever\` to keep data indefinitely` };
  }
  return { count, unit: unit as 'd' | 'w' | 'm' | 'y' };
}

/** The duration as the config writes it: `365d`, `6m`, `forever`. */
export function formatDuration(d: Duration): string {
  return d.unit === 'forever' ? 'forever' : `${d.count}${d.unit}`;
}

/**
 * `date` plus `d` in UTC calendar arithmetic: days and weeks are exact 24 h days; months
 * and years move the calendar and clamp to the month's last day (Jan 31 + 1m = Feb 28 or
 * 29). Returns null for `forever` (never reached).
 */
export function addDuration(date: Date, d: Duration): Date | null {
  switch (d.unit) {
    case 'forever':
      return null;
    case 'd':
      return new Date(date.getTime() + d.count * DAY_MS);
    case 'w':
      return new Date(date.getTime() + d.count * 7 * DAY_MS);
    case 'm':
      return addMonths(date, d.count);
    case 'y':
      return addMonths(date, d.count * 12);
  }
}

const DAY_MS = 86_400_000;

function addMonths(date: Date, months: number): Date {
  const total = date.getUTCFullYear() * 12 + date.getUTCMonth() + months;
  const year = Math.floor(total / 12);
  const month = total - year * 12;
  const lastDay = new Date(Date.UTC(year, month + 1, 0)).getUTCDate();
  const day = Math.min(date.getUTCDate(), lastDay);
  return new Date(
    Date.UTC(year, month, day, date.getUTCHours(), date.getUTCMinutes(), date.getUTCSeconds(), date.getUTCMilliseconds()),
  );
}

/**
 * The maximum age of `dataClass` for `tenant`: the tenant's override when it has one, else
 * the class rule. A class unknown to lethe is kept forever (fail closed: never shred on a
 * rule nobody wrote).
 */
export function maxAgeFor(rules: RetentionRules, tenant: string | null, dataClass: string): Duration {
  if (!isDataClass(dataClass)) return FOREVER;
  const override = tenant === null ? undefined : rules.tenants[tenant]?.[dataClass];
  return override ?? rules.classes[dataClass];
}

export function isDataClass(value: string): value is DataClass {
  return (DATA_CLASSES as readonly string[]).includes(value);
}

/** Every class forever, every snapshot kept, a 7-day grace window: what an absent section means. */
export const DEFAULT_RETENTION: RetentionRules = {
  classes: Object.fromEntries(DATA_CLASSES.map((c) => [c, FOREVER])) as Record<DataClass, Duration>,
  tenants: {},
  snapshots: null,
  graceWindowDays: 7,
};

// --- the config section --------------------------------------------------------------

const KEEP_KEYS = ['keepLast', 'keepHourly', 'keepDaily', 'keepWeekly', 'keepMonthly', 'keepYearly'] as const;

const keepCount = z.unknown().transform((value, ctx) => {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0) {
    ctx.addIssue({
      code: 'custom',
      message: `${JSON.stringify(value)} is not a count: give a whole number of snapshots, 0 or more`,
    });
    return z.NEVER;
  }
  return value;
});

const SnapshotPolicySchema = z
  .strictObject(Object.fromEntries(KEEP_KEYS.map((k) => [k, keepCount.optional()])) as Record<
    (typeof KEEP_KEYS)[number],
    z.ZodOptional<typeof keepCount>
  >)
  .transform((raw, ctx): SnapshotPolicy => {
    const policy = Object.fromEntries(KEEP_KEYS.map((k) => [k, raw[k] ?? 0])) as unknown as SnapshotPolicy;
    if (KEEP_KEYS.every((k) => policy[k] === 0)) {
      ctx.addIssue({
        code: 'custom',
        message:
          'this policy keeps no snapshot: set at least one of keepLast, keepDaily, keepWeekly, keepMonthly (e.g. keepLast: 24), or remove `snapshots` to keep every snapshot',
      });
      return z.NEVER;
    }
    return policy;
  });

/**
 * A map of data class → duration, refusing unknown classes and bad durations by path.
 * System rows have no tenant and no period key (only the `system` key), so a maximum age
 * for them could never be enforced: refused rather than silently ignored.
 */
const classDurations = (perTenant: boolean) => z.record(z.string(), z.unknown()).transform((raw, ctx) => {
  const out: Partial<Record<DataClass, Duration>> = {};
  for (const [name, value] of Object.entries(raw)) {
    if (!isDataClass(name)) {
      ctx.addIssue({
        code: 'custom',
        path: [name],
        message: `unknown data class \`${name}\`: use one of ${DATA_CLASSES.join(', ')}`,
      });
      continue;
    }
    const parsed = parseDuration(value);
    if ('error' in parsed) {
      ctx.addIssue({ code: 'custom', path: [name], message: parsed.error });
      continue;
    }
    if (name === 'system' && (perTenant || parsed.unit !== 'forever')) {
      ctx.addIssue({
        code: 'custom',
        path: [name],
        message: perTenant
          ? 'system rows belong to no tenant: remove this override'
          : 'system rows have no period key and cannot expire: use `forever` or remove the line',
      });
      continue;
    }
    out[name] = parsed;
  }
  return out;
});

/** The `retention:` config section; its output is the parsed {@link RetentionRules}. */
export const RetentionSchema = z
  .strictObject({
    classes: classDurations(false).optional(),
    tenants: z.record(z.string().min(1, 'a tenant id must not be empty'), classDurations(true)).optional(),
    snapshots: SnapshotPolicySchema.optional(),
    graceWindowDays: z
      .unknown()
      .transform((value, ctx) => {
        if (typeof value !== 'number' || !Number.isInteger(value) || value < 1 || value > 3650) {
          ctx.addIssue({
            code: 'custom',
            message: `${JSON.stringify(value)} is not allowed: give a whole number of days from 1 to 3650 (default 7); a vault backup must outlive at least one apply`,
          });
          return z.NEVER;
        }
        return value;
      })
      .optional(),
  })
  .transform(
    (raw): RetentionRules => ({
      classes: { ...DEFAULT_RETENTION.classes, ...raw.classes },
      tenants: raw.tenants ?? {},
      snapshots: raw.snapshots ?? null,
      graceWindowDays: raw.graceWindowDays ?? DEFAULT_RETENTION.graceWindowDays,
    }),
  );
