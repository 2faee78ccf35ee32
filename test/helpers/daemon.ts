import type { ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { afterAll, beforeAll } from 'vitest';
import { initialize } from '../../src/jobs/tasks.ts';
import { createChatTemplate, createLetheEnv, type LetheEnv, type TestDatabase } from './lethe-env.ts';

/**
 * A `lethe daemon --json` child process: its JSON-line events as they come, the URL it
 * serves, and a stop that sends a signal and waits for the exit.
 */
export interface DaemonChild {
  readonly child: ChildProcess;
  /** Every JSON event printed so far. */
  readonly events: Record<string, unknown>[];
  /** `http://127.0.0.1:PORT/` once listening. */
  readonly url: Promise<string>;
  readonly owner: Promise<string>;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  stderr(): string;
  /** Sends `signal` and resolves with the exit and how long it took. */
  stop(signal?: NodeJS.Signals): Promise<{ code: number | null; signal: NodeJS.Signals | null; ms: number }>;
}

export function startDaemon(env: LetheEnv, configPath: string, extraEnv: Record<string, string> = {}): DaemonChild {
  const child = env.spawnCli(['daemon', '--config', configPath, '--json'], { env: extraEnv });
  const events: Record<string, unknown>[] = [];
  let stderr = '';
  let pending = '';
  let resolveListening: (e: Record<string, unknown>) => void = () => undefined;
  const listening = new Promise<Record<string, unknown>>((resolve) => (resolveListening = resolve));
  child.stderr?.setEncoding('utf8').on('data', (t: string) => (stderr += t));
  child.stdout?.setEncoding('utf8').on('data', (t: string) => {
    pending += t;
    const lines = pending.split('\n');
    pending = lines.pop() ?? '';
    for (const line of lines) {
      if (line.trim() === '') continue;
      const event = JSON.parse(line) as Record<string, unknown>;
      events.push(event);
      if (event['event'] === 'listening') resolveListening(event);
    }
  });
  const exited = once(child, 'exit').then(([code, signal]) => ({ code: code as number | null, signal: signal as NodeJS.Signals | null }));
  const failedToStart = exited.then((e) => {
    throw new Error(`the daemon exited (${String(e.code ?? e.signal)}) before listening:\n${stderr}`);
  });
  const url = Promise.race([listening.then((e) => String(e['url'])), failedToStart]);
  const owner = Promise.race([listening.then((e) => String(e['owner'])), failedToStart]);
  url.catch(() => undefined);
  owner.catch(() => undefined);
  return {
    child,
    events,
    url,
    owner,
    exited,
    stderr: () => stderr,
    async stop(signal: NodeJS.Signals = 'SIGTERM') {
      const started = Date.now();
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      const result = await exited;
      return { ...result, ms: Date.now() - started };
    },
  };
}

/** Polls `check` every 200 ms until it returns a value other than undefined, or throws after `timeoutMs`. */
export async function waitFor<T>(what: string, check: () => Promise<T | undefined>, timeoutMs = 60_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** One sample of Prometheus text: name, labels, value. */
export interface Sample {
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly value: number;
}

/**
 * Parses the Prometheus text exposition format strictly: every line is a `# HELP`, a
 * `# TYPE` (before its samples, once per family), or a sample whose name belongs to the
 * family declared last; label values with their escapes; values as floats, +Inf, -Inf, NaN.
 * Throws on anything else, naming the line.
 */
export function parsePrometheusText(text: string): { samples: Sample[]; types: Map<string, string> } {
  const types = new Map<string, string>();
  const samples: Sample[] = [];
  let family: string | undefined;
  const lines = text.split('\n');
  if (lines.at(-1) !== '') throw new Error('the exposition must end with a newline');
  for (const [i, line] of lines.entries()) {
    if (line === '') continue;
    const where = `line ${i + 1}: ${JSON.stringify(line)}`;
    const meta = /^# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*) (.*)$/.exec(line);
    if (meta !== null) {
      const [, kind, name, rest] = meta as unknown as [string, string, string, string];
      if (kind === 'TYPE') {
        if (!['counter', 'gauge', 'histogram', 'summary', 'untyped'].includes(rest)) throw new Error(`${where}: unknown type`);
        if (types.has(name)) throw new Error(`${where}: second TYPE for ${name}`);
        types.set(name, rest);
      }
      family = name;
      continue;
    }
    if (line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)( -?\d+)?$/.exec(line);
    if (m === null) throw new Error(`${where}: not a sample`);
    const [, name, , labelText, valueText] = m as unknown as [string, string, string | undefined, string | undefined, string];
    const base = family ?? '';
    const type = types.get(base);
    const allowed = type === 'histogram' ? [`${base}_bucket`, `${base}_sum`, `${base}_count`] : type === 'counter' ? [base, `${base}_total`] : [base];
    if (!allowed.includes(name)) throw new Error(`${where}: sample of ${name} outside its family (${base})`);
    const labels: Record<string, string> = {};
    if (labelText !== undefined && labelText !== '') {
      const re = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"(,|$)/gy;
      let at = 0;
      while (at < labelText.length) {
        re.lastIndex = at;
        const lm = re.exec(labelText);
        if (lm === null) throw new Error(`${where}: bad labels`);
        labels[lm[1] as string] = (lm[2] as string).replace(/\\(["\\n])/g, (_, c: string) => (c === 'n' ? '\n' : c));
        at = re.lastIndex;
      }
    }
    const value = valueText === '+Inf' ? Infinity : valueText === '-Inf' ? -Infinity : valueText === 'NaN' ? NaN : Number(valueText);
    if (Number.isNaN(value) && valueText !== 'NaN') throw new Error(`${where}: bad value`);
    samples.push({ name, labels, value });
  }
  return { samples, types };
}

/** The value of the one sample of `name` whose labels include `labels`; throws when not exactly one. */
export function sampleValue(samples: readonly Sample[], name: string, labels: Record<string, string> = {}): number {
  const found = samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
  if (found.length !== 1) throw new Error(`${found.length} samples of ${name}${JSON.stringify(labels)}`);
  return (found[0] as Sample).value;
}

/**
 * Registers, in the calling `describe`, a deployment initialised for the daemon tests (a
 * chat store cloned from a fresh template, an empty vault after `lethe init`), dropped
 * afterwards. Read `.env` inside tests and hooks.
 */
export function initialisedDeployment(prefix: string): { readonly env: LetheEnv } {
  let template: TestDatabase | undefined;
  let env: LetheEnv | undefined;
  beforeAll(async () => {
    template = await createChatTemplate(`${prefix}_tpl`);
    env = await createLetheEnv({ template: template.name });
    await initialize(env.rt, 'test');
  }, 180_000);
  afterAll(async () => {
    await env?.cleanup();
    await template?.drop();
  });
  return {
    get env(): LetheEnv {
      if (env === undefined) throw new Error('the deployment is set up in beforeAll');
      return env;
    },
  };
}
