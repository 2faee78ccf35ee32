import { operatorName } from '../config/index.ts';

/** Human-readable byte count (binary units). */
export function bytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = n;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${unit === 0 ? value : value.toFixed(1)} ${units[unit] ?? 'B'}`;
}

/** Milliseconds as `1.2 s` or `340 ms`. */
export function duration(ms: number): string {
  return ms >= 1000 ? `${(ms / 1000).toFixed(1)} s` : `${ms} ms`;
}

/** The operator's name for the audit log: --actor, else the login name. */
export function actorName(flag: string | boolean | undefined): string {
  if (typeof flag === 'string' && flag.trim() !== '') return flag.trim();
  return operatorName();
}

/** A string option's value, or undefined. */
export function stringOpt(values: Record<string, string | boolean | undefined>, name: string): string | undefined {
  const value = values[name];
  return typeof value === 'string' ? value : undefined;
}
