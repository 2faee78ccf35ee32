import type { ChurnResult } from '../src/store/index.ts';
import type { BaselineResult } from './baseline.ts';
import type { ProfileSummary } from './cpu-profile.ts';
import { totalBytes as total } from './dir-sizes.ts';
import type { BackupOutput, PhaseResult, VerifyOutput } from './lethe-phase.ts';
import { keysPerThousandUsers, rewrapRate, type LifecycleMeasurements } from './lifecycle.ts';
import { RESTIC_MISSING, type ResticResult } from './restic.ts';

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
  readonly incremental: PhaseResult<BackupOutput> & { readonly stored: Readonly<Record<string, number>> };
  /** What changed in the chat store between the full and the incremental backup. */
  readonly churn: ChurnResult;
  /** pg_database_size after the churn: what the incremental pg_dump | restic read. */
  readonly databaseBytesAfterChurn: number;
  readonly verify: PhaseResult<VerifyOutput>;
  readonly baseline: BaselineResult;
  /** `pg_dump | restic backup` after the full and after the churn; null where restic is missing. */
  readonly restic: { readonly full: ResticResult; readonly incremental: ResticResult } | null;
  /** Issue #3's lifecycle steps, after verify; `error` when one of them failed. */
  readonly lifecycle?: LifecycleMeasurements | { readonly error: string };
  readonly profiles?: {
    readonly full: ProfileSummary;
    readonly incremental: ProfileSummary;
    readonly verify: ProfileSummary;
  };
}

export type StepName =
  | 'lethe backup (full)'
  | 'lethe backup (incremental)'
  | 'lethe verify'
  | 'pg_dump | age'
  | 'pg_dump | restic (full)'
  | 'pg_dump | restic (incremental)';

export interface Row {
  readonly step: StepName;
  /** Process wall time, start-up included; the median over runs. */
  readonly seconds: number;
  /** Plaintext MB per second (see the notes for what plaintext means per row); median. */
  readonly mbPerSecond: number;
  /** The highest peak over runs; null when it could not be measured. */
  readonly peakRssBytes: number | null;
  /** PASS or FAIL against {@link PEAK_RSS_TARGET_BYTES}; null for the baselines. */
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

/** The steps of one run; the restic rows only where restic ran. */
function runRows(run: RunMeasurements): Partial<Record<StepName, RunRow>> {
  const s = (ms: number): number => ms / 1000;
  const rate = (bytes: number, ms: number): number => bytes / 1e6 / s(ms);
  const restic = (r: ResticResult, databaseBytes: number): RunRow => ({
    seconds: s(r.wallMs),
    mbPerSecond: rate(databaseBytes + r.filesBytes, r.wallMs),
    peakRssBytes: r.peakRssBytes,
    outputBytes: total(r.stored),
  });
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
      mbPerSecond: rate(run.databaseBytes + run.baseline.files.tarBytes, run.baseline.wallMs),
      peakRssBytes: run.baseline.peakRssBytes,
      outputBytes: run.baseline.outputBytes,
    },
    ...(run.restic === null
      ? {}
      : {
          'pg_dump | restic (full)': restic(run.restic.full, run.databaseBytes),
          'pg_dump | restic (incremental)': restic(run.restic.incremental, run.databaseBytesAfterChurn),
        }),
  };
}

const STEPS: readonly StepName[] = [
  'lethe backup (full)',
  'lethe backup (incremental)',
  'lethe verify',
  'pg_dump | age',
  'pg_dump | restic (full)',
  'pg_dump | restic (incremental)',
];

const BASELINES: ReadonlySet<StepName> = new Set([
  'pg_dump | age',
  'pg_dump | restic (full)',
  'pg_dump | restic (incremental)',
]);

/**
 * One row per step, aggregated over runs (medians; the highest peak RSS). A step that did
 * not run in every run (restic, where it is missing) has no row.
 */
export function tableRows(runs: readonly RunMeasurements[]): Row[] {
  const perRun = runs.map(runRows);
  const rows: Row[] = [];
  for (const step of STEPS) {
    const cells = perRun.map((r) => r[step]).filter((c) => c !== undefined);
    if (cells.length === 0 || cells.length < runs.length) continue;
    const ratios = runs.map(
      (run, i) => (perRun[i]?.[step]?.seconds ?? Number.NaN) / (run.baseline.wallMs / 1000),
    );
    const peak = maxOrNull(cells.map((c) => c.peakRssBytes));
    const outputs = cells.map((c) => c.outputBytes);
    rows.push({
      step,
      seconds: median(cells.map((c) => c.seconds)),
      mbPerSecond: median(cells.map((c) => c.mbPerSecond)),
      peakRssBytes: peak,
      target: BASELINES.has(step)
        ? null
        : peak !== null && peak < PEAK_RSS_TARGET_BYTES
          ? 'PASS'
          : 'FAIL',
      outputBytes: outputs.some((o) => o === null) ? null : median(outputs as number[]),
      timeRatio: median(ratios),
    });
  }
  return rows;
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

/** `packs 20.1 + snapshots 1.2 + keys 0.6 MB`; prefixes the step did not change are left out. */
function breakdown(sizes: Readonly<Record<string, number>>): string {
  const parts = Object.entries(sizes)
    .filter(([, v]) => v !== 0)
    .sort((a, b) => b[1] - a[1])
    .map(([k, v]) => `${k} ${mb(v)}`);
  return `${parts.join(' + ')} MB`;
}

/** What the rows are made of, from the first run: sizes, cells and lethe's own job times. */
export function formatNotes(runs: readonly RunMeasurements[]): string {
  const run = runs[0];
  if (run === undefined) return '';
  const { full, incremental, verify, baseline, churn } = run;
  const day = (d: Date): string => d.toISOString().slice(0, 10);
  const churned = (m: ChurnResult['oldestEdited']): string =>
    m === null ? 'none' : `${m.id} (created ${day(m.createdAt)})`;
  const lines = [
    `chat database ${mb(run.databaseBytes)} MB (pg_database_size: tables, TOAST, indexes); ` +
      `lethe plaintext ${mb(full.output.bytesPlain)} MB in ${full.output.cells} cells, ${full.output.rows} rows; ` +
      `the SQL dump inside the age file ${mb(baseline.dumpBytes)} MB; the chat store's files outside the database, tarred through age as a second file: ` +
      `${mb(baseline.files.tarBytes)} MB of tar in ${(baseline.files.wallMs / 1000).toFixed(2)} s`,
    `MB/s: lethe rows divide lethe's plaintext (COPY text of every cell in the snapshot) by the time; ` +
      `pg_dump | age and pg_dump | restic divide the database size plus the files' bytes (after the churn for the incremental)`,
    `output: what the step added to the object store: full ${breakdown(full.stored)}; incremental ${breakdown(incremental.stored)}; ` +
      `encrypted cells alone (bytesStored): full ${mb(full.output.bytesStored)} MB, incremental ${mb(incremental.output.bytesStored)} MB`,
    `churn before the incremental, of ${churn.messagesBefore} messages: ${churn.added} added (created ${day(churn.window.start)} … ` +
      `${day(churn.window.end)}, the store's last 30 days), ${churn.edited} edited, ${churn.deleted} deleted ` +
      `(with ${churn.deletedDependents.messageEdits} message_edits, ${churn.deletedDependents.attachments} attachments and ${churn.deletedDependents.files} files rows), ` +
      `${churn.addedFiles.files} files added (${mb(churn.addedFiles.bytes)} MB), ` +
      `edits and deletions uniform over the history; oldest edited message ${churned(churn.oldestEdited)}, ` +
      `oldest deleted ${churned(churn.oldestDeleted)}`,
    `incremental: ${incremental.output.cellsReused}/${incremental.output.cells} cells reused, ${incremental.output.cellsWritten} written`,
    `verify: ${verify.output.ok ? 'OK' : 'FAILED'}, ${verify.output.cellsVerified}/${verify.output.cells} cells restored into a scratch database and checked`,
    `time is process wall time, Node start-up included; lethe's own job time: full ${(full.output.durationMs / 1000).toFixed(2)} s, ` +
      `incremental ${(incremental.output.durationMs / 1000).toFixed(2)} s, verify ${(verify.output.durationMs / 1000).toFixed(2)} s`,
    `peak RSS: lethe measured in its own process (target < ${mb(PEAK_RSS_TARGET_BYTES)} MB); pg_dump | age is the sum of both processes' peaks ` +
      `(pg_dump ${baseline.pgDump.peakRssBytes === null ? 'n/a' : mb(baseline.pgDump.peakRssBytes)}, ` +
      `age ${baseline.age.peakRssBytes === null ? 'n/a' : mb(baseline.age.peakRssBytes)}); the PostgreSQL server is not counted for either`,
  ];
  lines.push(resticNote(run.restic));
  if (run.lifecycle !== undefined) lines.push(...lifecycleNotes(run.lifecycle));
  if (runs.length > 1) lines.unshift(`the notes are from run 1 of ${runs.length}`);
  for (const f of verify.output.findings)
    lines.push(`  verify finding ${f.code} ${f.subject}: ${f.problem}`);
  return lines.map((l) => `- ${l}`).join('\n');
}

function resticNote(restic: RunMeasurements['restic']): string {
  if (restic === null) return `pg_dump | restic: not measured, ${RESTIC_MISSING}`;
  const { full, incremental } = restic;
  return (
    `pg_dump | restic: a local repository (default settings) in the run's directory, pg_dump as for pg_dump | age; ` +
    `then \`restic backup\` of the files directory; ` +
    `output is the repository's growth: full ${breakdown(full.stored)} for a ${mb(full.dumpBytes)} MB dump and ${mb(full.filesBytes)} MB of files; ` +
    `incremental ${breakdown(incremental.stored)} for a ${mb(incremental.dumpBytes)} MB dump and ${mb(incremental.filesBytes)} MB of files ` +
    `(restic's data_added: full ${mb(full.dataAdded)}, incremental ${mb(incremental.dataAdded)} MB); ` +
    `peak RSS is pg_dump's and restic's added (restic ${restic.incremental.restic.peakRssBytes === null ? 'n/a' : mb(restic.incremental.restic.peakRssBytes)} MB in the incremental)`
  );
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
    `master key rotation (keys rotate-master, epoch ${l.rotate.output.epoch}): ${l.rotate.output.rewrapped} dimension keys re-wrapped in ` +
      `${l.rotate.output.rewrapMs} ms (${rewrapRate(l.rotate.output)} keys/s) in one vault transaction; the step ${stepText(l.rotate.stats)} with the vault backup`,
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
    /** lethe's incremental backup's wall time (after the churn) over its full backup's. */
    readonly incrementalVsFull: number;
    /** lethe's incremental backup's wall time over pg_dump | restic's after the same churn; null without restic. */
    readonly incrementalVsRestic: number | null;
  };
  /** Everything the full backup added to storage over its plaintext bytes. */
  readonly storedVsPlain: number;
  /** Everything the incremental backup added to storage (all prefixes) over what the full added. */
  readonly incrementalStoredVsFull: number;
  /** Highest peak RSS over runs, MB (10^6 bytes); null where it could not be measured. */
  readonly peakRssMb: { readonly full: number | null; readonly incremental: number | null; readonly verify: number | null };
  /** The full backup's new cells per second of its wall time. */
  readonly cellsPerSecond: number;
}

/** The targets of {@link Summary}. */
export const SUMMARY_TARGETS = {
  fullVsBaseline: 1.0,
  verifyVsFull: 0.8,
  storedVsPlain: 1.1,
  /**
   * Per scale. None at small: there Node's start-up, the same for both backups, is most of
   * their time, so the ratio says nothing about the incremental path.
   */
  incrementalVsFull: { medium: 0.15, large: 0.05 } as Readonly<Partial<Record<string, number>>>,
  incrementalVsRestic: 0.2,
  incrementalStoredVsFull: 0.03,
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
      incrementalVsFull: median(runs.map((r) => r.incremental.stats.wallMs / r.full.stats.wallMs)),
      incrementalVsRestic: runs.every((r) => r.restic !== null)
        ? median(runs.map((r) => r.incremental.stats.wallMs / (r.restic?.incremental.wallMs ?? Number.NaN)))
        : null,
    },
    storedVsPlain: median(runs.map((r) => total(r.full.stored) / r.full.output.bytesPlain)),
    incrementalStoredVsFull: median(runs.map((r) => total(r.incremental.stored) / total(r.full.stored))),
    peakRssMb: {
      full: peak((r) => r.full.stats.peakRssBytes),
      incremental: peak((r) => r.incremental.stats.peakRssBytes),
      verify: peak((r) => r.verify.stats.peakRssBytes),
    },
    cellsPerSecond: median(runs.map((r) => r.full.output.cellsWritten / (r.full.stats.wallMs / 1000))),
  };
}

export interface SummaryCheck {
  readonly name: string;
  readonly figure: string;
  readonly target: string;
  /** null: not checked, because the target has no value at this scale or the figure is missing (restic). */
  readonly pass: boolean | null;
}

/** Each target of the summary with its figure and PASS or FAIL (null where it is not checked). */
export function summaryChecks(s: Summary): SummaryCheck[] {
  const T = SUMMARY_TARGETS;
  const rss = (name: keyof Summary['peakRssMb']): SummaryCheck => {
    const v = s.peakRssMb[name];
    return { name: `peakRssMb.${name}`, figure: v === null ? 'n/a' : v.toFixed(1), target: `< ${T.peakRssMb}`, pass: v !== null && v < T.peakRssMb };
  };
  const incrementalTarget = T.incrementalVsFull[s.scale];
  const vsRestic = s.ratios.incrementalVsRestic;
  return [
    { name: 'ratios.fullVsBaseline', figure: s.ratios.fullVsBaseline.toFixed(3), target: `>= ${T.fullVsBaseline}`, pass: s.ratios.fullVsBaseline >= T.fullVsBaseline },
    { name: 'ratios.verifyVsFull', figure: s.ratios.verifyVsFull.toFixed(3), target: `>= ${T.verifyVsFull}`, pass: s.ratios.verifyVsFull >= T.verifyVsFull },
    {
      name: 'ratios.incrementalVsFull',
      figure: s.ratios.incrementalVsFull.toFixed(3),
      target: incrementalTarget === undefined ? `none at ${s.scale}` : `<= ${incrementalTarget}`,
      pass: incrementalTarget === undefined ? null : s.ratios.incrementalVsFull <= incrementalTarget,
    },
    {
      name: 'ratios.incrementalVsRestic',
      figure: vsRestic === null ? 'n/a' : vsRestic.toFixed(3),
      target: `<= ${T.incrementalVsRestic}`,
      pass: vsRestic === null ? null : vsRestic <= T.incrementalVsRestic,
    },
    { name: 'storedVsPlain', figure: s.storedVsPlain.toFixed(3), target: `<= ${T.storedVsPlain}`, pass: s.storedVsPlain <= T.storedVsPlain },
    {
      name: 'incrementalStoredVsFull',
      figure: s.incrementalStoredVsFull.toFixed(4),
      target: `<= ${T.incrementalStoredVsFull}`,
      pass: s.incrementalStoredVsFull <= T.incrementalStoredVsFull,
    },
    rss('full'),
    rss('incremental'),
    rss('verify'),
  ];
}

/** The targets as aligned text, and the cells per second. */
export function formatSummary(s: Summary): string {
  const checks = summaryChecks(s);
  const width = Math.max(...checks.map((c) => c.name.length));
  const targetWidth = Math.max(...checks.map((c) => c.target.length));
  const verdict = (c: SummaryCheck): string =>
    c.pass === null ? (c.figure === 'n/a' ? 'not measured' : 'not checked') : c.pass ? 'PASS' : 'FAIL';
  return [
    `targets (${s.scale}):`,
    ...checks.map((c) => `  ${c.name.padEnd(width)}  ${c.figure.padStart(8)}  target ${c.target.padEnd(targetWidth)}  ${verdict(c)}`),
    `  ${'cellsPerSecond'.padEnd(width)}  ${s.cellsPerSecond.toFixed(0).padStart(8)}  (new cells per second of the full backup's wall time)`,
  ].join('\n');
}
