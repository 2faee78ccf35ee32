import { execFile } from 'node:child_process';
import { chmod, mkdtemp, readdir, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { COMMANDS } from '../../../src/cli/commands.ts';
import { DaemonSchema } from '../../../src/config/schema.ts';
import { Observer } from '../../../src/daemon/observe.ts';
import { createLogger } from '../../../src/log/index.ts';
import type { Vault } from '../../../src/vault/index.ts';

const run = promisify(execFile);

/** The repository root as a file URL ending in a slash. */
export const ROOT = new URL('../../../', import.meta.url);

/** One `[Section]` of a systemd unit: each key with every value it was given, in order. */
export type UnitSection = ReadonlyMap<string, readonly string[]>;
export type Unit = ReadonlyMap<string, UnitSection>;

/**
 * A systemd unit file as systemd reads it (systemd.syntax(7)): `[Section]` headers,
 * `Key=value` lines, comments starting with `#` or `;`, a trailing backslash joining a line
 * to the next. A key may repeat (ExecStartPost=, ReadWritePaths=); every value is kept.
 * Throws on a line that is none of these, or a key outside any section.
 */
export function parseUnit(text: string, name: string): Unit {
  const sections = new Map<string, Map<string, string[]>>();
  let current: Map<string, string[]> | undefined;
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    let line = (lines[i] ?? '').trim();
    const first = i + 1;
    while (line.endsWith('\\') && i + 1 < lines.length) {
      line = `${line.slice(0, -1)} ${(lines[++i] ?? '').trim()}`;
    }
    if (line === '' || line.startsWith('#') || line.startsWith(';')) continue;
    const header = /^\[([A-Za-z]+)\]$/.exec(line);
    if (header !== null) {
      current = new Map();
      sections.set(header[1] ?? '', current);
      continue;
    }
    const pair = /^([A-Za-z][A-Za-z0-9]*)=(.*)$/.exec(line);
    if (pair === null) throw new Error(`${name}:${first}: neither a section, a comment nor Key=value: ${line}`);
    if (current === undefined) throw new Error(`${name}:${first}: ${pair[1] ?? ''}= before any [Section]`);
    const key = pair[1] ?? '';
    current.set(key, [...(current.get(key) ?? []), (pair[2] ?? '').trim()]);
  }
  return sections;
}

/** The last value of `key` in `section` (what systemd uses for single-valued keys). */
export function unitValue(unit: Unit, section: string, key: string): string | undefined {
  return unit.get(section)?.get(key)?.at(-1);
}

/**
 * What a command line of a unit becomes once systemd has expanded it: `$$` is a literal `$`,
 * `%%` a literal `%`, and `%i`/`%n` the instance and unit name given here.
 */
export function expandCommandLine(line: string, names: { instance?: string; unit?: string } = {}): string {
  return line.replace(/\$\$|%[%in]/g, (m) => {
    if (m === '$$') return '$';
    if (m === '%%') return '%';
    const value = m === '%i' ? names.instance : names.unit;
    if (value === undefined) throw new Error(`${m} used where no name was given`);
    return value;
  });
}

/**
 * Splits a systemd command line into words as systemd does for the forms our units use:
 * whitespace outside quotes separates words; single and double quotes group.
 */
export function splitCommandLine(line: string): string[] {
  const words: string[] = [];
  let word: string | undefined;
  let quote: string | undefined;
  for (const ch of line) {
    if (quote !== undefined) {
      if (ch === quote) quote = undefined;
      else word = (word ?? '') + ch;
    } else if (ch === "'" || ch === '"') {
      quote = ch;
      word ??= '';
    } else if (/\s/.test(ch)) {
      if (word !== undefined) words.push(word);
      word = undefined;
    } else {
      word = (word ?? '') + ch;
    }
  }
  if (quote !== undefined) throw new Error(`unterminated ${quote} in: ${line}`);
  if (word !== undefined) words.push(word);
  return words;
}

/** The options every command takes (src/cli/main.ts). */
const GLOBAL_OPTIONS = ['config', 'json', 'help'];

/**
 * Checks a lethe invocation (the words after `bin/lethe.js`) against the CLI's own command
 * table: the command exists and every `--option` is one it takes. Returns the command name.
 * Throws naming what does not exist.
 */
export function checkLetheArgs(args: readonly string[], where: string): string {
  const [first, second] = args;
  const two = `${first ?? ''} ${second ?? ''}`;
  const name = COMMANDS.has(two) ? two : (first ?? '');
  const command = COMMANDS.get(name);
  if (command === undefined) throw new Error(`${where}: \`lethe ${args.join(' ')}\`: no such command`);
  const known = new Set([...GLOBAL_OPTIONS, ...Object.keys(command.options)]);
  for (const arg of args) {
    const option = /^--([a-z-]+)/.exec(arg)?.[1];
    if (option !== undefined && !known.has(option)) {
      throw new Error(`${where}: \`lethe ${name}\` has no option --${option}`);
    }
  }
  return name;
}

/**
 * A directory with a stand-in `node` that acts like `lethe keys export --out FILE`: writes
 * FILE (as lethe does, refusing an existing one), or exits 1 when KEYS_EXPORT_FAIL is set.
 */
export async function standInNode(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'lethe-deploy-bin-'));
  const script = [
    '#!/bin/sh',
    'out=',
    'while [ $# -gt 0 ]; do if [ "$1" = --out ]; then out=$2; fi; shift; done',
    '[ -n "$out" ] || { echo "no --out" >&2; exit 2; }',
    '[ ! -e "$out" ] || { echo "exists: $out" >&2; exit 2; }',
    'echo \'{"format":"lethe.keys-export.v2"\' > "$out"',
    'if [ -n "${KEYS_EXPORT_FAIL:-}" ]; then exit 1; fi',
    'echo \'}\' >> "$out"',
    '',
  ].join('\n');
  await writeFile(join(dir, 'node'), script);
  await chmod(join(dir, 'node'), 0o755);
  return dir;
}

/** Sets a file's modification time `days` days back. */
export async function age(path: string, days: number): Promise<void> {
  const when = new Date(Date.now() - days * 86_400_000);
  await utimes(path, when, when);
}

/** Runs `script` with /bin/sh; resolves with its exit code and output, never rejects. */
export async function sh(script: string, env: NodeJS.ProcessEnv): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run('/bin/sh', ['-c', script], { env });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof e.code === 'number' ? e.code : -1, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
  }
}

/** The names in `dir`, sorted. */
export async function names(dir: string): Promise<string[]> {
  return (await readdir(dir)).sort();
}

/** The metrics the issue asks `lethe daemon` to export on /metrics (issue 10, item 2). */
export const REQUIRED_METRICS: readonly string[] = [
  'lethe_job_last_success_timestamp_seconds',
  'lethe_job_duration_seconds',
  'lethe_job_failures_total',
  'lethe_snapshot_bytes',
  'lethe_snapshot_cells',
  'lethe_rpo_seconds',
  'lethe_rto_seconds',
  'lethe_verify_ok',
  'lethe_holds_active',
  'lethe_erase_requests_pending',
  'lethe_keys',
  'lethe_audit_chain_ok',
  'lethe_rpo_objective_seconds',
];

/**
 * The metrics the daemon's own registry holds, with their types, read from a real
 * {@link Observer} (its constructor only registers them; the vault is read on a scrape,
 * which this never does).
 */
export function daemonMetrics(): Map<string, string> {
  const observer = new Observer({
    vault: undefined as unknown as Vault,
    config: DaemonSchema.parse({}),
    schedules: new Map(),
    erasePendingDays: 7,
    instance: 'test',
    version: '0',
    log: createLogger('silent'),
  });
  return new Map(observer.registry.getMetricsAsArray().map((m) => [m.name, String(m.type)]));
}

/** Whether `series` is stored by Prometheus for one of `metrics` (a histogram as _bucket, _sum, _count). */
export function isSeriesOf(series: string, metrics: ReadonlyMap<string, string>): boolean {
  if (metrics.has(series)) return true;
  const base = series.replace(/_(bucket|sum|count)$/, '');
  return metrics.get(base) === 'histogram';
}
