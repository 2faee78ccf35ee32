import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../../src/config/index.ts';
import { Schedule } from '../../../src/daemon/schedule.ts';

const at = (iso: string): Date => new Date(iso);

describe('daemon schedules', () => {
  it('reads five fields, or six with leading seconds, in the given time zone', () => {
    const daily = Schedule.parse('30 2 * * *', 'Europe/Berlin');
    expect(daily.next(at('2026-07-01T00:00:00Z'))?.toISOString()).toBe('2026-07-01T00:30:00.000Z'); // 02:30 CEST
    const everyFive = Schedule.parse('*/5 * * * * *', 'UTC');
    expect(everyFive.next(at('2026-07-01T00:00:03Z'))?.toISOString()).toBe('2026-07-01T00:00:05.000Z');
  });

  it('refuses a wrong field count, a bad field and an unknown time zone, saying what is wrong', () => {
    expect(() => Schedule.parse('* * * *', 'UTC')).toThrow(/5 fields .* or 6 with leading seconds; got 4/);
    expect(() => Schedule.parse('0 0 0 * * * 2027', 'UTC')).toThrow(/got 7/);
    expect(() => Schedule.parse('61 * * * *', 'UTC')).toThrow(/not a valid cron expression/);
    expect(() => Schedule.parse('* * * * *', 'Mars/Olympus')).toThrow(/unknown time zone "Mars\/Olympus"/);
  });

  it('finds the newest slot at or before a time, whether slots are a second or a year apart', () => {
    expect(Schedule.parse('* * * * * *', 'UTC').latestAtOrBefore(at('2026-07-01T10:00:00.500Z'), at('2026-01-01T00:00:00Z'))?.toISOString()).toBe(
      '2026-07-01T10:00:00.000Z',
    );
    expect(Schedule.parse('0 0 1 1 *', 'UTC').latestAtOrBefore(at('2026-07-01T10:00:00Z'), at('2020-01-01T00:00:00Z'))?.toISOString()).toBe(
      '2026-01-01T00:00:00.000Z',
    );
    // Nothing after the floor: null, not a slot before it.
    expect(Schedule.parse('0 0 1 1 *', 'UTC').latestAtOrBefore(at('2026-07-01T10:00:00Z'), at('2026-02-01T00:00:00Z'))).toBeNull();
  });

  it('lists the slots missed in a range, oldest first and the newest last, bounded after a long downtime', () => {
    const everyTen = Schedule.parse('*/10 * * * * *', 'UTC');
    const { slots, more } = everyTen.slotsBetween(at('2026-07-01T00:00:00Z'), at('2026-07-01T00:00:35Z'));
    expect(slots.map((d) => d.toISOString().slice(17, 19))).toEqual(['10', '20', '30']);
    expect(more).toBe(false);
    const week = Schedule.parse('* * * * * *', 'UTC').slotsBetween(at('2026-07-01T00:00:00Z'), at('2026-07-08T00:00:00Z'), 100);
    expect(week.slots).toHaveLength(101);
    expect(week.slots.at(-1)?.toISOString()).toBe('2026-07-08T00:00:00.000Z');
    expect(week.more).toBe(true);
  });

  it('is validated with the rest of the config', () => {
    const base = {
      chatStore: { database: { url: 'postgres://u@127.0.0.1/chat' } },
      vault: { database: { url: 'postgres://u@127.0.0.1/vault' } },
      storage: { type: 'filesystem', path: '/tmp/x' },
      masterKey: { file: '/tmp/k' },
    };
    const ok = parseConfig({ ...base, daemon: { schedules: { backup: '0 */6 * * *', verifyOlder: '0 3 * * 0' } } }, '/tmp');
    expect(ok.daemon).toMatchObject({ listen: '127.0.0.1:9187', timezone: 'UTC', leaseSeconds: 60, shutdownSeconds: 300 });
    expect(() => parseConfig({ ...base, daemon: { schedules: { backup: 'every day' } } }, '/tmp')).toThrow(/daemon\.schedules\.backup/);
    expect(() => parseConfig({ ...base, daemon: { schedules: { backups: '* * * * *' } } }, '/tmp')).toThrow(/backups/);
    expect(() => parseConfig({ ...base, daemon: { timezone: 'Nowhere/Land' } }, '/tmp')).toThrow(/unknown time zone/);
    expect(() => parseConfig({ ...base, daemon: { listen: '0.0.0.0:9187' } }, '/tmp')).toThrow(/daemon\.token/);
    expect(parseConfig({ ...base, daemon: { listen: '0.0.0.0:9187', allowInsecure: true } }, '/tmp').daemon?.listen).toBe('0.0.0.0:9187');
    expect(() => parseConfig({ ...base, daemon: { listen: 'localhost' } }, '/tmp')).toThrow(/HOST:PORT/);
    // A token file, like every file the config names, is relative to the config's directory.
    expect(parseConfig({ ...base, daemon: { token: { file: 'daemon.token' } } }, '/etc/lethe').daemon?.token).toEqual({ file: '/etc/lethe/daemon.token' });
  });
});
