/**
 * The order tenant ids are listed in. Tenants are usually integers (`1, 2, 10, 11`), and text
 * order (`1, 10, 11, 2`) reads as a mistake; ids need not be integers, though.
 */

const INTEGER = /^-?\d+$/;

/**
 * Compares two tenant ids: numerically when both are integers, text (code-unit) order when
 * neither is, integers before the rest otherwise. A total order, so a list of integers sorts
 * numerically and any list sorts the same way every time.
 */
export function compareTenants(a: string, b: string): number {
  const ai = INTEGER.test(a);
  const bi = INTEGER.test(b);
  if (ai && bi) {
    const x = BigInt(a);
    const y = BigInt(b);
    return x < y ? -1 : x > y ? 1 : a < b ? -1 : a > b ? 1 : 0;
  }
  if (ai !== bi) return ai ? -1 : 1;
  return a < b ? -1 : a > b ? 1 : 0;
}

/** A sorted copy of `tenants` (see {@link compareTenants}). */
export function sortTenants(tenants: Iterable<string>): string[] {
  return [...tenants].sort(compareTenants);
}

/**
 * Compares key or cell ids such as `user:3/21` or `messages/10/2025-01/…` with their runs
 * of digits taken as numbers (`user:3/…` before `user:10/…`); text order otherwise.
 */
export function compareNatural(a: string, b: string): number {
  const as = a.split(/(\d+)/);
  const bs = b.split(/(\d+)/);
  for (let i = 0; i < Math.min(as.length, bs.length); i++) {
    const x = as[i] ?? '';
    const y = bs[i] ?? '';
    if (x === y) continue;
    // Odd positions are the digit runs.
    if (i % 2 === 1) {
      const d = compareTenants(x, y);
      if (d !== 0) return d;
    }
    return x < y ? -1 : 1;
  }
  return as.length - bs.length || (a < b ? -1 : a > b ? 1 : 0);
}
