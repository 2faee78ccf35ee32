import { bytes } from './format.ts';

/**
 * A long step's progress as a job reports it. Counts the job knows are given; a total only
 * when it is known (`cellsTotal` once a manifest or a plan says how many). The bar and the
 * ETA follow the first measure that has a total, in the order bytes, rows, cells, items.
 */
export interface ProgressUpdate {
  /** What runs: `backup`, `verify`, `lifecycle apply`, … (a new step restarts the rate). */
  readonly step: string;
  /** Where it is within the step: `table messages (3/7)`. */
  readonly detail?: string | undefined;
  readonly cells?: number | undefined;
  readonly cellsTotal?: number | undefined;
  readonly rows?: number | undefined;
  readonly rowsTotal?: number | undefined;
  readonly bytes?: number | undefined;
  readonly bytesTotal?: number | undefined;
  /** Anything else counted (lifecycle actions, tables): done so far, of `total`, named `unit`. */
  readonly items?: number | undefined;
  readonly itemsTotal?: number | undefined;
  readonly unit?: string | undefined;
  /** True when a total may still grow (the backup's, until every table is planned): no ETA yet. */
  readonly totalGrows?: boolean | undefined;
}

/** Where the bar is drawn: stderr on a terminal. */
export interface ProgressStream {
  write(text: string): unknown;
  readonly columns?: number | undefined;
}

export interface ProgressBarOptions {
  /** Draw at all: a terminal and no `--json`. When false every call is a no-op. */
  readonly enabled: boolean;
  /** Milliseconds clock; tests inject one. */
  readonly now?: () => number;
  /** Least time between two frames (default 100 ms: at most ten redraws a second). */
  readonly intervalMs?: number;
}

/** How far back the rate looks: long enough to be steady, short enough to follow a change. */
const RATE_WINDOW_MS = 5000;
/** No ETA before this much of a step has run: the first second's rate is noise. */
const ETA_AFTER_MS = 1000;
const BAR_WIDTH = 20;
const ERASE_LINE = '\r\x1b[2K';

type Measure = 'bytes' | 'rows' | 'cells' | 'items';

/** 12,345 */
function count(n: number): string {
  return Math.round(n).toLocaleString('en-US');
}

/** 0:07, 12:34, 1:02:03 */
export function clock(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const ss = String(s % 60).padStart(2, '0');
  return h > 0 ? `${h}:${String(m).padStart(2, '0')}:${ss}` : `${m}:${ss}`;
}

function valueOf(u: ProgressUpdate, measure: Measure): { done: number | undefined; total: number | undefined } {
  switch (measure) {
    case 'bytes':
      return { done: u.bytes, total: u.bytesTotal };
    case 'rows':
      return { done: u.rows, total: u.rowsTotal };
    case 'cells':
      return { done: u.cells, total: u.cellsTotal };
    case 'items':
      return { done: u.items, total: u.itemsTotal };
  }
}

const MEASURES: readonly Measure[] = ['bytes', 'rows', 'cells', 'items'];

/** The measure the bar follows (the first with a total), and the one the rate is shown in (the first counted). */
function measures(u: ProgressUpdate): { bar: Measure | undefined; rate: Measure | undefined } {
  const bar = MEASURES.find((m) => {
    const v = valueOf(u, m);
    return v.done !== undefined && v.total !== undefined && v.total > 0;
  });
  const rate = MEASURES.find((m) => valueOf(u, m).done !== undefined);
  return { bar, rate };
}

/**
 * One progress line on a terminal, redrawn in place at most every `intervalMs` (the last
 * update of an interval is drawn when it ends, so the line never lags behind for long),
 * with counts, totals, a bar, the rate over the last few seconds and an ETA. Silent when
 * not enabled, so callers report unconditionally.
 */
export class ProgressBar {
  readonly enabled: boolean;
  readonly #stream: ProgressStream;
  readonly #now: () => number;
  readonly #interval: number;
  #step: string | undefined;
  #stepStarted = 0;
  #samples: { at: number; update: ProgressUpdate }[] = [];
  #latest: ProgressUpdate | undefined;
  #shown = '';
  #lastDraw = Number.NEGATIVE_INFINITY;
  #timer: NodeJS.Timeout | undefined;

  constructor(stream: ProgressStream, options: ProgressBarOptions) {
    this.#stream = stream;
    this.enabled = options.enabled;
    this.#now = options.now ?? (() => performance.now());
    this.#interval = options.intervalMs ?? 100;
  }

  /** Records `update` and redraws if the last frame is old enough; else draws it when it is. */
  update(update: ProgressUpdate): void {
    if (!this.enabled) return;
    const now = this.#now();
    if (update.step !== this.#step) {
      this.#step = update.step;
      this.#stepStarted = now;
      this.#samples = [];
    }
    // Jobs report per cell (thousands a second); a sample every 50 ms is plenty for a rate.
    if (now - (this.#samples.at(-1)?.at ?? Number.NEGATIVE_INFINITY) >= 50) this.#samples.push({ at: now, update });
    while (this.#samples.length > 2 && (this.#samples[1]?.at ?? now) < now - RATE_WINDOW_MS) this.#samples.shift();
    this.#latest = update;
    if (now - this.#lastDraw >= this.#interval) {
      this.#draw(now);
    } else if (this.#timer === undefined) {
      this.#timer = setTimeout(() => {
        this.#timer = undefined;
        this.#draw(this.#now());
      }, this.#interval - (now - this.#lastDraw));
      this.#timer.unref();
    }
  }

  /** Ends the current step: the line is erased and the next update starts a new rate. */
  done(): void {
    if (!this.enabled) return;
    this.#cancelTimer();
    this.#erase();
    this.#latest = undefined;
    this.#step = undefined;
    this.#samples = [];
  }

  /** Writes `text` (a whole line) with the progress line out of its way, then puts the line back. */
  print(text: string, write: (text: string) => unknown = (t) => this.#stream.write(t)): void {
    if (!this.enabled || this.#shown === '') {
      write(text);
      return;
    }
    this.#erase();
    write(text);
    if (this.#latest !== undefined) this.#draw(this.#now());
  }

  /** The line for `update` as it would be drawn now (without the terminal's control codes). */
  render(update: ProgressUpdate, now: number): string {
    const { bar, rate } = measures(update);
    const parts: string[] = [];
    let head = update.step;
    if (bar !== undefined) {
      const { done = 0, total = 1 } = valueOf(update, bar);
      const fraction = Math.min(1, Math.max(0, done / total));
      const filled = Math.round(fraction * BAR_WIDTH);
      head += ` [${'#'.repeat(filled)}${'-'.repeat(BAR_WIDTH - filled)}] ${String(Math.floor(fraction * 100)).padStart(3)}%`;
    }
    parts.push(head);
    if (update.detail !== undefined) parts.push(update.detail);
    const plus = update.totalGrows === true ? '+' : '';
    const counted = (done: number | undefined, total: number | undefined, unit: string, fmt: (n: number) => string = count): void => {
      if (done === undefined) return;
      parts.push(total === undefined ? `${fmt(done)} ${unit}` : `${fmt(done)}/${fmt(total)}${plus} ${unit}`);
    };
    counted(update.items, update.itemsTotal, update.unit ?? 'done');
    counted(update.cells, update.cellsTotal, 'cells');
    counted(update.rows, update.rowsTotal, 'rows');
    if (update.bytes !== undefined) {
      parts.push(update.bytesTotal === undefined ? bytes(update.bytes) : `${bytes(update.bytes)} of ${bytes(update.bytesTotal)}${plus}`);
    }
    const perSecond = rate === undefined ? undefined : this.#rate(rate);
    if (rate !== undefined && perSecond !== undefined) {
      parts.push(rate === 'bytes' ? `${bytes(perSecond)}/s` : `${count(perSecond)} ${rate === 'items' ? (update.unit ?? 'done') : rate}/s`);
    }
    const barRate = bar === undefined ? undefined : this.#rate(bar);
    if (bar !== undefined && barRate !== undefined && barRate > 0 && update.totalGrows !== true && now - this.#stepStarted >= ETA_AFTER_MS) {
      const { done = 0, total = 0 } = valueOf(update, bar);
      parts.push(`ETA ${clock((total - done) / barRate)}`);
    }
    return parts.join('  ');
  }

  /** `measure` per second over the window, or undefined before two samples that count it lie 200 ms apart. */
  #rate(measure: Measure): number | undefined {
    const counted = this.#samples.filter((s) => valueOf(s.update, measure).done !== undefined);
    const first = counted[0];
    const last = counted.at(-1);
    if (first === undefined || last === undefined || last.at - first.at < 200) return undefined;
    const delta = (valueOf(last.update, measure).done ?? 0) - (valueOf(first.update, measure).done ?? 0);
    return (delta * 1000) / (last.at - first.at);
  }

  #draw(now: number): void {
    this.#cancelTimer();
    if (this.#latest === undefined) return;
    const width = Math.max(20, (this.#stream.columns ?? 100) - 1);
    let line = this.render(this.#latest, now);
    if (line.length > width) line = `${line.slice(0, width - 1)}…`;
    this.#lastDraw = now;
    this.#shown = line;
    this.#stream.write(`${ERASE_LINE}${line}`);
  }

  #erase(): void {
    if (this.#shown === '') return;
    this.#shown = '';
    this.#stream.write(ERASE_LINE);
  }

  #cancelTimer(): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
  }
}
