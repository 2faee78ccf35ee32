import { open, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { spawnMeasured, type ProcessStats } from './measured-process.ts';

/**
 * The baseline lethe is compared with: `pg_dump | age -r RECIPIENT > FILE`, the plain SQL
 * dump of one database encrypted to one recipient, run as two processes joined by a pipe,
 * without a shell; then, for the chat store's files outside the database, `tar -c DIR |
 * age -r RECIPIENT > FILE.files`, so that the baseline backs up the same bytes lethe does.
 */

/** Debian's pg_dump (a pg_wrapper that runs the newest installed major, 15 here). */
export const PG_DUMP = '/usr/bin/pg_dump';
export const AGE = '/usr/bin/age';
export const TAR = '/usr/bin/tar';

/** age v1 payload: a 16-byte nonce, then STREAM chunks of 64 KiB plaintext plus a 16-byte tag. */
const AGE_NONCE = 16;
const AGE_CHUNK = 64 * 1024;
const AGE_TAG = 16;

export interface BaselineOptions extends DumpSource {
  /** An age X25519 recipient (`age1…`). */
  readonly recipient: string;
  readonly outFile: string;
  /** The chat store's files directory: tarred through age into `outFile.files` after the dump. */
  readonly filesDir: string;
  /** A private directory for GNU time's reports. */
  readonly scratchDir: string;
  readonly useGnuTime: boolean;
  readonly signal?: AbortSignal;
}

export interface BaselineResult {
  /** Both pipes, one after the other. */
  readonly wallMs: number;
  /**
   * The larger of the two pipes' peaks, each pg_dump's (tar's) and age's added: the two of a
   * pipe run at the same time, the pipes one after the other. Null if any is unknown.
   */
  readonly peakRssBytes: number | null;
  readonly pgDump: ProcessStats;
  readonly age: ProcessStats;
  /** Size of both encrypted files. */
  readonly outputBytes: number;
  /** Size of the SQL dump inside the first, computed from the age framing. */
  readonly dumpBytes: number;
  /** `tar | age` of the files directory. */
  readonly files: {
    readonly wallMs: number;
    readonly tar: ProcessStats;
    readonly age: ProcessStats;
    readonly outputBytes: number;
    /** Size of the tar stream inside the age file. */
    readonly tarBytes: number;
  };
}

/** Where pg_dump connects, as the baseline and the restic peer both run it. */
export interface DumpSource {
  readonly port: number;
  readonly user: string;
  /** Reaches pg_dump as PGPASSWORD in its environment, never on argv. */
  readonly password: string;
  readonly database: string;
}

/**
 * pg_dump's arguments: the plain SQL dump of one database, as a DBA would take it. The
 * restic peer uses exactly these, so both baselines read the same bytes.
 */
export function pgDumpArgs(source: DumpSource): string[] {
  return [
    '--host=127.0.0.1',
    `--port=${source.port}`,
    `--username=${source.user}`,
    '--no-password',
    `--dbname=${source.database}`,
  ];
}

/** The environment for pg_dump: ours without libpq's PG* settings, plus the password. */
export function dumpEnv(password: string): NodeJS.ProcessEnv {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('PG')));
  return { ...env, PGPASSWORD: password };
}

/**
 * The plaintext length of an age v1 file of `size` bytes: the header runs to the end of
 * the `--- MAC` line, and every chunk (the last one may be short, never empty unless the
 * plaintext is) carries a 16-byte tag. Throws if the file does not start like an age file.
 */
async function agePlaintextBytes(file: string, size: number): Promise<number> {
  const handle = await open(file, 'r');
  try {
    const head = Buffer.alloc(Math.min(size, 16 * 1024));
    await handle.read(head, 0, head.length, 0);
    const text = head.toString('latin1');
    const mac = text.indexOf('\n--- ');
    const end = mac < 0 ? -1 : text.indexOf('\n', mac + 1);
    if (!text.startsWith('age-encryption.org/v1\n') || end < 0) {
      throw new Error(`${file} does not look like an age v1 file`);
    }
    const payload = size - (end + 1) - AGE_NONCE;
    const chunks = Math.max(1, Math.ceil(payload / (AGE_CHUNK + AGE_TAG)));
    return payload - chunks * AGE_TAG;
  } finally {
    await handle.close();
  }
}

/**
 * Runs `pg_dump | age -r RECIPIENT > outFile`, then `tar -c filesDir | age -r RECIPIENT >
 * outFile.files`, and measures each from the first spawn to the last exit. Throws with both
 * programs' stderr when either fails.
 */
export async function dumpAndEncrypt(options: BaselineOptions): Promise<BaselineResult> {
  const dump = await dumpPipe(options);
  const files = await tarPipe(options);
  const pairPeak = (a: ProcessStats, b: ProcessStats): number | null =>
    a.peakRssBytes === null || b.peakRssBytes === null ? null : a.peakRssBytes + b.peakRssBytes;
  const peaks = [dump.peakRssBytes, pairPeak(files.tar, files.age)];
  return {
    ...dump,
    wallMs: dump.wallMs + files.wallMs,
    peakRssBytes: peaks.includes(null) ? null : Math.max(...(peaks as number[])),
    outputBytes: dump.outputBytes + files.outputBytes,
    files,
  };
}

/** `tar -c -C filesDir . | age -r RECIPIENT > outFile.files`, measured like the dump. */
async function tarPipe(options: BaselineOptions): Promise<BaselineResult['files']> {
  const outFile = `${options.outFile}.files`;
  const out = await open(outFile, 'wx', 0o600);
  const started = performance.now();
  try {
    const common = {
      useGnuTime: options.useGnuTime,
      ...(options.signal === undefined ? {} : { signal: options.signal }),
    };
    const tar = spawnMeasured(TAR, ['-c', '-f', '-', '-C', options.filesDir, '.'], {
      ...common,
      env: process.env,
      stdio: ['ignore', 'pipe', 'pipe'],
      reportFile: join(options.scratchDir, 'time-tar.txt'),
    });
    const tarOut = tar.child.stdout;
    if (tarOut === null) throw new Error('tar has no stdout pipe');
    const age = spawnMeasured(AGE, ['-r', options.recipient], {
      ...common,
      env: process.env,
      stdio: [tarOut, out.fd, 'pipe'],
      reportFile: join(options.scratchDir, 'time-age-files.txt'),
    });
    tarOut.destroy();
    const [tarStats, ageStats] = await Promise.all([tar.done, age.done]);
    const wallMs = performance.now() - started;
    if (tarStats.exitCode !== 0 || ageStats.exitCode !== 0) {
      throw new Error(
        `tar | age failed: tar exit ${String(tarStats.exitCode)}, age exit ${String(ageStats.exitCode)}\n` +
          `tar: ${tarStats.stderr.trim()}\nage: ${ageStats.stderr.trim()}`,
      );
    }
    const outputBytes = (await stat(outFile)).size;
    return {
      wallMs,
      tar: tarStats,
      age: ageStats,
      outputBytes,
      tarBytes: await agePlaintextBytes(outFile, outputBytes),
    };
  } finally {
    await out.close();
  }
}

async function dumpPipe(options: BaselineOptions): Promise<Omit<BaselineResult, 'files'>> {
  const out = await open(options.outFile, 'wx', 0o600);
  const started = performance.now();
  try {
    const common = {
      useGnuTime: options.useGnuTime,
      ...(options.signal === undefined ? {} : { signal: options.signal }),
    };
    const dump = spawnMeasured(PG_DUMP, pgDumpArgs(options), {
      ...common,
      env: dumpEnv(options.password),
      stdio: ['ignore', 'pipe', 'pipe'],
      reportFile: join(options.scratchDir, 'time-pg_dump.txt'),
    });
    const dumpOut = dump.child.stdout;
    if (dumpOut === null) throw new Error('pg_dump has no stdout pipe');
    const age = spawnMeasured(AGE, ['-r', options.recipient], {
      ...common,
      env: process.env,
      stdio: [dumpOut, out.fd, 'pipe'],
      reportFile: join(options.scratchDir, 'time-age.txt'),
    });
    // age holds its own copy of the pipe now. Ours would never see EOF (we do not read it),
    // and pg_dump's 'close' waits for it.
    dumpOut.destroy();
    const [pgDump, ageStats] = await Promise.all([dump.done, age.done]);
    const wallMs = performance.now() - started;
    if (pgDump.exitCode !== 0 || ageStats.exitCode !== 0) {
      throw new Error(
        `pg_dump | age failed: pg_dump exit ${String(pgDump.exitCode)}, age exit ${String(ageStats.exitCode)}\n` +
          `pg_dump: ${pgDump.stderr.trim()}\nage: ${ageStats.stderr.trim()}`,
      );
    }
    const outputBytes = (await stat(options.outFile)).size;
    return {
      wallMs,
      peakRssBytes:
        pgDump.peakRssBytes === null || ageStats.peakRssBytes === null
          ? null
          : pgDump.peakRssBytes + ageStats.peakRssBytes,
      pgDump,
      age: ageStats,
      outputBytes,
      dumpBytes: await agePlaintextBytes(options.outFile, outputBytes),
    };
  } finally {
    await out.close();
  }
}
