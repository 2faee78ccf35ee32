/**
 * The recovery point over a period, from the snapshots alone: at each instant `t`, the data
 * a restore would lose is everything since the consistent point of the newest snapshot that
 * was complete at `t`. Pure: the vault's facts in, the measurement out.
 */

/** A snapshot that completed: when its data was read, and from when it could be restored. */
export interface RestorePoint {
  readonly id: string;
  /**
   * The run's start on the vault clock. Its consistent point (the chat store's read
   * transaction) is a little later, so using the start overstates the RPO slightly, never
   * understates it.
   */
  readonly startedAt: Date;
  readonly completedAt: Date;
}

/** An interval in which the RPO was above the objective (or there was no backup at all). */
export interface RpoBreach {
  readonly from: string;
  readonly to: string;
  /** The RPO just before `to`, in seconds; null when no complete snapshot existed then. */
  readonly worstSeconds: number | null;
}

export interface RpoMeasurement {
  /** What the numbers mean, for the reader of the report. */
  readonly basis: string;
  readonly measuredFrom: string;
  /** The period's end, or the moment the report was made if that is earlier. */
  readonly measuredUntil: string;
  readonly objectiveSeconds: number | null;
  /** The largest RPO seen in the period; null when part of it had no complete snapshot at all. */
  readonly worstSeconds: number | null;
  /** The instant just before which the worst RPO was reached. */
  readonly worstAt: string | null;
  /** Part of the period before any snapshot was complete: nothing could have been restored. */
  readonly withoutBackup: { readonly from: string; readonly to: string } | null;
  /** True when the RPO stayed within the objective throughout; null without an objective. */
  readonly met: boolean | null;
  readonly breaches: readonly RpoBreach[];
  /** Snapshots that completed in the measured interval. */
  readonly completions: number;
}

export const RPO_BASIS =
  'At every instant of the period (up to the report, if the period is not over), the time since the start of the ' +
  'newest snapshot complete at that instant, on the vault clock. A snapshot counts from its completion; its start ' +
  'is a little before its consistent point, so the figure is an upper bound.';

interface Segment {
  readonly from: number;
  readonly to: number;
  /** Newest consistent point available throughout the segment; null when none. */
  readonly point: number | null;
}

const seconds = (ms: number): number => Math.round(ms / 1000);
const iso = (ms: number): string => new Date(ms).toISOString();

/**
 * Measures the RPO from `from` to `until` (both included) given every snapshot that ever
 * completed up to `until` (earlier ones give the starting point; order does not matter).
 * The RPO grows linearly between completions, so its worst values are just before each
 * completion and at `until`. With `objectiveSeconds`, the intervals above it are listed
 * (touching intervals merged); an interval without any complete snapshot is always one.
 */
export function measureRpo(
  points: readonly RestorePoint[],
  from: Date,
  until: Date,
  objectiveSeconds: number | null,
): RpoMeasurement {
  const start = from.getTime();
  const end = Math.max(start, until.getTime());
  const sorted = [...points].sort(
    (a, b) => a.completedAt.getTime() - b.completedAt.getTime() || a.id.localeCompare(b.id),
  );
  let point: number | null = null;
  const segments: Segment[] = [];
  let cursor = start;
  let completions = 0;
  for (const p of sorted) {
    const done = p.completedAt.getTime();
    if (done > end) break;
    if (done > cursor) {
      segments.push({ from: cursor, to: done, point });
      cursor = done;
    }
    if (done > start) completions += 1;
    const cp = p.startedAt.getTime();
    point = point === null ? cp : Math.max(point, cp);
  }
  segments.push({ from: cursor, to: end, point });

  let worst: { ms: number; at: number } | null = null;
  let unbounded = false;
  const uncovered: { from: number; to: number }[] = [];
  const breaches: { from: number; to: number; worst: number | null }[] = [];
  const objectiveMs = objectiveSeconds === null ? null : objectiveSeconds * 1000;
  for (const s of segments) {
    if (s.point === null) {
      unbounded = true;
      uncovered.push({ from: s.from, to: s.to });
      if (objectiveMs !== null) addBreach(breaches, s.from, s.to, null);
      continue;
    }
    const rpo = s.to - s.point;
    if (worst === null || rpo > worst.ms) worst = { ms: rpo, at: s.to };
    if (objectiveMs !== null && rpo > objectiveMs)
      addBreach(breaches, Math.max(s.from, s.point + objectiveMs), s.to, rpo);
  }
  const first = uncovered[0];
  const last = uncovered.at(-1);
  return {
    basis: RPO_BASIS,
    measuredFrom: iso(start),
    measuredUntil: iso(end),
    objectiveSeconds,
    worstSeconds: unbounded || worst === null ? null : seconds(worst.ms),
    worstAt: unbounded || worst === null ? null : iso(worst.at),
    // Only the segments before the first completion lack a snapshot, so they are contiguous.
    withoutBackup:
      first === undefined || last === undefined
        ? null
        : { from: iso(first.from), to: iso(last.to) },
    met: objectiveMs === null ? null : breaches.length === 0,
    breaches: breaches.map((b) => ({
      from: iso(b.from),
      to: iso(b.to),
      worstSeconds: b.worst === null ? null : seconds(b.worst),
    })),
    completions,
  };
}

/** Appends a breach, merging it into the previous one when they touch. */
function addBreach(
  breaches: { from: number; to: number; worst: number | null }[],
  from: number,
  to: number,
  worst: number | null,
): void {
  const last = breaches.at(-1);
  if (last !== undefined && last.to >= from) {
    last.to = Math.max(last.to, to);
    last.worst = last.worst === null || worst === null ? null : Math.max(last.worst, worst);
    return;
  }
  breaches.push({ from, to, worst });
}
