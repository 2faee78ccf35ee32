import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { access, constants, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { z } from 'zod';
import { dumpEnv, PG_DUMP, pgDumpArgs, type DumpSource } from './baseline.ts';
import { bytesByTopLevel, growth } from './dir-sizes.ts';
import { spawnMeasured, type ProcessStats } from './measured-process.ts';

/**
 * The real peer lethe's incremental backup is compared with: `pg_dump | restic backup
 * --stdin` into a local restic repository. restic splits the dump into content-defined
 * chunks and stores only chunks it has not seen, so its second run costs a full pg_dump
 * plus the chunks the churn changed: what an operator gets today without lethe.
 */

/** Debian's restic (`apt-get install restic`). */
export const RESTIC = '/usr/bin/restic';
/** Why the restic figures are null: printed once when the benchmark starts, and in the notes. */
export const RESTIC_MISSING = `${RESTIC} is missing (Debian: apt-get install -y restic); its rows and ratios.incrementalVsRestic are null`;
/** The name the dump has inside the restic snapshot. */
const STDIN_FILENAME = 'chat.sql';

/** True when {@link RESTIC} exists and is executable. */
export async function resticAvailable(): Promise<boolean> {
  try {
    await access(RESTIC, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** `restic 0.14.0`, or 'unknown' when it does not answer. */
export async function resticVersion(): Promise<string> {
  try {
    const { stdout } = await promisify(execFile)(RESTIC, ['version']);
    return /^restic \S+/.exec(stdout.trim())?.[0] ?? stdout.trim();
  } catch {
    return 'unknown';
  }
}

/** A local restic repository in the run's directory. */
export interface ResticRepo {
  readonly dir: string;
  /** restic's cache, kept beside the repository so that it goes with the run. */
  readonly cacheDir: string;
  /** Reaches restic as RESTIC_PASSWORD in its environment, never on argv. */
  readonly password: string;
}

/** Ours without any RESTIC_* or PG* setting, plus the repository's. */
function resticEnv(repo: ResticRepo): NodeJS.ProcessEnv {
  const env = Object.fromEntries(
    Object.entries(process.env).filter(([k]) => !k.startsWith('RESTIC_') && !k.startsWith('PG')),
  );
  return {
    ...env,
    RESTIC_REPOSITORY: repo.dir,
    RESTIC_PASSWORD: repo.password,
    RESTIC_CACHE_DIR: repo.cacheDir,
  };
}

/**
 * `restic init` of a new repository at `parentDir/restic` with a random password.
 * Not measured: a repository is created once, not per backup. Throws with restic's stderr.
 */
export async function initRestic(parentDir: string, signal?: AbortSignal): Promise<ResticRepo> {
  const repo: ResticRepo = {
    dir: join(parentDir, 'restic'),
    cacheDir: join(parentDir, 'restic-cache'),
    password: randomBytes(18).toString('base64url'),
  };
  await mkdir(repo.cacheDir, { mode: 0o700 });
  try {
    await promisify(execFile)(RESTIC, ['init'], {
      env: resticEnv(repo),
      ...(signal === undefined ? {} : { signal }),
    });
  } catch (err) {
    const stderr = (err as { stderr?: string }).stderr ?? '';
    throw new Error(
      `restic init of ${repo.dir} failed: ${(err as Error).message}\n${stderr.trim()}`,
      {
        cause: err,
      },
    );
  }
  return repo;
}

/** The fields of restic 0.14's `backup --json` summary the benchmark reads. */
const ResticSummary = z.looseObject({
  message_type: z.literal('summary'),
  data_added: z.number(),
  total_bytes_processed: z.number(),
  snapshot_id: z.string(),
});

export interface ResticResult {
  readonly wallMs: number;
  /** pg_dump's and restic's peaks added: the two run at the same time. Null if either is unknown. */
  readonly peakRssBytes: number | null;
  readonly pgDump: ProcessStats;
  readonly restic: ProcessStats;
  /** What the backup added to the repository directory, per top-level entry (data, index, snapshots). */
  readonly stored: Record<string, number>;
  /** restic's own count of the bytes it added (restic 0.14: before compression). */
  readonly dataAdded: number;
  /** Size of the SQL dump restic read. */
  readonly dumpBytes: number;
  /** Bytes of the chat store's files restic read (its second backup, of the files directory). */
  readonly filesBytes: number;
  /** The files' backup alone (part of wallMs). */
  readonly filesWallMs: number;
  readonly snapshotId: string;
}

export interface ResticBackupOptions extends DumpSource {
  readonly repo: ResticRepo;
  /** The chat store's files directory, backed up by a second `restic backup DIR` after the dump. */
  readonly filesDir: string;
  /** A private directory for GNU time's reports. */
  readonly scratchDir: string;
  readonly useGnuTime: boolean;
  /** Distinguishes the reports of the full and the incremental run. */
  readonly label: string;
  readonly signal?: AbortSignal;
}

/**
 * Runs `pg_dump | restic backup --stdin --stdin-filename chat.sql`, with pg_dump's
 * arguments exactly as the `pg_dump | age` baseline gives them, then `restic backup
 * filesDir` for the chat store's files outside the database, and measures both from the
 * first spawn to the last exit, and the repository's growth. Throws with the programs'
 * stderr when any fails.
 */
export async function dumpToRestic(options: ResticBackupOptions): Promise<ResticResult> {
  const before = await bytesByTopLevel(options.repo.dir);
  const started = performance.now();
  const common = {
    useGnuTime: options.useGnuTime,
    ...(options.signal === undefined ? {} : { signal: options.signal }),
  };
  const dump = spawnMeasured(PG_DUMP, pgDumpArgs(options), {
    ...common,
    env: dumpEnv(options.password),
    stdio: ['ignore', 'pipe', 'pipe'],
    reportFile: join(options.scratchDir, `time-pg_dump-restic-${options.label}.txt`),
  });
  const dumpOut = dump.child.stdout;
  if (dumpOut === null) throw new Error('pg_dump has no stdout pipe');
  // --quiet: with --json, restic then prints its summary line and no progress lines.
  const restic = spawnMeasured(
    RESTIC,
    [
      'backup',
      '--stdin',
      '--stdin-filename',
      STDIN_FILENAME,
      '--host',
      'lethe-bench',
      '--json',
      '--quiet',
    ],
    {
      ...common,
      env: resticEnv(options.repo),
      stdio: [dumpOut, 'pipe', 'pipe'],
      reportFile: join(options.scratchDir, `time-restic-${options.label}.txt`),
    },
  );
  // restic holds its own copy of the pipe now; ours would keep pg_dump's 'close' waiting.
  dumpOut.destroy();
  let stdout = '';
  restic.child.stdout?.setEncoding('utf8');
  restic.child.stdout?.on('data', (chunk: string) => {
    stdout = (stdout + chunk).slice(-64 * 1024);
  });
  const [pgDump, resticStats] = await Promise.all([dump.done, restic.done]);
  const wallMs = performance.now() - started;
  if (pgDump.exitCode !== 0 || resticStats.exitCode !== 0) {
    throw new Error(
      `pg_dump | restic backup failed: pg_dump exit ${String(pgDump.exitCode)}, restic exit ${String(resticStats.exitCode)}\n` +
        `pg_dump: ${pgDump.stderr.trim()}\nrestic: ${resticStats.stderr.trim()}`,
    );
  }
  const summary = lastSummary(stdout);
  const filesStarted = performance.now();
  const files = spawnMeasured(
    RESTIC,
    ['backup', options.filesDir, '--host', 'lethe-bench', '--json', '--quiet'],
    {
      ...common,
      env: resticEnv(options.repo),
      stdio: ['ignore', 'pipe', 'pipe'],
      reportFile: join(options.scratchDir, `time-restic-files-${options.label}.txt`),
    },
  );
  let filesStdout = '';
  files.child.stdout?.setEncoding('utf8');
  files.child.stdout?.on('data', (chunk: string) => {
    filesStdout = (filesStdout + chunk).slice(-64 * 1024);
  });
  const filesStats = await files.done;
  const filesWallMs = performance.now() - filesStarted;
  if (filesStats.exitCode !== 0) {
    throw new Error(
      `restic backup of the files failed: exit ${String(filesStats.exitCode)}\n${filesStats.stderr.trim()}`,
    );
  }
  const filesSummary = lastSummary(filesStdout);
  const peaks = [
    pgDump.peakRssBytes === null || resticStats.peakRssBytes === null
      ? null
      : pgDump.peakRssBytes + resticStats.peakRssBytes,
    filesStats.peakRssBytes,
  ];
  return {
    wallMs: wallMs + filesWallMs,
    filesWallMs,
    filesBytes: filesSummary.total_bytes_processed,
    peakRssBytes: peaks.includes(null) ? null : Math.max(...(peaks as number[])),
    pgDump,
    restic: resticStats,
    stored: growth(await bytesByTopLevel(options.repo.dir), before),
    dataAdded: summary.data_added + filesSummary.data_added,
    dumpBytes: summary.total_bytes_processed,
    snapshotId: summary.snapshot_id,
  };
}

/** restic's `--json` summary: the last line of `stdout` that parses as one; throws when none does. */
function lastSummary(stdout: string): z.infer<typeof ResticSummary> {
  const summary = stdout
    .split('\n')
    .map((line) => {
      try {
        return ResticSummary.safeParse(JSON.parse(line));
      } catch {
        return undefined;
      }
    })
    .findLast((parsed) => parsed?.success === true)?.data;
  if (summary === undefined) {
    throw new Error(`restic backup printed no summary line:\n${stdout.slice(-2000)}`);
  }
  return summary;
}
