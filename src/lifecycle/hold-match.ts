import { NO_PERIOD, subjectsOf, tenantKeyId } from '../cells/ids.ts';
import { periodOverlaps } from '../cells/periods.ts';
import type { CellKeyFacts, Hold } from './types.ts';

/**
 * Whether `hold` pins the cells of `key`: same tenant, the hold's user is one of the cell's subjects,
 * its conversation is the cell's conversation, and the cell's period overlaps the hold's
 * dates. Cells are the unit: a hold from the 15th keeps that whole month's cell (or week,
 * or day, by the configured granularity).
 */
export function holdCovers(hold: Hold, key: CellKeyFacts): boolean {
  if (key.tenant === null || key.tenant !== hold.tenant) return false;
  if (hold.user !== null && !subjectsOf(key).includes(hold.user)) return false;
  if (hold.conversation !== null && key.conversation !== hold.conversation) return false;
  return periodOverlaps(key.period ?? NO_PERIOD, hold.from, hold.to);
}

/** The case key id of a case in one tenant: `case:T/CASE`. */
export function caseKeyId(tenant: string, caseId: string): string {
  // tenantKeyId encodes the tenant the same way every other key id does.
  return `case:${tenantKeyId(tenant).slice('tenant:'.length)}/${encodeURIComponent(caseId)}`;
}

/** Active holds (not released) among `holds`. */
export function activeHolds(holds: readonly Hold[]): Hold[] {
  return holds.filter((h) => h.releasedAt === null);
}

/**
 * The active holds that would lose data if dimension key `keyId` were destroyed now: those
 * covering a cell whose only readable wrapping needs that key. `heldWrappings` lists, per
 * cell key, the dimension ids of its re-wraps for cases (which survive the original
 * wrapping's keys).
 */
export function holdsBlockingDestruction(
  keyId: string,
  holds: readonly Hold[],
  cellKeys: Iterable<CellKeyFacts>,
  heldWrappings: ReadonlyMap<string, readonly (readonly string[])[]> = new Map(),
): Hold[] {
  const active = activeHolds(holds);
  if (active.length === 0) return [];
  const blocking = new Set<Hold>();
  for (const key of cellKeys) {
    if (!key.dimensionIds.includes(keyId)) continue;
    const rewraps = heldWrappings.get(key.id) ?? [];
    for (const hold of active) {
      if (blocking.has(hold) || !holdCovers(hold, key)) continue;
      // A re-wrap for this hold's case that does not need keyId keeps the data readable.
      const own = caseKeyId(hold.tenant, hold.caseId);
      const safe = rewraps.some((dims) => dims.includes(own) && !dims.includes(keyId));
      if (!safe) blocking.add(hold);
    }
  }
  return [...blocking];
}
