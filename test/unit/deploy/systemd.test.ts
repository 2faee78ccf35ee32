import { execFile } from 'node:child_process';
import { chmod, copyFile, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { letheNodeFlags } from '../../../bench/lethe-phase.ts';
import { DaemonSchema } from '../../../src/config/schema.ts';
import {
  age,
  checkLetheArgs,
  expandCommandLine,
  names,
  parseUnit,
  ROOT,
  sh,
  splitCommandLine,
  standInNode,
  unitValue,
  type Unit,
} from './support.ts';

const run = promisify(execFile);

/**
 * Every unit in jobs/systemd, read with a parser of systemd's unit syntax and checked
 * against the CLI it starts (commands, options, the heap flags of bin/lethe.js), the
 * hardening each needs (a user of its own, ProtectSystem=strict with the paths it writes),
 * failure reporting, the daemon's stop deadline, and the keys export after every backup.
 * The shell lines of the units are run, as systemd would expand them, with stand-ins for
 * node and journalctl; systemd-analyze verifies every unit as systemd itself would load it.
 */

const DIR = new URL('jobs/systemd/', ROOT);
/** Filesystem storage in the example config (config/lethe.example.yaml, `storage.path`). */
const STORAGE_PATH = '/srv/lethe-backups';
const LETHE = '/opt/lethe/bin/lethe.js';

describe('jobs/systemd', () => {
  const units = new Map<string, Unit>();
  let scratch: string;
  let bin: string;

  beforeAll(async () => {
    for (const file of (await readdir(DIR)).sort()) {
      units.set(file, parseUnit(await readFile(new URL(file, DIR), 'utf8'), file));
    }
    scratch = await mkdtemp(join(tmpdir(), 'lethe-systemd-'));
    bin = await standInNode();
  });
  afterAll(async () => {
    await rm(scratch, { recursive: true, force: true });
    await rm(bin, { recursive: true, force: true });
  });

  const services = (): [string, Unit][] => [...units].filter(([f]) => f.endsWith('.service'));
  /** The lethe invocations of a unit's ExecStart= lines: node flags and the words after lethe.js. */
  const invocations = (unit: Unit): { node: string; flags: string[]; args: string[] }[] =>
    (unit.get('Service')?.get('ExecStart') ?? []).flatMap((line) => {
      const words = splitCommandLine(expandCommandLine(line, { instance: 'x.service', unit: 'x.service' }));
      // `/bin/sh -c SCRIPT`: the lethe line is inside the script.
      const inner = words[0] === '/bin/sh' ? splitCommandLine((words[2] ?? '').split(';').find((s) => s.includes(LETHE)) ?? '') : words;
      const at = inner.indexOf(LETHE);
      return at < 0 ? [] : [{ node: inner[0] ?? '', flags: inner.slice(1, at), args: inner.slice(at + 1) }];
    });

  it('has the daemon, the three jobs with their timers, the keys export and the failure notifier', () => {
    expect([...units.keys()]).toEqual([
      'lethe-backup.service',
      'lethe-backup.timer',
      'lethe-daemon.service',
      'lethe-keys-export.service',
      'lethe-keys-export.timer',
      'lethe-lifecycle.service',
      'lethe-lifecycle.timer',
      'lethe-notify@.service',
      'lethe-verify.service',
      'lethe-verify.timer',
    ]);
  });

  it('starts bin/lethe.js with its heap flags, and only commands and options the CLI has', () => {
    const flags = letheNodeFlags();
    const commands = new Map<string, string>();
    for (const [file, unit] of services()) {
      for (const { node, flags: given, args } of invocations(unit)) {
        expect(node, file).toBe('/usr/bin/node');
        expect(given, file).toEqual(flags);
        commands.set(file, checkLetheArgs(args, file));
        expect(args.join(' '), file).toMatch(/--config \/etc\/lethe\/[a-z-]+\.yaml/);
      }
    }
    expect(Object.fromEntries(commands)).toEqual({
      'lethe-backup.service': 'backup',
      'lethe-daemon.service': 'daemon',
      'lethe-keys-export.service': 'keys export',
      'lethe-lifecycle.service': 'lifecycle apply',
      'lethe-verify.service': 'verify',
    });
  });

  it('runs every lethe unit as its own non-root user, hardened, with ProtectSystem=strict and no core dumps', () => {
    for (const [file, unit] of services()) {
      const user = unitValue(unit, 'Service', 'User');
      if (file === 'lethe-notify@.service') expect(unitValue(unit, 'Service', 'DynamicUser'), file).toBe('yes');
      else expect(user, file).toMatch(/^lethe(-[a-z]+)?$/);
      for (const [key, value] of [
        ['NoNewPrivileges', 'yes'],
        ['PrivateTmp', 'yes'],
        ['ProtectSystem', 'strict'],
        ['ProtectHome', 'yes'],
        // A core file would hold the keys and passwords in the process's memory.
        ['LimitCORE', '0'],
      ] as const) {
        expect(unitValue(unit, 'Service', key), `${file} ${key}`).toBe(value);
      }
      // V8 writes machine code at run time: MemoryDenyWriteExecute would kill node.
      expect(unitValue(unit, 'Service', 'MemoryDenyWriteExecute'), file).toBeUndefined();
    }
  });

  it('lets the units that write filesystem storage write it, and only those', () => {
    const writers = services()
      .filter(([, unit]) => (unit.get('Service')?.get('ReadWritePaths') ?? []).includes(`-${STORAGE_PATH}`))
      .map(([file]) => file);
    expect(writers).toEqual(['lethe-backup.service', 'lethe-daemon.service', 'lethe-lifecycle.service']);
  });

  it('the path the units open for filesystem storage is the example config’s', async () => {
    const text = await readFile(new URL('config/lethe.example.yaml', ROOT), 'utf8');
    expect(/^\s*#\s*path:\s*(\S+)/m.exec(text)?.[1]).toBe(STORAGE_PATH);
  });

  it('reports every failure through lethe-notify@', () => {
    for (const [file, unit] of services()) {
      if (file === 'lethe-notify@.service') continue;
      expect(unitValue(unit, 'Unit', 'OnFailure'), file).toBe('lethe-notify@%n.service');
    }
  });

  it('runs the daemon until it fails for good, and gives it longer to stop than it gives its job', () => {
    const unit = units.get('lethe-daemon.service');
    if (unit === undefined) throw new Error('no lethe-daemon.service');
    expect(['simple', 'notify']).toContain(unitValue(unit, 'Service', 'Type'));
    expect(unitValue(unit, 'Service', 'Restart')).toBe('on-failure');
    expect(unitValue(unit, 'Service', 'KillSignal')).toBe('SIGTERM');
    expect(unitValue(unit, 'Service', 'KillMode')).toBe('mixed');
    const stop = Number(/^(\d+)s?$/.exec(unitValue(unit, 'Service', 'TimeoutStopSec') ?? '')?.[1]);
    expect(stop).toBeGreaterThan(DaemonSchema.parse({}).shutdownSeconds);
    // Without a start limit a crash loop never enters "failed", and OnFailure= never runs.
    expect(Number(unitValue(unit, 'Unit', 'StartLimitBurst'))).toBeGreaterThan(0);
    expect(unitValue(unit, 'Install', 'WantedBy')).toBe('multi-user.target');
  });

  it('exports the keys after every successful backup, and on a timer for the daemon', () => {
    expect(unitValue(units.get('lethe-backup.service') ?? new Map(), 'Unit', 'OnSuccess')).toBe('lethe-keys-export.service');
    const timer = units.get('lethe-keys-export.timer');
    expect(unitValue(timer ?? new Map(), 'Timer', 'OnCalendar')).toBeDefined();
    // Every timer starts a service of its own name.
    for (const file of [...units.keys()].filter((f) => f.endsWith('.timer'))) {
      expect(units.has(file.replace(/\.timer$/, '.service')), file).toBe(true);
      expect(unitValue(units.get(file) ?? new Map(), 'Install', 'WantedBy'), file).toBe('timers.target');
    }
  });

  it('keeps only whole keys exports, and none older than the grace window', async () => {
    const unit = units.get('lethe-keys-export.service') ?? new Map();
    expect(unitValue(unit, 'Service', 'User')).toBe('lethe-verify');
    expect(unitValue(unit, 'Service', 'StateDirectory')).toBe('lethe/keys-exports');
    expect(unitValue(unit, 'Service', 'StateDirectoryMode')).toBe('0700');
    const grace = /^GRACE_DAYS=(\d+)$/.exec(unitValue(unit, 'Service', 'Environment') ?? '')?.[1] ?? '';
    expect(Number(grace)).toBe(7);
    const [shell, flag, script] = splitCommandLine(expandCommandLine(unitValue(unit, 'Service', 'ExecStart') ?? ''));
    expect([shell, flag]).toEqual(['/bin/sh', '-c']);
    const dir = join(scratch, 'keys-exports');
    await mkdir(dir);
    await writeFile(join(dir, 'keys-old.json'), '{}');
    await age(join(dir, 'keys-old.json'), Number(grace) + 1);
    await writeFile(join(dir, 'keys-recent.json'), '{}');
    await age(join(dir, 'keys-recent.json'), Number(grace) - 1);
    const env = { PATH: '/usr/bin:/bin', STATE_DIRECTORY: dir, GRACE_DAYS: grace };
    const local = (script ?? '').replaceAll('/usr/bin/node', join(bin, 'node'));

    const ok = await sh(local, env);
    expect(ok).toMatchObject({ code: 0, stderr: '' });
    const after = await names(dir);
    expect(after).toHaveLength(2);
    expect(after[0]).toMatch(/^keys-\d{8}T\d{6}Z\.json$/);
    expect(after[1]).toBe('keys-recent.json');

    await new Promise((r) => setTimeout(r, 1100));
    const failed = await sh(local, { ...env, KEYS_EXPORT_FAIL: '1' });
    expect(failed.code).not.toBe(0);
    expect((await names(dir)).filter((n) => n.endsWith('.json'))).toEqual(after);
  });

  it('lethe-notify@ logs the failed unit at priority err and runs the hook with its name', async () => {
    const unit = units.get('lethe-notify@.service') ?? new Map();
    const line = expandCommandLine(unitValue(unit, 'Service', 'ExecStart') ?? '', { instance: 'lethe-backup.service' });
    const words = splitCommandLine(line);
    expect(words.slice(0, 2)).toEqual(['/bin/sh', '-c']);
    const fake = join(scratch, 'notify-bin');
    await mkdir(fake);
    await writeFile(join(fake, 'journalctl'), '#!/bin/sh\necho "journal: $*"\n');
    await chmod(join(fake, 'journalctl'), 0o755);
    const hook = join(scratch, 'notify-hook');
    await writeFile(hook, `#!/bin/sh\necho "$@" > ${join(scratch, 'hook-called')}\n`);
    await chmod(hook, 0o755);
    const hookVariable = /^LETHE_NOTIFY_HOOK=(.+)$/.exec(unitValue(unit, 'Service', 'Environment') ?? '');
    expect(hookVariable?.[1]).toBe('/etc/lethe/notify');

    const { stdout, stderr } = await run(words[0] ?? '', words.slice(1), {
      env: { PATH: `${fake}:/usr/bin:/bin`, LETHE_NOTIFY_HOOK: hook },
    });
    expect(stderr).toBe('');
    const [first, second] = stdout.split('\n');
    expect(first).toBe('<3>lethe: lethe-backup.service failed; journalctl -u lethe-backup.service shows why');
    expect(second).toBe('journal: --unit=lethe-backup.service --lines=20 --no-pager --output=cat');
    expect(await readFile(join(scratch, 'hook-called'), 'utf8')).toBe('lethe-backup.service\n');

    // No hook installed: the failure is still logged, and the unit succeeds.
    const without = await run(words[0] ?? '', words.slice(1), { env: { PATH: `${fake}:/usr/bin:/bin`, LETHE_NOTIFY_HOOK: join(scratch, 'none') } });
    expect(without.stdout).toContain('<3>lethe: lethe-backup.service failed');
  });

  it('loads in systemd without a warning (systemd-analyze verify)', async () => {
    const dir = join(scratch, 'analyze');
    await mkdir(dir);
    for (const file of units.keys()) {
      // A template is verified as an instance of itself.
      await copyFile(new URL(file, DIR), join(dir, file.replace('@.service', '@lethe-backup.service.service')));
    }
    const files = (await readdir(dir)).map((f) => join(dir, f));
    const result = await run('systemd-analyze', ['verify', '--man=no', ...files]).then(
      ({ stderr }) => ({ code: 0, stderr }),
      (err: unknown) => {
        const e = err as { code?: unknown; stderr?: string };
        return { code: e.code, stderr: e.stderr ?? String(err) };
      },
    );
    expect(result).toEqual({ code: 0, stderr: '' });
  });
});
