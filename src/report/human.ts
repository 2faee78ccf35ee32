/** Small formatters shared by the text and HTML renderings of a report. */

/** Human-readable byte count (binary units). */
export function bytesText(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let value = n;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${unit === 0 ? String(value) : value.toFixed(1)} ${units[unit] ?? 'B'}`;
}

/** Milliseconds as `340 ms`, `12.3 s`, `4 min 05 s` or `2 h 07 min`. */
export function durationText(ms: number): string {
  if (ms < 1000) return `${ms} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)} s`;
  return secondsText(Math.round(ms / 1000));
}

/** Whole seconds as `45 s`, `4 min 05 s`, `26 h 07 min`, `24 h` or `3 d 4 h`. */
export function secondsText(s: number): string {
  const two = (n: number): string => String(n).padStart(2, '0');
  if (s < 60) return `${s} s`;
  if (s < 3600)
    return s % 60 === 0 ? `${s / 60} min` : `${Math.floor(s / 60)} min ${two(s % 60)} s`;
  if (s < 3 * 86_400) {
    const minutes = Math.floor((s % 3600) / 60);
    return minutes === 0
      ? `${Math.floor(s / 3600)} h`
      : `${Math.floor(s / 3600)} h ${two(minutes)} min`;
  }
  const hours = Math.floor((s % 86_400) / 3600);
  return hours === 0 ? `${Math.floor(s / 86_400)} d` : `${Math.floor(s / 86_400)} d ${hours} h`;
}

/** An ISO instant without its milliseconds: `2026-03-01T04:05:06Z`. */
export function instantText(iso: string): string {
  return iso.replace(/\.\d{3}Z$/, 'Z');
}

/** `n thing` / `n things`. */
export function plural(n: number, one: string, many = `${one}s`): string {
  return `${n} ${n === 1 ? one : many}`;
}
