import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../../src/config/index.ts';
import { isLetheError } from '../../../src/errors/index.ts';
import {
  addDuration,
  DEFAULT_RETENTION,
  FOREVER,
  formatDuration,
  maxAgeFor,
  parseDuration,
  type Duration,
} from '../../../src/lifecycle/rules.ts';

const base = {
  chatStore: { database: { url: 'postgres://reader@db/chat', sslmode: 'verify-full' } },
  vault: { database: { url: 'postgres://lethe@db/vault', sslmode: 'verify-full' } },
  storage: { type: 'filesystem', path: './objects' },
  masterKey: { file: './master.key' },
};

function refused(retention: unknown): string {
  try {
    parseConfig({ ...base, retention }, '/etc/lethe', {});
  } catch (err) {
    if (isLetheError(err)) {
      expect(err.code).toBe('CONFIG_INVALID');
      return err.message;
    }
    throw err;
  }
  throw new Error('expected the retention rules to be refused');
}

describe('retention rules in the config', () => {
  it('defaults to keeping everything when the section is absent', () => {
    const config = parseConfig(base, '/etc/lethe', {});
    expect(config.retention).toEqual(DEFAULT_RETENTION);
    expect(config.retention.classes.messages).toEqual(FOREVER);
    expect(config.retention.snapshots).toBeNull();
    expect(config.retention.graceWindowDays).toBe(7);
  });

  it('parses the documented example', () => {
    const config = parseConfig(
      {
        ...base,
        retention: {
          classes: { messages: '365d', attachments: '90d', profiles: 'forever' },
          tenants: { '42': { messages: '2y' } },
          snapshots: { keepLast: 24, keepDaily: 7, keepWeekly: 4, keepMonthly: 12 },
          graceWindowDays: 3,
        },
      },
      '/etc/lethe',
      {},
    );
    const r = config.retention;
    expect(r.classes).toEqual({
      messages: { count: 365, unit: 'd' },
      attachments: { count: 90, unit: 'd' },
      profiles: FOREVER,
      metadata: FOREVER,
      system: FOREVER,
    });
    expect(r.tenants).toEqual({ '42': { messages: { count: 2, unit: 'y' } } });
    expect(r.snapshots).toEqual({ keepLast: 24, keepHourly: 0, keepDaily: 7, keepWeekly: 4, keepMonthly: 12, keepYearly: 0 });
    expect(r.graceWindowDays).toBe(3);
  });

  it.each([
    [{ classes: { messages: '0d' } }, 'retention.classes.messages', 'is zero'],
    [{ classes: { messages: '-5d' } }, 'retention.classes.messages', 'is negative'],
    [{ classes: { messages: '1.5y' } }, 'retention.classes.messages', 'use a smaller unit'],
    [{ classes: { messages: '1y6m' } }, 'retention.classes.messages', 'use one unit'],
    [{ classes: { messages: '12h' } }, 'retention.classes.messages', 'unknown unit `h`'],
    [{ classes: { messages: 365 } }, 'retention.classes.messages', 'has no unit'],
    [{ classes: { messages: 'soon' } }, 'retention.classes.messages', 'not a duration'],
    [{ classes: { emails: '30d' } }, 'retention.classes.emails', 'unknown data class `emails`: use one of messages'],
    [{ tenants: { '7': { emails: '30d' } } }, 'retention.tenants.7.emails', 'unknown data class'],
    [{ tenants: { '7': { messages: '0w' } } }, 'retention.tenants.7.messages', 'is zero'],
    [{ classes: { system: '30d' } }, 'retention.classes.system', 'cannot expire'],
    [{ tenants: { '7': { system: 'forever' } } }, 'retention.tenants.7.system', 'belong to no tenant'],
    [{ snapshots: { keepLast: 0, keepDaily: 0 } }, 'retention.snapshots', 'keeps no snapshot'],
    [{ snapshots: {} }, 'retention.snapshots', 'keeps no snapshot'],
    [{ snapshots: { keepLast: -1 } }, 'retention.snapshots.keepLast', 'whole number of snapshots'],
    [{ snapshots: { keepDaily: 2.5 } }, 'retention.snapshots.keepDaily', 'whole number of snapshots'],
    [{ snapshots: { keepSecondly: 2 } }, 'retention.snapshots', '`keepSecondly`'],
    [{ graceWindowDays: 0 }, 'retention.graceWindowDays', 'from 1 to 3650'],
    [{ graceWindowDays: 1.5 }, 'retention.graceWindowDays', 'from 1 to 3650'],
    [{ classes: { messages: '30d' }, forever: true }, 'retention', '`forever`'],
  ])('refuses %j naming %s', (retention, path, fix) => {
    const message = refused(retention);
    expect(message).toContain(`\`${path}\``);
    expect(message).toContain(fix);
  });

  it('lists every bad rule at once', () => {
    const message = refused({ classes: { messages: '0d', attachments: '1y6m' }, graceWindowDays: 0 });
    expect(message).toContain('retention.classes.messages');
    expect(message).toContain('retention.classes.attachments');
    expect(message).toContain('retention.graceWindowDays');
  });
});

describe('durations', () => {
  it('round-trips through formatDuration', () => {
    for (const text of ['1d', '365d', '12w', '6m', '10y', 'forever']) {
      const d = parseDuration(text);
      expect('error' in d).toBe(false);
      expect(formatDuration(d as Duration)).toBe(text);
    }
  });

  it('adds days, weeks, months and years in UTC calendar arithmetic', () => {
    const at = (iso: string): Date => new Date(iso);
    expect(addDuration(at('2025-02-01T00:00:00Z'), { count: 365, unit: 'd' })).toEqual(at('2026-02-01T00:00:00Z'));
    expect(addDuration(at('2024-02-01T00:00:00Z'), { count: 365, unit: 'd' })).toEqual(at('2025-01-31T00:00:00Z'));
    expect(addDuration(at('2026-03-01T00:00:00Z'), { count: 2, unit: 'w' })).toEqual(at('2026-03-15T00:00:00Z'));
    expect(addDuration(at('2026-01-31T12:00:00Z'), { count: 1, unit: 'm' })).toEqual(at('2026-02-28T12:00:00Z'));
    expect(addDuration(at('2024-01-31T00:00:00Z'), { count: 1, unit: 'm' })).toEqual(at('2024-02-29T00:00:00Z'));
    expect(addDuration(at('2026-11-01T00:00:00Z'), { count: 3, unit: 'm' })).toEqual(at('2027-02-01T00:00:00Z'));
    expect(addDuration(at('2024-02-29T00:00:00Z'), { count: 1, unit: 'y' })).toEqual(at('2025-02-28T00:00:00Z'));
    expect(addDuration(at('2026-01-01T00:00:00Z'), FOREVER)).toBeNull();
  });

  it('never moves backwards and months are monotonic (property)', () => {
    let t = Date.UTC(2020, 0, 1);
    for (let i = 0; i < 800; i++) {
      const d = new Date(t);
      const a = addDuration(d, { count: 1, unit: 'm' })?.getTime() ?? NaN;
      const b = addDuration(d, { count: 2, unit: 'm' })?.getTime() ?? NaN;
      expect(a).toBeGreaterThan(d.getTime());
      expect(b).toBeGreaterThan(a);
      t += 86_400_000 * 1.37;
    }
  });
});

describe('maxAgeFor', () => {
  const rules = {
    ...DEFAULT_RETENTION,
    classes: { ...DEFAULT_RETENTION.classes, messages: { count: 365, unit: 'd' } as const },
    tenants: { '42': { messages: { count: 730, unit: 'd' } as const } },
  };
  it('uses the tenant override, then the class rule, and keeps unknown classes forever', () => {
    expect(maxAgeFor(rules, '42', 'messages')).toEqual({ count: 730, unit: 'd' });
    expect(maxAgeFor(rules, '7', 'messages')).toEqual({ count: 365, unit: 'd' });
    expect(maxAgeFor(rules, '42', 'attachments')).toEqual(FOREVER);
    expect(maxAgeFor(rules, '7', 'emails')).toEqual(FOREVER);
  });
});

describe('config/lethe.example.yaml', () => {
  it('has a retention section that parses to the documented rules', async () => {
    const { readFile } = await import('node:fs/promises');
    const { parse } = await import('yaml');
    const raw = parse(await readFile(new URL('../../../config/lethe.example.yaml', import.meta.url), 'utf8')) as Record<string, unknown>;
    const env = {
      CHAT_STORE_PASSWORD: 'x',
      VAULT_PASSWORD: 'x',
      LETHE_S3_ACCESS_KEY_ID: 'x',
      LETHE_S3_SECRET_ACCESS_KEY: 'x',
      CHAT_FILES_ACCESS_KEY_ID: 'x',
      CHAT_FILES_SECRET_ACCESS_KEY: 'x',
    };
    const config = parseConfig(raw, '/etc/lethe', env);
    expect(formatDuration(config.retention.classes.messages)).toBe('365d');
    expect(formatDuration(config.retention.classes.attachments)).toBe('90d');
    expect(formatDuration(maxAgeFor(config.retention, '42', 'messages'))).toBe('730d');
    expect(config.retention.snapshots?.keepLast).toBe(24);
    expect(config.retention.graceWindowDays).toBe(7);
  });
});
