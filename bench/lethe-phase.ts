import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { spawnMeasured, type ProcessStats } from './measured-process.ts';
import { REPO_ROOT } from './repo-root.ts';

/**
 * Runs one lethe command (`backup`, `verify`) as a child process, exactly as an operator
 * would, so that its peak RSS is lethe's alone and not the benchmark's (which holds the
 * data generator).
 */

const LETHE_BIN = join(REPO_ROOT, 'bin', 'lethe.js');

/**
 * The node flags bin/lethe.js's first line gives itself (`#!/usr/bin/env -S node FLAGS`):
 * the child is spawned as `node FLAGS bin/lethe.js`, which is what running `lethe` does.
 */
export function letheNodeFlags(): string[] {
  const first = readFileSync(LETHE_BIN, 'utf8').split('\n', 1)[0] ?? '';
  const match = /^#!\/usr\/bin\/env(?: -S)? node(?<flags>(?: --?[\w-]+(?:=\S+)?)*)\s*$/.exec(first);
  if (match === null) throw new Error(`bin/lethe.js does not start with a node shebang: ${first}`);
  return (match.groups?.flags ?? '').split(' ').filter((f) => f !== '');
}
/** See SpawnMeasuredOptions.stallMs: a minute blocked with no CPU is a deadlock, not work. */
const STALL_MS = 60_000;

/** The fields of `lethe backup --json` the benchmark reads. */
export const BackupOutput = z.object({
  snapshotId: z.string(),
  cells: z.number(),
  cellsReused: z.number(),
  cellsWritten: z.number(),
  rows: z.number(),
  bytesPlain: z.number(),
  bytesStored: z.number(),
  durationMs: z.number(),
});
export type BackupOutput = z.infer<typeof BackupOutput>;

/** The fields of `lethe verify --json` the benchmark reads. */
export const VerifyOutput = z.object({
  snapshotId: z.string(),
  ok: z.boolean(),
  cells: z.number(),
  cellsVerified: z.number(),
  cellsFailed: z.number(),
  rows: z.number(),
  findings: z.array(z.object({ code: z.string(), subject: z.string(), problem: z.string() })),
  durationMs: z.number(),
});
export type VerifyOutput = z.infer<typeof VerifyOutput>;

export interface PhaseOptions {
  readonly configFile: string;
  /** Variables the config file refers to as `${NAME}` (the server password). */
  readonly env: Readonly<Record<string, string>>;
  readonly scratchDir: string;
  readonly useGnuTime: boolean;
  /** When set, the child writes V8 CPU profiles here (and runs slower). */
  readonly cpuProfileDir?: string;
  /** Node flags of the child; default bin/lethe.js's own ({@link letheNodeFlags}). */
  readonly nodeFlags?: readonly string[];
  readonly signal?: AbortSignal;
}

export interface PhaseResult<T> {
  readonly stats: ProcessStats;
  readonly output: T;
}

/** The last line of stdout that parses as JSON; lethe prints one result or error line. */
function lastJsonLine(stdout: string): unknown {
  const lines = stdout.split('\n').filter((l) => l.trim() !== '');
  for (const line of lines.reverse()) {
    try {
      return JSON.parse(line) as unknown;
    } catch {
      // not the result line
    }
  }
  return undefined;
}

/**
 * Runs `lethe <args> --config FILE --json`, measured. Resolves with the parsed result when
 * the exit code is 0, or one of `acceptCodes` (verify exits 3 with a result when it finds
 * problems). Throws with lethe's error message and stderr otherwise.
 */
export async function runLethe<S extends z.ZodType>(
  args: readonly string[],
  schema: S,
  options: PhaseOptions,
  acceptCodes: readonly number[] = [],
): Promise<PhaseResult<z.infer<S>>> {
  const nodeFlags = [
    ...(options.nodeFlags ?? letheNodeFlags()),
    ...(options.cpuProfileDir === undefined
      ? []
      : ['--cpu-prof', `--cpu-prof-dir=${options.cpuProfileDir}`]),
  ];
  const measured = spawnMeasured(
    process.execPath,
    [...nodeFlags, LETHE_BIN, ...args, '--config', options.configFile, '--json'],
    {
      env: { ...process.env, ...options.env },
      stdio: ['ignore', 'pipe', 'pipe'],
      reportFile: join(options.scratchDir, `time-lethe-${args[0] ?? 'run'}.txt`),
      useGnuTime: options.useGnuTime,
      stallMs: STALL_MS,
      ...(options.signal === undefined ? {} : { signal: options.signal }),
    },
  );
  let stdout = '';
  measured.child.stdout?.setEncoding('utf8');
  measured.child.stdout?.on('data', (chunk: string) => {
    stdout += chunk;
  });
  const stats = await measured.done;
  const json = lastJsonLine(stdout);
  const what = `lethe ${args.join(' ')}`;
  if (stats.stalled) {
    throw new Error(
      `${what} stalled: its main thread sat blocked in a futex, using no CPU, for ${STALL_MS / 1000} s, and was killed. ` +
        'That is a deadlock (a native one: JavaScript cannot block there); attach `gdb -p PID` to such a process for its stack',
    );
  }
  if (stats.exitCode !== 0 && !(stats.exitCode !== null && acceptCodes.includes(stats.exitCode))) {
    const error = (json as { error?: { message?: string } } | undefined)?.error?.message;
    throw new Error(
      `${what} failed (exit ${String(stats.exitCode)}): ${error ?? 'no result'}\n${stats.stderr.trim()}`,
    );
  }
  const parsed = schema.safeParse(json);
  if (!parsed.success) {
    throw new Error(
      `${what} printed an unexpected result: ${parsed.error.message}\n${stdout.slice(0, 2000)}`,
    );
  }
  return { stats, output: parsed.data };
}
