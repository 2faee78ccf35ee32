import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { availableParallelism, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { z } from 'zod';
import { SCALES, type Scale } from '../src/store/index.ts';
import { checkpoint, dropRun, prepareRun, seedTemplate, startServer } from './fixture.ts';
import { BackupOutput, runLethe, type PhaseOptions } from './lethe-phase.ts';
import { gnuTimeAvailable } from './measured-process.ts';

/**
 * `npm run bench:scaling -- [--scale small|medium|large] [--workers 1,2,3] [--json]`: the
 * full backup of one seeded store, taken by one process and by a coordinator with K shard
 * workers (`lethe backup --coordinate K` / `--shard I/K`), each run on a fresh clone, vault
 * and object directory. Prints wall time, cells per second in all and per worker, and each
 * process's peak memory, with the machine's load average: docs/scaling.md reads its
 * figures from here. Like `npm run bench`, run it on a quiet machine.
 */

const ShardOutput = z.object({
  snapshotId: z.string(),
  shard: z.number(),
  shards: z.number(),
  cellsRead: z.number(),
  cellsWritten: z.number(),
  bytesStored: z.number(),
  durationMs: z.number(),
});

interface Row {
  readonly mode: string;
  readonly workers: number;
  readonly wallSeconds: number;
  readonly cells: number;
  readonly bytesPlain: number;
  readonly cellsPerSecond: number;
  readonly cellsPerSecondPerWorker: number;
  readonly mbPerSecond: number;
  /** Peak RSS of the coordinator (or the single process), and of the largest worker, in MB. */
  readonly peakRssMb: { readonly main: number | null; readonly worker: number | null };
}

const mb = (bytes: number | null): number | null => (bytes === null ? null : Math.round((bytes / 1e6) * 10) / 10);

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: { scale: { type: 'string', default: 'medium' }, workers: { type: 'string', default: '1,2,3' }, json: { type: 'boolean', default: false } },
  });
  const scale = values.scale as Scale;
  if (!SCALES.includes(scale)) throw new Error(`--scale takes ${SCALES.join(', ')}`);
  const counts = values.workers.split(',').map(Number);
  if (counts.some((k) => !Number.isSafeInteger(k) || k < 1 || k > 64)) throw new Error('--workers takes a list of worker counts, e.g. 1,2,3');
  const say = (text: string): void => {
    if (!values.json) process.stderr.write(`${text}\n`);
  };
  const controller = new AbortController();
  const { signal } = controller;
  // The embedded server runs as `postgres` when we are root: it must be able to enter the directory.
  const workDir = await mkdtemp(join(tmpdir(), 'lethe-scaling-'));
  await chmod(workDir, 0o755);
  const useGnuTime = await gnuTimeAvailable();
  const loadAtStart = loadavg()[0] ?? 0;
  const server = await startServer(workDir);
  const rows: Row[] = [];
  try {
    say(`seeding the ${scale} store`);
    const seeded = await seedTemplate(server, workDir, scale, signal, () => undefined);
    const modes: (number | 'single')[] = ['single', ...counts];
    for (const [index, mode] of modes.entries()) {
      const setup = await prepareRun(server, workDir, seeded, index, signal);
      await checkpoint(server, signal);
      const phase: PhaseOptions = { configFile: setup.configFile, env: setup.env, scratchDir: setup.dir, useGnuTime, signal };
      say(mode === 'single' ? 'lethe backup (one process)' : `lethe backup --coordinate ${mode} with ${mode} worker(s)`);
      const started = performance.now();
      if (mode === 'single') {
        const run = await runLethe(['backup'], BackupOutput, phase);
        const seconds = run.stats.wallMs / 1000;
        rows.push({
          mode: 'one process',
          workers: 1,
          wallSeconds: seconds,
          cells: run.output.cells,
          bytesPlain: run.output.bytesPlain,
          cellsPerSecond: run.output.cells / seconds,
          cellsPerSecondPerWorker: run.output.cells / seconds,
          mbPerSecond: run.output.bytesPlain / 1e6 / seconds,
          peakRssMb: { main: mb(run.stats.peakRssBytes), worker: null },
        });
      } else {
        const coordinator = runLethe(['backup', '--coordinate', String(mode), '--wait', '600'], BackupOutput, phase);
        const workers = Array.from({ length: mode }, (_, i) => runLethe(['backup', '--shard', `${i}/${mode}`, '--wait', '600'], ShardOutput, { ...phase, scratchDir: setup.dir }));
        const [done, shards] = await Promise.all([coordinator, Promise.all(workers)]);
        const seconds = (performance.now() - started) / 1000;
        const workerPeaks = shards.map((s) => s.stats.peakRssBytes ?? 0);
        rows.push({
          mode: `coordinator + ${mode} worker(s)`,
          workers: mode,
          wallSeconds: seconds,
          cells: done.output.cells,
          bytesPlain: done.output.bytesPlain,
          cellsPerSecond: done.output.cells / seconds,
          cellsPerSecondPerWorker: done.output.cells / seconds / mode,
          mbPerSecond: done.output.bytesPlain / 1e6 / seconds,
          peakRssMb: { main: mb(done.stats.peakRssBytes), worker: mb(Math.max(...workerPeaks)) },
        });
      }
      await dropRun(server, setup);
    }
    const summary = {
      scale,
      seedRows: seeded.stats,
      serverVersion: seeded.serverVersion,
      cpus: availableParallelism(),
      loadAverage: { start: loadAtStart, end: loadavg()[0] ?? 0 },
      rows,
    };
    if (values.json) {
      process.stdout.write(`${JSON.stringify(summary)}\n`);
    } else {
      const pad = (text: string, n: number): string => text.padEnd(n);
      process.stdout.write(`${pad('mode', 30)}${pad('wall s', 10)}${pad('cells/s', 10)}${pad('per worker', 12)}${pad('MB/s', 8)}peak RSS MB (main / worker)\n`);
      for (const r of rows) {
        process.stdout.write(
          `${pad(r.mode, 30)}${pad(r.wallSeconds.toFixed(1), 10)}${pad(r.cellsPerSecond.toFixed(0), 10)}${pad(r.cellsPerSecondPerWorker.toFixed(0), 12)}${pad(r.mbPerSecond.toFixed(1), 8)}${String(r.peakRssMb.main)} / ${String(r.peakRssMb.worker ?? '-')}\n`,
        );
      }
      process.stdout.write(`${summary.cpus} CPUs; load average ${loadAtStart.toFixed(2)} at start, ${summary.loadAverage.end.toFixed(2)} at end\n`);
    }
  } finally {
    await server.server.stop().catch(() => undefined);
    await rm(workDir, { recursive: true, force: true });
  }
}

await main();
