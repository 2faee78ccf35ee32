import { execFile } from 'node:child_process';
import { rmSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, readdir, rm } from 'node:fs/promises';
import { availableParallelism, loadavg, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify, parseArgs } from 'node:util';
import { applyChurn } from '../src/store/index.ts';
import { AGE, dumpAndEncrypt, PG_DUMP, type DumpSource } from './baseline.ts';
import { summarizeProfiles } from './cpu-profile.ts';
import { bytesByTopLevel, growth } from './dir-sizes.ts';
import { formatPerCell, measurePerCell } from './per-cell.ts';
import { formatPostQuantum, measurePostQuantum } from './post-quantum.ts';
import {
  checkpoint,
  databaseBytes,
  dropRun,
  prepareRun,
  seedTemplate,
  startServer,
  type BenchServer,
  type RunSetup,
  type SeededTemplate,
} from './fixture.ts';
import { BackupOutput, letheNodeFlags, runLethe, VerifyOutput, type PhaseOptions } from './lethe-phase.ts';
import { measureLifecycle } from './lifecycle.ts';
import { gnuTimeAvailable } from './measured-process.ts';
import {
  formatNotes,
  formatProfiles,
  formatSummary,
  formatTable,
  summarize,
  summaryChecks,
  tableRows,
  type RunMeasurements,
} from './report.ts';
import { REPO_ROOT } from './repo-root.ts';
import {
  dumpToRestic,
  initRestic,
  RESTIC_MISSING,
  resticAvailable,
  resticVersion,
  type ResticRepo,
  type ResticResult,
} from './restic.ts';

/**
 * `npm run bench`: lethe's full backup, incremental backup (after a chat service's churn)
 * and verify against `pg_dump | age` and `pg_dump | restic` on the same seeded database,
 * on an embedded PostgreSQL of its own. See docs/benchmarks.md.
 */

const USAGE = `usage: npm run bench -- [--scale small|medium|large] [--runs N] [--json] [--cpu-prof DIR] [--heap-mib N]
                          [--no-lifecycle]

  --scale      size of the seeded chat store (default medium; large is about 2 GB of rows
               and takes about half an hour here)
  --runs       repeat the measurements N times on fresh clones of the same data; the table
               shows medians and the highest peak RSS (default 1)
  --json       print the table and every measurement as one JSON document
  --cpu-prof   run the lethe steps under node --cpu-prof, keep the profiles in DIR and print
               the top self-time functions (the times then include profiling overhead)
  --heap-mib   run the lethe steps with --max-old-space-size=N instead of bin/lethe.js's own
               cap (0: Node's default), to measure what the cap costs or saves
  --no-lifecycle  skip the lifecycle steps after verify (erasure of one user, monthly
               retention shred, keys per 1,000 users)

Between the full and the incremental backup the store gets a chat service's churn (+1%
messages in its last month, 0.1% edited and 0.05% deleted across the history). pg_dump |
restic is measured next to both backups where /usr/bin/restic exists.

Exit codes: 0 all targets met, 1 the benchmark failed, 2 bad usage, 3 a target was missed or
verify found problems, 130 interrupted.`;

/**
 * The churn between the full and the incremental backup, as shares of the messages: a
 * chat service's month or so, new messages in the last month and edits and deletions
 * anywhere in the history (see `applyChurn`). The same seed every run: the clones are
 * identical, so every run applies the same churn.
 */
const CHURN = { addFraction: 0.01, editFraction: 0.001, deleteFraction: 0.0005, seed: 1 } as const;
const PROFILE_TOP = 15;

interface Options {
  readonly scale: 'small' | 'medium' | 'large';
  readonly runs: number;
  readonly json: boolean;
  readonly cpuProfileDir: string | undefined;
  /** Node flags of the lethe steps. */
  readonly nodeFlags: readonly string[];
  /** Also measure the lifecycle steps (erasure, retention shred) after verify. */
  readonly lifecycle: boolean;
}

class UsageError extends Error {}

function parseOptions(argv: readonly string[]): Options | 'help' {
  let values;
  try {
    ({ values } = parseArgs({
      args: [...argv],
      options: {
        scale: { type: 'string', default: 'medium' },
        runs: { type: 'string', default: '1' },
        json: { type: 'boolean', default: false },
        'cpu-prof': { type: 'string' },
        'heap-mib': { type: 'string' },
        'no-lifecycle': { type: 'boolean', default: false },
        help: { type: 'boolean', short: 'h', default: false },
      },
      strict: true,
    }));
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  if (values.help) return 'help';
  const scale = values.scale;
  if (scale !== 'small' && scale !== 'medium' && scale !== 'large')
    throw new UsageError(`--scale must be small, medium or large, got ${JSON.stringify(scale)}`);
  const runs = Number(values.runs);
  if (!Number.isInteger(runs) || runs < 1 || runs > 100)
    throw new UsageError(
      `--runs must be an integer from 1 to 100, got ${JSON.stringify(values.runs)}`,
    );
  const profiles = values['cpu-prof'];
  let nodeFlags = letheNodeFlags();
  if (values['heap-mib'] !== undefined) {
    const heap = Number(values['heap-mib']);
    if (!Number.isInteger(heap) || heap < 0 || heap > 65_536)
      throw new UsageError(
        `--heap-mib must be an integer from 0 to 65536, got ${JSON.stringify(values['heap-mib'])}`,
      );
    nodeFlags = [
      ...nodeFlags.filter((f) => !f.startsWith('--max-old-space-size')),
      ...(heap === 0 ? [] : [`--max-old-space-size=${heap}`]),
    ];
  }
  return {
    scale,
    runs,
    json: values.json,
    cpuProfileDir: profiles === undefined ? undefined : resolve(profiles),
    nodeFlags,
    lifecycle: !values['no-lifecycle'],
  };
}

/** `abc1234`, or `abc1234+dirty` when the working tree has changes: what the numbers are of. */
async function revision(): Promise<string> {
  try {
    const run = promisify(execFile);
    const { stdout: head } = await run('git', ['rev-parse', '--short', 'HEAD'], { cwd: REPO_ROOT });
    const { stdout: changes } = await run(
      'git',
      ['status', '--porcelain', '--untracked-files=no', '--', 'src', 'bin', 'package.json'],
      { cwd: REPO_ROOT },
    );
    return `${head.trim()}${changes.trim() === '' ? '' : '+dirty'}`;
  } catch {
    return 'unknown';
  }
}

async function versionOf(file: string): Promise<string> {
  try {
    const { stdout } = await promisify(execFile)(file, ['--version']);
    return stdout.trim();
  } catch {
    return 'unknown';
  }
}

/** `done in 12.3 s, peak RSS 201.4 MB`: each step's result as it completes, so a later failure loses nothing. */
function stepLine(stats: { wallMs: number; peakRssBytes: number | null }): string {
  const rss = stats.peakRssBytes === null ? 'n/a' : `${(stats.peakRssBytes / 1e6).toFixed(1)} MB`;
  return `done in ${(stats.wallMs / 1000).toFixed(1)} s, peak RSS ${rss}`;
}

interface RunContext {
  readonly server: BenchServer;
  readonly workDir: string;
  readonly template: SeededTemplate;
  readonly useGnuTime: boolean;
  readonly cpuProfileDir: string | undefined;
  readonly nodeFlags: readonly string[];
  readonly lifecycle: boolean;
  /** False where /usr/bin/restic is missing: the restic steps are skipped. */
  readonly restic: boolean;
  readonly signal: AbortSignal;
  readonly say: (text: string) => void;
}

/**
 * One run: full backup, pg_dump | age and pg_dump | restic on the same data, churn,
 * incremental backup, pg_dump | restic again, verify, lifecycle.
 */
async function measureRun(ctx: RunContext, index: number): Promise<RunMeasurements> {
  const { server, signal, say } = ctx;
  say(`run ${index}: cloning the seeded database, lethe init`);
  const setup: RunSetup = await prepareRun(server, ctx.workDir, ctx.template, index, signal);
  try {
    const phase = async (step: 'full' | 'incremental' | 'verify' | 'lifecycle'): Promise<PhaseOptions> => {
      const profileDir =
        ctx.cpuProfileDir === undefined ? undefined : join(ctx.cpuProfileDir, `run-${index}`, step);
      if (profileDir !== undefined) await mkdir(profileDir, { recursive: true });
      return {
        configFile: setup.configFile,
        env: setup.env,
        scratchDir: setup.dir,
        useGnuTime: ctx.useGnuTime,
        nodeFlags: ctx.nodeFlags,
        signal,
        ...(profileDir === undefined ? {} : { cpuProfileDir: profileDir }),
      };
    };

    say(`run ${index}: lethe backup (full)`);
    const full = await runLethe(['backup'], BackupOutput, await phase('full'));
    say(`run ${index}: ${stepLine(full.stats)}, ${full.output.cells} cells`);
    const fullStored = await bytesByTopLevel(setup.storageDir);
    const dbBytes = await databaseBytes(server, setup.chatDatabase);

    say(`run ${index}: pg_dump | age`);
    await checkpoint(server, signal);
    const dumpFile = join(setup.dir, 'dump.sql.age');
    const source: DumpSource = {
      port: server.port,
      user: server.user,
      password: server.password,
      database: setup.chatDatabase,
    };
    const baseline = await dumpAndEncrypt({
      ...source,
      recipient: setup.recipient,
      outFile: dumpFile,
      filesDir: setup.filesDir,
      scratchDir: setup.dir,
      useGnuTime: ctx.useGnuTime,
      signal,
    });
    await rm(dumpFile);
    await rm(`${dumpFile}.files`);
    say(
      `run ${index}: ${stepLine({ wallMs: baseline.wallMs, peakRssBytes: baseline.peakRssBytes })}`,
    );

    // The real peer: restic on the same, unchanged data; again after the churn below.
    let peer: { repo: ResticRepo; full: ResticResult } | undefined;
    if (ctx.restic) {
      say(`run ${index}: pg_dump | restic backup (full)`);
      const repo = await initRestic(setup.dir, signal);
      await checkpoint(server, signal);
      const resticFull = await dumpToRestic({ ...source, repo, filesDir: setup.filesDir, scratchDir: setup.dir, useGnuTime: ctx.useGnuTime, label: 'full', signal });
      say(`run ${index}: ${stepLine(resticFull)}`);
      peer = { repo, full: resticFull };
    }

    say(
      `run ${index}: churn: +${CHURN.addFraction * 100}% messages, ${CHURN.editFraction * 100}% edited, ${CHURN.deleteFraction * 100}% deleted`,
    );
    const churn = await applyChurn(setup.chatUrl, { ...CHURN, filesDir: setup.filesDir, signal });
    say(`run ${index}: churn: ${churn.added} added, ${churn.edited} edited, ${churn.deleted} deleted`);
    const dbBytesAfterChurn = await databaseBytes(server, setup.chatDatabase);

    say(`run ${index}: lethe backup (incremental)`);
    await checkpoint(server, signal);
    const incremental = await runLethe(['backup'], BackupOutput, await phase('incremental'));
    say(
      `run ${index}: ${stepLine(incremental.stats)}, ${incremental.output.cellsReused}/${incremental.output.cells} cells reused`,
    );
    const incrementalStored = growth(await bytesByTopLevel(setup.storageDir), fullStored);

    let restic: RunMeasurements['restic'] = null;
    if (peer !== undefined) {
      say(`run ${index}: pg_dump | restic backup (incremental)`);
      await checkpoint(server, signal);
      const resticIncremental = await dumpToRestic({
        ...source,
        repo: peer.repo,
        filesDir: setup.filesDir,
        scratchDir: setup.dir,
        useGnuTime: ctx.useGnuTime,
        label: 'incremental',
        signal,
      });
      say(`run ${index}: ${stepLine(resticIncremental)}`);
      restic = { full: peer.full, incremental: resticIncremental };
    }

    say(`run ${index}: lethe verify`);
    // Exit code 3 means verify ran and found problems: a result to report, not a crash.
    const verify = await runLethe(
      ['verify', '--snapshot', incremental.output.snapshotId],
      VerifyOutput,
      await phase('verify'),
      [3],
    );
    say(`run ${index}: ${stepLine(verify.stats)}, ${verify.output.ok ? 'OK' : 'FAILED'}`);

    // Lifecycle (issue #3) last: it destroys keys. Its failure is reported, not fatal, so
    // that the backup and verify measurements are never lost to it.
    let lifecycle: RunMeasurements['lifecycle'];
    if (ctx.lifecycle) {
      say(`run ${index}: lifecycle (erasure of one user, monthly retention shred)`);
      try {
        lifecycle = await measureLifecycle(server, setup, () => phase('lifecycle'), (t) => say(`run ${index}: ${t}`));
        say(`run ${index}: lifecycle done`);
      } catch (err) {
        if (signal.aborted) throw err;
        lifecycle = { error: err instanceof Error ? err.message : String(err) };
        say(`run ${index}: lifecycle failed: ${lifecycle.error}`);
      }
    }

    let profiles: RunMeasurements['profiles'];
    if (ctx.cpuProfileDir !== undefined) {
      const dir = join(ctx.cpuProfileDir, `run-${index}`);
      profiles = {
        full: await summarizeProfiles(join(dir, 'full'), PROFILE_TOP),
        incremental: await summarizeProfiles(join(dir, 'incremental'), PROFILE_TOP),
        verify: await summarizeProfiles(join(dir, 'verify'), PROFILE_TOP),
      };
    }
    return {
      databaseBytes: dbBytes,
      full: { ...full, stored: fullStored },
      incremental: { ...incremental, stored: incrementalStored },
      churn,
      databaseBytesAfterChurn: dbBytesAfterChurn,
      verify,
      baseline,
      restic,
      ...(lifecycle === undefined ? {} : { lifecycle }),
      ...(profiles === undefined ? {} : { profiles }),
    };
  } finally {
    await dropRun(server, setup).catch(() => undefined);
    await rm(setup.dir, { recursive: true, force: true });
  }
}

async function bench(
  options: Options,
  signal: AbortSignal,
  workDir: string,
  onServer: (s: BenchServer) => void,
): Promise<number> {
  const started = performance.now();
  const say = (text: string): void => {
    process.stderr.write(
      `[bench ${((performance.now() - started) / 1000).toFixed(0).padStart(4)} s] ${text}\n`,
    );
  };
  const useGnuTime = await gnuTimeAvailable();
  const restic = await resticAvailable();
  if (!restic) say(RESTIC_MISSING);
  // Other work on the machine skews the times; the header shows how busy it was.
  const loadAtStart = loadavg()[0] ?? 0;
  // The hot path's per-cell cost first, while nothing else of the benchmark runs.
  say('measuring the per-cell crypto path');
  const perCell = measurePerCell();
  say(`starting an embedded PostgreSQL in ${workDir}`);
  const server = await startServer(workDir);
  onServer(server);

  say(`seeding the ${options.scale} chat store`);
  let lastProgress = 0;
  const template = await seedTemplate(server, workDir, options.scale, signal, (text) => {
    if (performance.now() - lastProgress > 5000) {
      lastProgress = performance.now();
      say(text);
    }
  });
  say(
    `seeded ${(template.stats.bytes / 1e6).toFixed(1)} MB in the database and ${template.stats.files.count} files ` +
      `(${(template.stats.files.bytes / 1e6).toFixed(1)} MB) outside it in ${(template.stats.durationMs / 1000).toFixed(1)} s`,
  );

  const ctx: RunContext = {
    server,
    template,
    workDir,
    useGnuTime,
    cpuProfileDir: options.cpuProfileDir,
    nodeFlags: options.nodeFlags,
    lifecycle: options.lifecycle,
    restic,
    signal,
    say,
  };
  const runs: RunMeasurements[] = [];
  for (let i = 1; i <= options.runs; i++) runs.push(await measureRun(ctx, i));
  // keys.postQuantum (issue 13): the option's cost, off against on at the same scale.
  say('measuring keys.postQuantum: a full backup and its verify, off and on');
  const postQuantum = await measurePostQuantum(server, workDir, template, { useGnuTime, nodeFlags: options.nodeFlags, signal, say });

  const rows = tableRows(runs);
  const environment = {
    revision: await revision(),
    cpus: availableParallelism(),
    node: process.version,
    letheNodeFlags: options.nodeFlags.join(' '),
    postgres: `${template.serverVersion} (embedded, fsync on)`,
    pgDump: await versionOf(PG_DUMP),
    age: await versionOf(AGE),
    restic: restic ? await resticVersion() : null,
    peakRssFrom: useGnuTime ? '/usr/bin/time -v' : '/proc/<pid>/status VmHWM, sampled',
    loadAverage: { start: loadAtStart, end: loadavg()[0] ?? 0 },
  };
  const summary = summarize(options.scale, runs);
  const failed =
    rows.some((r) => r.target === 'FAIL') || runs.some((r) => !r.verify.output.ok) || summaryChecks(summary).some((c) => c.pass === false);
  if (options.json) {
    process.stdout.write(
      `${JSON.stringify({ ...summary, runs: options.runs, environment, seed: template.stats, rows, perCell, postQuantum, measurements: runs })}\n`,
    );
  } else {
    const lines = [
      '',
      `lethe bench (${environment.revision}): scale ${options.scale}, ${options.runs} run(s); ${environment.cpus} CPUs, Node ${environment.node} ` +
        `(lethe steps: node ${environment.letheNodeFlags === '' ? '' : `${environment.letheNodeFlags} `}bin/lethe.js), ` +
        `PostgreSQL ${environment.postgres}, ${environment.pgDump}, age ${environment.age}, ${environment.restic ?? 'no restic'}; peak RSS from ${environment.peakRssFrom}; ` +
        `1-minute load average ${environment.loadAverage.start.toFixed(1)} at the start, ${environment.loadAverage.end.toFixed(1)} at the end`,
      '',
      formatTable(rows),
      '',
      formatSummary(summary),
      '',
      formatPerCell(perCell),
      '',
      formatPostQuantum(postQuantum),
      '',
      formatNotes(runs),
    ];
    const profiles = runs[0]?.profiles;
    if (profiles !== undefined)
      lines.push('', formatProfiles(profiles), `(profiles kept in ${options.cpuProfileDir ?? ''})`);
    process.stdout.write(`${lines.join('\n')}\n`);
  }
  return failed ? 3 : 0;
}

async function main(): Promise<number> {
  let options;
  try {
    options = parseOptions(process.argv.slice(2));
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    process.stderr.write(`lethe-bench: ${err.message}\n${USAGE}\n`);
    return 2;
  }
  if (options === 'help') {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  if (options.cpuProfileDir !== undefined) {
    // Profiles left from an earlier run would be summed into this one's.
    await mkdir(options.cpuProfileDir, { recursive: true });
    if ((await readdir(options.cpuProfileDir)).length > 0) {
      process.stderr.write(
        `lethe-bench: --cpu-prof ${options.cpuProfileDir} is not empty: name a new or empty directory\n`,
      );
      return 2;
    }
  }

  const controller = new AbortController();
  // The embedded server runs as `postgres` when we are root: it must be able to enter the directory.
  const workDir = await mkdtemp(join(tmpdir(), 'lethe-bench-'));
  await chmod(workDir, 0o755);
  const started: { server?: BenchServer } = {};
  let cleaned = false;
  // Last resort on a second Ctrl-C: the server's own exit hook stops it; we remove the files.
  const onExit = (): void => {
    if (!cleaned) rmSync(workDir, { recursive: true, force: true, maxRetries: 3 });
  };
  process.on('exit', onExit);
  let interrupts = 0;
  const onSignal = (signal: NodeJS.Signals): void => {
    interrupts += 1;
    if (interrupts > 1) process.exit(130);
    process.stderr.write(
      `lethe-bench: ${signal} received, stopping and cleaning up (send again to exit at once)\n`,
    );
    controller.abort();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    return await bench(options, controller.signal, workDir, (s) => (started.server = s));
  } catch (err) {
    if (controller.signal.aborted) {
      process.stderr.write('lethe-bench: interrupted\n');
      return 130;
    }
    process.stderr.write(
      `lethe-bench: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`,
    );
    return 1;
  } finally {
    await started.server?.server.stop();
    await rm(workDir, { recursive: true, force: true, maxRetries: 3 });
    cleaned = true;
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

process.exitCode = await main();
