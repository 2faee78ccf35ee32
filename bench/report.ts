import type { BaselineResult } from './baseline.ts';
import type { ProfileSummary } from './cpu-profile.ts';
import type { BackupOutput, PhaseResult, VerifyOutput } from './lethe-phase.ts';
import { keysPerThousandUsers, type LifecycleMeasurements } from './lifecycle.ts';

/**
 * Turns the measurements of one or more runs into the benchmark's table. Pure: the numbers
 * in, rows and text out. MB means 10^6 bytes throughout.
 */

/** The target the table checks every lethe step against. */
export const PEAK_RSS_TARGET_BYTES = 300e6;

export interface RunMeasurements {
  /** pg_database_size of the chat database that the full backup and pg_dump read. */
  readonly databaseBytes: number;
  /** `stored`: bytes the step added to the object store, per top-level prefix (packs, snapshots, keys). */
  readonly full: PhaseResult<BackupOutput> & { readonly stored: Readonly<Record<string, number>> };
  readonly incremental: PhaseResult<BackupOutput> & {
    readonly stored: Readonly<Record<string, number>>;
    readonly messagesAdded: number;
  };
  readonly verify: PhaseResult<VerifyOutput>;
  readonly baseline: BaselineResult;
  /** Issue #3's lifecycle steps, after verify; `error` when one of them failed. */
  readonly lifecycle?: LifecycleMeasurements | { readonly error: string };
  readonly profiles?: {
    readonly full: ProfileSummary;
    readonly incremental: ProfileSummary;
    readonly verify: ProfileSummary;
  };
}

export type StepName =
  'lethe backup (full)' | 'lethe backup (incremental)' | 'lethe verify' | 'pg_dump | age';

export interface Row {
  readonly step: StepName;
  /** Process wall time, start-up included; the median over runs. */
  readonly seconds: number;
  /** Plaintext MB per second (see the notes for what plaintext means per row); median. */
  readonly mbPerSecond: number;
  /** The highest peak over runs; null when it could not be measured. */
  readonly peakRssBytes: number | null;
  /** PASS or FAIL against {@link PEAK_RSS_TARGET_BYTES}; null for the baseline. */
  readonly target: 'PASS' | 'FAIL' | null;
  /** Bytes written to storage by the step; null for verify. Median. */
  readonly outputBytes: number | null;
  /** The step's time divided by pg_dump | age's time in the same run; median. */
  readonly timeRatio: number;
}

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  if (sorted.length % 2 === 1) return sorted[mid] ?? Number.NaN;
  return ((sorted[mid - 1] ?? Number.NaN) + (sorted[mid] ?? Number.NaN)) / 2;
}

function maxOrNull(values: readonly (number | null)[]): number | null {
  if (values.some((v) => v === null)) return null;
  return Math.max(...(values as number[]));
}

interface RunRow {
  readonly seconds: number;
  readonly mbPerSecond: number;
  readonly peakRssBytes: number | null;
  readonly outputBytes: number | null;
}

const total = (sizes: Readonly<Record<string, number>>): number =>
  Object.values(sizes).reduce((a, b) => a + b, 0);

function runRows(run: RunMeasurements): Record<StepName, RunRow> {
  const s = (ms: number): number => ms / 1000;
  const rate = (bytes: number, ms: number): number => bytes / 1e6 / s(ms);
  return {
    'lethe backup (full)': {
      seconds: s(run.full.stats.wallMs),
      mbPerSecond: rate(run.full.output.bytesPlain, run.full.stats.wallMs),
      peakRssBytes: run.full.stats.peakRssBytes,
      outputBytes: total(run.full.stored),
    },
    'lethe backup (incremental)': {
      seconds: s(run.incremental.stats.wallMs),
      mbPerSecond: rate(run.incremental.output.bytesPlain, run.incremental.stats.wallMs),
      peakRssBytes: run.incremental.stats.peakRssBytes,
      outputBytes: total(run.incremental.stored),
    },
    'lethe verify': {
      seconds: s(run.verify.stats.wallMs),
      mbPerSecond: rate(run.incremental.output.bytesPlain, run.verify.stats.wallMs),
      peakRssBytes: run.verify.stats.peakRssBytes,
      outputBytes: null,
    },
    'pg_dump | age': {
      seconds: s(run.baseline.wallMs),
      mbPerSecond: rate(run.databaseBytes, run.baseline.wallMs),
      peakRssBytes: run.baseline.peakRssBytes,
      outputBytes: run.baseline.outputBytes,
    },
  };
}

const STEPS: readonly StepName[] = [
  'lethe backup (full)',
  'lethe backup (incremental)',
  'lethe verify',
  'pg_dump | age',
];

/** One row per step, aggregated over runs (medians; the highest peak RSS). */
export function tableRows(runs: readonly RunMeasurements[]): Row[] {
  const perRun = runs.map(runRows);
  return STEPS.map((step) => {
    const cells = perRun.map((r) => r[step]);
    const ratios = runs.map(
      (run, i) => (perRun[i]?.[step].seconds ?? Number.NaN) / (run.baseline.wallMs / 1000),
    );
    const peak = maxOrNull(cells.map((c) => c.peakRssBytes));
    const outputs = cells.map((c) => c.outputBytes);
    return {
      step,
      seconds: median(cells.map((c) => c.seconds)),
      mbPerSecond: median(cells.map((c) => c.mbPerSecond)),
      peakRssBytes: peak,
      target:
        step === 'pg_dump | age'
          ? null
          : peak !== null && peak < PEAK_RSS_TARGET_BYTES
            ? 'PASS'
            : 'FAIL',
      outputBytes: outputs.some((o) => o === null) ? null : median(outputs as number[]),
      timeRatio: median(ratios),
    };
  });
}

const mb = (bytes: number): string => (bytes / 1e6).toFixed(1);

function pad(text: string, width: number, right: boolean): string {
  return right ? text.padStart(width) : text.padEnd(width);
}

/** The table as aligned text, headed by the column names. */
export function formatTable(rows: readonly Row[]): string {
  const header = ['step', 'time (s)', 'MB/s', 'peak RSS (MB)', 'output (MB)', 'vs pg_dump|age'];
  const body = rows.map((r) => [
    r.step,
    r.seconds.toFixed(2),
    r.mbPerSecond.toFixed(1),
    (r.peakRssBytes === null ? 'n/a' : mb(r.peakRssBytes)) +
      (r.target === null ? '      ' : ` ${r.target}`),
    r.outputBytes === null ? '-' : mb(r.outputBytes),
    `${r.timeRatio.toFixed(2)}x`,
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((b) => (b[i] ?? '').length)));
  const line = (cells: readonly string[]): string =>
    cells
      .map((c, i) => pad(c, widths[i] ?? 0, i > 0))
      .join('  ')
      .trimEnd();
  return [line(header), line(widths.map((w) => '-'.repeat(w))), ...body.map(line)].join('\n');
}

/** `packs 20.1 + snapshots 1.2 + keys 0.6 MB`. */
function breakdown(sizes: Readonly<Record<string, number>>): string {
  const parts = Object.entries(sizes)
    .sort((a, b) => b[1] - a[1])
    .map(([k, v]) => `${k} ${mb(v)}`);
  return `${parts.join(' + ')} MB`;
}

/** What the rows are made of, from the first run: sizes, cells and lethe's own job times. */
export function formatNotes(runs: readonly RunMeasurements[]): string {
  const run = runs[0];
  if (run === undefined) return '';
  const { full, incremental, verify, baseline } = run;
  const lines = [
    `chat database ${mb(run.databaseBytes)} MB (pg_database_size: tables, TOAST, indexes); ` +
      `lethe plaintext ${mb(full.output.bytesPlain)} MB in ${full.output.cells} cells, ${full.output.rows} rows; ` +
      `the SQL dump inside the age file ${mb(baseline.dumpBytes)} MB`,
    `MB/s: lethe rows divide lethe's plaintext (COPY text of every cell in the snapshot) by the time; ` +
      `pg_dump | age divides the database size`,
    `output: what the step added to the object store: full ${breakdown(full.stored)}; incremental ${breakdown(incremental.stored)}; ` +
      `encrypted cells alone (bytesStored): full ${mb(full.output.bytesStored)} MB, incremental ${mb(incremental.output.bytesStored)} MB`,
    `incremental: ${incremental.messagesAdded} messages added, ${incremental.output.cellsReused}/${incremental.output.cells} cells reused, ` +
      `${incremental.output.cellsWritten} written`,
    `verify: ${verify.output.ok ? 'OK' : 'FAILED'}, ${verify.output.cellsVerified}/${verify.output.cells} cells restored into a scratch database and checked`,
    `time is process wall time, Node start-up included; lethe's own job time: full ${(full.output.durationMs / 1000).toFixed(2)} s, ` +
      `incremental ${(incremental.output.durationMs / 1000).toFixed(2)} s, verify ${(verify.output.durationMs / 1000).toFixed(2)} s`,
    `peak RSS: lethe measured in its own process (target < ${mb(PEAK_RSS_TARGET_BYTES)} MB); pg_dump | age is the sum of both processes' peaks ` +
      `(pg_dump ${baseline.pgDump.peakRssBytes === null ? 'n/a' : mb(baseline.pgDump.peakRssBytes)}, ` +
      `age ${baseline.age.peakRssBytes === null ? 'n/a' : mb(baseline.age.peakRssBytes)}); the PostgreSQL server is not counted for either`,
  ];
  if (run.lifecycle !== undefined) lines.push(...lifecycleNotes(run.lifecycle));
  if (runs.length > 1) lines.unshift(`the notes are from run 1 of ${runs.length}`);
  for (const f of verify.output.findings)
    lines.push(`  verify finding ${f.code} ${f.subject}: ${f.problem}`);
  return lines.map((l) => `- ${l}`).join('\n');
}

function stepText(stats: { wallMs: number; peakRssBytes: number | null }): string {
  return `${(stats.wallMs / 1000).toFixed(2)} s (peak RSS ${stats.peakRssBytes === null ? 'n/a' : mb(stats.peakRssBytes)} MB)`;
}

/** The lifecycle lines of the notes: keys per 1,000 users, erasure, retention shred. */
function lifecycleNotes(l: NonNullable<RunMeasurements['lifecycle']>): string[] {
  if ('error' in l) return [`lifecycle steps failed: ${l.error}`];
  const per = keysPerThousandUsers(l.keys);
  const kinds = Object.entries(l.keys.dimensionKeys)
    .map(([kind, n]) => `${kind} ${per[kind] ?? 0} (${n})`)
    .join(', ');
  return [
    `keys in the vault per 1,000 users (${l.keys.users} users): ${per['all'] ?? 0} in all = ` +
      `${per['cell'] ?? 0} cell keys (${l.keys.cellKeys}: ${Object.entries(l.keys.cellKeysByClass).map(([c, n]) => `${c} ${n}`).join(', ')}) + ` +
      `${per['dimension'] ?? 0} dimension keys: ${kinds}`,
    `erasure of user ${l.erase.user} of tenant ${l.erase.tenant} (the busiest author, ${l.erase.userCellKeys} cell keys): ` +
      `erase request ${stepText(l.erase.request.stats)}, erase approve (executes: destroys the key, writes the certificate) ` +
      stepText(l.erase.approve.stats),
    `monthly retention shred (messages ${l.retention.rule}: ${l.retention.period} due): lifecycle plan ${stepText(l.retention.plan.stats)}, ` +
      `${l.retention.plan.output.actions} actions, ${l.retention.plan.output.keysToDestroy} keys to destroy; lifecycle apply ` +
      `${stepText(l.retention.apply.stats)}, ${l.retention.apply.output.keysDestroyed} keys destroyed`,
  ];
}

/** The top self-time functions of each profiled lethe step. */
export function formatProfiles(profiles: NonNullable<RunMeasurements['profiles']>): string {
  const parts: string[] = [];
  for (const [step, summary] of Object.entries(profiles)) {
    parts.push(
      `CPU profile, lethe ${step} (main thread, ${(summary.busyMs / 1000).toFixed(2)} s busy):`,
    );
    for (const f of summary.top) {
      parts.push(
        `  ${f.selfMs.toFixed(0).padStart(7)} ms  ${(f.share * 100).toFixed(1).padStart(5)}%  ${f.where}`,
      );
    }
  }
  return parts.join('\n');
}

/** The figures issue 8 sets targets for, as `--json` prints them (medians over runs). */
export interface Summary {
  readonly scale: string;
  readonly ratios: {
    /** pg_dump | age's time over lethe's full backup's: above 1, lethe is faster. */
    readonly fullVsBaseline: number;
    /** verify's plaintext throughput over the full backup's. */
    readonly verifyVsFull: number;
  };
  /** Everything the full backup added to storage over its plaintext bytes. */
  readonly storedVsPlain: number;
  /** Highest peak RSS over runs, MB (10^6 bytes); null where it could not be measured. */
  readonly peakRssMb: { readonly full: number | null; readonly incremental: number | null; readonly verify: number | null };
  /** The full backup's new cells per second of its wall time. */
  readonly cellsPerSecond: number;
}

/** The targets of {@link Summary}: `ok` false when one is missed. */
export const SUMMARY_TARGETS = {
  fullVsBaseline: 1.0,
  verifyVsFull: 0.8,
  storedVsPlain: 1.1,
  peakRssMb: PEAK_RSS_TARGET_BYTES / 1e6,
} as const;

export function summarize(scale: string, runs: readonly RunMeasurements[]): Summary {
  const peak = (pick: (r: RunMeasurements) => number | null): number | null => {
    const v = maxOrNull(runs.map(pick));
    return v === null ? null : Math.round(v / 1e4) / 100;
  };
  return {
    scale,
    ratios: {
      fullVsBaseline: median(runs.map((r) => r.baseline.wallMs / r.full.stats.wallMs)),
      verifyVsFull: median(
        runs.map((r) => r.incremental.output.bytesPlain / r.verify.stats.wallMs / (r.full.output.bytesPlain / r.full.stats.wallMs)),
      ),
    },
    storedVsPlain: median(runs.map((r) => total(r.full.stored) / r.full.output.bytesPlain)),
    peakRssMb: {
      full: peak((r) => r.full.stats.peakRssBytes),
      incremental: peak((r) => r.incremental.stats.peakRssBytes),
      verify: peak((r) => r.verify.stats.peakRssBytes),
    },
    cellsPerSecond: median(runs.map((r) => r.full.output.cellsWritten / (r.full.stats.wallMs / 1000))),
  };
}

/** Each target of the summary with its figure and PASS or FAIL. */
export function summaryChecks(s: Summary): { name: string; figure: string; target: string; pass: boolean }[] {
  const rss = (name: keyof Summary['peakRssMb']): { name: string; figure: string; target: string; pass: boolean } => {
    const v = s.peakRssMb[name];
    return { name: `peakRssMb.${name}`, figure: v === null ? 'n/a' : v.toFixed(1), target: `< ${SUMMARY_TARGETS.peakRssMb}`, pass: v !== null && v < SUMMARY_TARGETS.peakRssMb };
  };
  return [
    { name: 'ratios.fullVsBaseline', figure: s.ratios.fullVsBaseline.toFixed(3), target: `>= ${SUMMARY_TARGETS.fullVsBaseline}`, pass: s.ratios.fullVsBaseline >= SUMMARY_TARGETS.fullVsBaseline },
    { name: 'ratios.verifyVsFull', figure: s.ratios.verifyVsFull.toFixed(3), target: `>= ${SUMMARY_TARGETS.verifyVsFull}`, pass: s.ratios.verifyVsFull >= SUMMARY_TARGETS.verifyVsFull },
    { name: 'storedVsPlain', figure: s.storedVsPlain.toFixed(3), target: `<= ${SUMMARY_TARGETS.storedVsPlain}`, pass: s.storedVsPlain <= SUMMARY_TARGETS.storedVsPlain },
    rss('full'),
    rss('incremental'),
    rss('verify'),
  ];
}

/** The targets as aligned text, and the cells per second. */
export function formatSummary(s: Summary): string {
  const checks = summaryChecks(s);
  const width = Math.max(...checks.map((c) => c.name.length));
  return [
    `targets (${s.scale}):`,
    ...checks.map((c) => `  ${c.name.padEnd(width)}  ${c.figure.padStart(8)}  target ${c.target.padEnd(7)}  ${c.pass ? 'PASS' : 'FAIL'}`),
    `  ${'cellsPerSecond'.padEnd(width)}  ${s.cellsPerSecond.toFixed(0).padStart(8)}  (new cells per second of the full backup's wall time)`,
  ].join('\n');
}
