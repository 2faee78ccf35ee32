import { spawn, type ChildProcess, type StdioNull, type StdioPipe } from 'node:child_process';
import { once } from 'node:events';
import { readFile } from 'node:fs/promises';
import type { Readable } from 'node:stream';

/**
 * Runs a program as a child and reports its wall time and peak resident set size.
 *
 * The peak comes from GNU time (`/usr/bin/time -v -o FILE`, which reads the kernel's
 * rusage of the exited child) when it is installed, else from sampling VmHWM in
 * /proc/<pid>/status; VmHWM is the kernel's own high-water mark, so a sample only misses
 * growth in the last interval before exit.
 */

const GNU_TIME = '/usr/bin/time';
const SAMPLE_MS = 20;
const STDERR_KEEP = 64 * 1024;
/** After SIGINT, how long a child may take to drain before it is killed. */
const KILL_AFTER_MS = 10_000;
const STALL_CHECK_MS = 5_000;

export interface ProcessStats {
  /** The program's exit code; null when it died of a signal. */
  readonly exitCode: number | null;
  readonly wallMs: number;
  /** Peak RSS in bytes; null when neither GNU time nor /proc could tell. */
  readonly peakRssBytes: number | null;
  /** The end of what the program wrote to stderr, when stderr was piped. */
  readonly stderr: string;
  /** True when the stall watchdog killed the program (see {@link SpawnMeasuredOptions.stallMs}). */
  readonly stalled: boolean;
}

export interface MeasuredProcess {
  /** The spawned process: GNU time, or the program itself when GNU time is missing. */
  readonly child: ChildProcess;
  /** Settles once the process has exited and its stdio has closed; never rejects. */
  readonly done: Promise<ProcessStats>;
}

export interface SpawnMeasuredOptions {
  readonly env: NodeJS.ProcessEnv;
  /** stdin, stdout, stderr: a stream with a descriptor (another child's stdout), a file descriptor, 'pipe' or 'ignore'. */
  readonly stdio: readonly [
    Readable | number | StdioPipe | StdioNull,
    number | StdioPipe | StdioNull,
    StdioPipe | StdioNull,
  ];
  /** Where GNU time writes its report (a file in the benchmark's private directory). */
  readonly reportFile: string;
  /** From {@link gnuTimeAvailable}. */
  readonly useGnuTime: boolean;
  /** Aborting sends SIGINT to the child's process group, then SIGKILL if it lingers. */
  readonly signal?: AbortSignal;
  /**
   * Kill the program when its main thread has sat in a futex wait, using no CPU, for this
   * long. An idle Node.js main thread waits in epoll, never in a futex, so this catches a
   * deadlocked process (one hung a benchmark for good) without tripping on a long query.
   */
  readonly stallMs?: number;
}

let gnuTime: Promise<boolean> | undefined;

/** True when /usr/bin/time is GNU time with `-v` and `-o` (BusyBox's is not). Cached. */
export function gnuTimeAvailable(): Promise<boolean> {
  gnuTime ??= (async () => {
    try {
      const probe = spawn(GNU_TIME, ['-v', '-o', '/dev/null', 'true'], { stdio: 'ignore' });
      const [code] = (await once(probe, 'close')) as [number | null];
      return code === 0;
    } catch {
      return false;
    }
  })();
  return gnuTime;
}

function parseGnuTimeReport(text: string): number | null {
  const match = /Maximum resident set size \(kbytes\): (\d+)/.exec(text);
  return match?.[1] === undefined ? null : Number(match[1]) * 1024;
}

async function readVmHwm(pid: number): Promise<number | null> {
  try {
    const status = await readFile(`/proc/${pid}/status`, 'utf8');
    const match = /^VmHWM:\s+(\d+) kB$/m.exec(status);
    return match?.[1] === undefined ? null : Number(match[1]) * 1024;
  } catch {
    return null; // already gone, or no /proc
  }
}

/** The program's pid: GNU time's only child, or the child itself. */
async function programPid(child: ChildProcess, underGnuTime: boolean): Promise<number | undefined> {
  if (child.pid === undefined || !underGnuTime) return child.pid;
  const children = await readFile(`/proc/${child.pid}/task/${child.pid}/children`, 'utf8').catch(
    () => '',
  );
  const first = Number(children.trim().split(' ')[0]);
  return Number.isInteger(first) && first > 0 ? first : undefined;
}

/** CPU ticks of a process's main thread and what it is blocked in; null when it is gone. */
async function mainThreadState(pid: number): Promise<{ ticks: number; wchan: string } | null> {
  try {
    const stat = await readFile(`/proc/${pid}/task/${pid}/stat`, 'utf8');
    // Fields after the parenthesised command name: state is field 3, utime 14, stime 15.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const wchan = await readFile(`/proc/${pid}/task/${pid}/wchan`, 'utf8');
    return { ticks: Number(fields[11]) + Number(fields[12]), wchan };
  } catch {
    return null;
  }
}

/**
 * Starts `file args` and measures it. The child runs in its own process group (so that an
 * abort can stop GNU time and the program under it together) and never through a shell.
 * `done` resolves with the exit code; callers decide what a non-zero code means.
 */
export function spawnMeasured(
  file: string,
  args: readonly string[],
  options: SpawnMeasuredOptions,
): MeasuredProcess {
  const [command, argv] = options.useGnuTime
    ? [GNU_TIME, ['-v', '-o', options.reportFile, file, ...args]]
    : [file, [...args]];
  const started = performance.now();
  const child = spawn(command, argv, {
    env: options.env,
    stdio: [...options.stdio],
    detached: true,
  });
  let stderr = '';
  child.stderr?.setEncoding('utf8');
  child.stderr?.on('data', (chunk: string) => {
    stderr = (stderr + chunk).slice(-STDERR_KEEP);
  });

  let sampled: number | null = null;
  let sampler: NodeJS.Timeout | undefined;
  if (!options.useGnuTime && child.pid !== undefined) {
    const pid = child.pid;
    sampler = setInterval(() => {
      void readVmHwm(pid).then((v) => {
        if (v !== null) sampled = Math.max(sampled ?? 0, v);
      });
    }, SAMPLE_MS);
  }

  let killTimer: NodeJS.Timeout | undefined;
  let stalled = false;
  const signalGroup = (sig: NodeJS.Signals): void => {
    if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
    try {
      process.kill(-child.pid, sig);
    } catch {
      // The group is already gone.
    }
  };
  const onAbort = (): void => {
    signalGroup('SIGINT');
    killTimer = setTimeout(() => signalGroup('SIGKILL'), KILL_AFTER_MS);
  };
  if (options.signal?.aborted === true) onAbort();
  else options.signal?.addEventListener('abort', onAbort, { once: true });

  let watchdog: NodeJS.Timeout | undefined;
  if (options.stallMs !== undefined) {
    const stallMs = options.stallMs;
    let last: { ticks: number; since: number } | undefined;
    watchdog = setInterval(() => {
      void (async () => {
        const pid = await programPid(child, options.useGnuTime);
        const state = pid === undefined ? null : await mainThreadState(pid);
        if (state === null || !state.wchan.includes('futex') || state.ticks !== last?.ticks) {
          last = state === null ? undefined : { ticks: state.ticks, since: performance.now() };
          return;
        }
        if (performance.now() - last.since >= stallMs && !stalled) {
          stalled = true;
          signalGroup('SIGKILL');
        }
      })();
    }, STALL_CHECK_MS);
  }

  const done = (async (): Promise<ProcessStats> => {
    let wallMs = 0;
    child.once('exit', () => {
      wallMs = performance.now() - started;
    });
    let exitCode: number | null;
    try {
      [exitCode] = (await once(child, 'close')) as [number | null, NodeJS.Signals | null];
    } catch (err) {
      // spawn itself failed (ENOENT, EACCES): report it as a failed run.
      exitCode = null;
      stderr += `cannot start ${command}: ${(err as Error).message}`;
    }
    options.signal?.removeEventListener('abort', onAbort);
    clearTimeout(killTimer);
    clearInterval(sampler);
    clearInterval(watchdog);
    let peakRssBytes: number | null = sampled;
    if (options.useGnuTime) {
      peakRssBytes = parseGnuTimeReport(await readFile(options.reportFile, 'utf8').catch(() => ''));
    }
    return {
      exitCode,
      wallMs: wallMs === 0 ? performance.now() - started : wallMs,
      peakRssBytes,
      stderr,
      stalled,
    };
  })();
  return { child, done };
}
