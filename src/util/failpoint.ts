/**
 * Crash points for the crash-safety tests. `LETHE_FAILPOINTS=name` (or `name:N`, the Nth
 * time it is reached; several separated by commas) makes the process kill itself with
 * SIGKILL when it reaches that point: no handler runs, no buffer is flushed, exactly like
 * a machine losing power. Without the variable a failpoint is one string comparison.
 *
 * Only the test suite sets it; it is documented so that nobody is surprised by it.
 */
const hits = new Map<string, number>();

export function failpoint(name: string): void {
  const spec = process.env['LETHE_FAILPOINTS'];
  if (spec === undefined || spec === '') return;
  const count = (hits.get(name) ?? 0) + 1;
  hits.set(name, count);
  for (const item of spec.split(',')) {
    const [point, nth] = item.trim().split(':');
    if (point !== name) continue;
    if (nth === undefined || Number(nth) === count) process.kill(process.pid, 'SIGKILL');
  }
}

/**
 * Pause points for the daemon's shutdown and takeover tests: `LETHE_PAUSEPOINTS=name:MS`
 * (several separated by commas) makes the run wait MS milliseconds when it reaches `name`,
 * or less if `signal` aborts first, so a test can act while a job is surely mid-run.
 * Without the variable it is one string comparison and resolves at once.
 */
export async function pausepoint(name: string, signal?: AbortSignal): Promise<void> {
  const spec = process.env['LETHE_PAUSEPOINTS'];
  if (spec === undefined || spec === '') return;
  for (const item of spec.split(',')) {
    const [point, ms] = item.trim().split(':');
    if (point !== name || ms === undefined || !(Number(ms) > 0)) continue;
    await new Promise<void>((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', done);
        resolve();
      };
      const timer = setTimeout(done, Number(ms));
      signal?.addEventListener('abort', done, { once: true });
    });
  }
}

/**
 * The byte budget of the kill sweep: `LETHE_KILL_AFTER_BYTES=N` makes the process kill itself
 * with SIGKILL, like {@link failpoint}, once N bytes in all have been handed to the object
 * store's `put` (counted as the store reads them from the body, so the kill lands inside an
 * upload, mid-object). Null (no budget) when the variable is unset or empty; read once per
 * store opened. Only the test suite sets it.
 */
export function killAfterBytesBudget(): number | null {
  const raw = process.env['LETHE_KILL_AFTER_BYTES'];
  if (raw === undefined || raw === '') return null;
  const n = Number(raw);
  return Number.isSafeInteger(n) && n >= 0 ? n : null;
}

/** Kills the process at once (SIGKILL: no handler runs, no buffer is flushed). */
export function killNow(): never {
  process.kill(process.pid, 'SIGKILL');
  // SIGKILL to ourselves does not return; this only satisfies the type.
  throw new Error('SIGKILL did not stop the process');
}
