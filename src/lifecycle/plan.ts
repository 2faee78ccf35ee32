import { compareTenants, sortTenants } from '../util/tenant-order.ts';
import { periodRange } from '../cells/periods.ts';
import { subjectsOf } from '../cells/ids.ts';
import { activeHolds, caseKeyId, holdCovers } from './hold-match.ts';
import { addDuration, formatDuration, maxAgeFor, type RetentionRules, type SnapshotPolicy } from './rules.ts';
import type {
  CellKeyFacts,
  CellKeyUsage,
  DestructionCause,
  EraseRequest,
  EraseScope,
  HeldCellKeyFacts,
  Hold,
  KeyUsage,
  SnapshotFacts,
} from './types.ts';

export type { CellKeyUsage };

/**
 * The lifecycle planner: a pure function from the vault's and the bucket's state, the
 * rules, holds, requests and a clock to the list of actions that are due, each with its
 * reason. It reads nothing and changes nothing; `lethe lifecycle apply` executes the
 * actions in array order, `lethe lifecycle plan` prints them. Output order is fixed (by
 * kind, then by id) so that two plans of the same state are byte-identical.
 */

// --- input ---------------------------------------------------------------------------

export interface PlanDimensionKey {
  readonly id: string;
  readonly kind: 'tenant' | 'user' | 'conversation' | 'period' | 'case' | 'system';
  readonly tenant: string | null;
  readonly destroyed: boolean;
}

export interface PlanCellKey extends CellKeyFacts {
  readonly usage: CellKeyUsage;
}

export type PlanHeldCellKey = HeldCellKeyFacts;

export interface PlanSnapshot extends SnapshotFacts {
  /** The manifest object's lock; null when it has none (or the manifest is gone). */
  readonly manifestRetainUntil: Date | null;
  /**
   * True when the vault records writing the manifest to the store being planned for. A
   * snapshot of another store (same vault, another bucket or prefix) is never expired from
   * this one: its manifest here, if any, is a copy lethe did not write.
   */
  readonly manifestInStore: boolean;
}

export type PlanObjectKind = 'pack' | 'segment' | 'key-file' | 'vault-backup';

export interface PlanObject {
  readonly key: string;
  readonly kind: PlanObjectKind;
  readonly size: number;
  readonly lastModified: Date;
  /** The object's lock; null when it has none. */
  readonly retainUntil: Date | null;
  /**
   * Snapshots (any status) that need the object: for a pack, those with cells in it; for a
   * segment, those whose tree lists it. Empty
   * for vault backups. (`key-file` objects belonged to the per-cell key format, whose
   * vaults this lethe refuses: a vault it opens records none.)
   */
  readonly referencedBy: readonly string[];
  /** Tenants with cells in the pack; `''` stands for system. */
  readonly tenants: readonly string[];
  /**
   * True when the vault records lethe writing this object to this store. Anything else (a
   * file someone put in the bucket, a copy of another store's objects) is only reported in
   * `unknownObjects`: lifecycle never deletes, or extends the lock of, an object it did not write.
   */
  readonly recorded: boolean;
}

export type PlanKeyUsage = KeyUsage;

/**
 * Everything the planner decides on. {@link loadPlanInput} (src/lifecycle/state.ts) builds
 * it from a vault and a store; tests build it by hand.
 */
export interface PlanInput {
  readonly now: Date;
  /** Includes the snapshot keep policy and graceWindowDays. */
  readonly rules: RetentionRules;
  /** storage.objectLock: packs of live snapshots stay locked retainDays after the snapshot. */
  readonly objectLock: { readonly mode: 'GOVERNANCE' | 'COMPLIANCE'; readonly retainDays: number } | null;
  readonly dimensionKeys: readonly PlanDimensionKey[];
  /**
   * Cell keys with their tuple facts: at least every one a legal hold (active, or re-wrapped
   * for a case) concerns. The loader passes only those, so memory follows held data.
   */
  readonly cellKeys: readonly PlanCellKey[];
  /**
   * What each live period key protects, aggregated by the vault. When given it is the
   * destroy-key impact of a retention shred; without it (hand-built inputs) the impact is
   * summed from `cellKeys`.
   */
  readonly periodKeyUsage?: readonly PlanKeyUsage[];
  readonly heldCellKeys: readonly PlanHeldCellKey[];
  readonly holds: readonly Hold[];
  readonly eraseRequests: readonly EraseRequest[];
  readonly snapshots: readonly PlanSnapshot[];
  /** Objects under `packs/` and `vault/`. */
  readonly objects: readonly PlanObject[];
}

// --- output --------------------------------------------------------------------------

export interface DestroyImpact {
  /** Cell keys that need the key (they become unreadable). */
  cellKeys: number;
  /** Cell rows of complete snapshots using those cell keys. */
  cells: number;
  bytesPlain: number;
  /** Snapshots holding affected cells: at least this many (the largest count of one cell key). */
  snapshots: number;
  tenants: string[];
}

export type PlanAction =
  | {
      kind: 'rewrap';
      caseId: string;
      tenant: string;
      caseKeyId: string;
      cellKeyId: string;
      /** The period key about to be destroyed. */
      replaces: string;
      /** The dimension keys of the new hold encapsulation, in derivation order. */
      dimensionIds: string[];
      reason: string;
    }
  | { kind: 'destroy-key'; keyId: string; cause: DestructionCause; reason: string; impact: DestroyImpact }
  | { kind: 'finish-request'; requestId: string; reason: string }
  | { kind: 'expire-snapshot'; snapshotId: string; manifestKey: string; reason: string }
  | { kind: 'extend-lock'; objectKey: string; retainUntil: string; reason: string }
  | { kind: 'delete-object'; objectKey: string; objectKind: PlanObjectKind; size: number; reason: string };

export interface PlanDeferred {
  objectKey?: string;
  snapshotId?: string;
  /** When it can go (the lock's end), or null when it waits for something else. */
  until: string | null;
  reason: string;
}

/** An object under lethe's prefixes that the vault has no record of lethe writing to this store. */
export interface PlanUnknownObject {
  objectKey: string;
  size: number;
  lastModified: string;
}

export interface PlanBlocked {
  keyId: string;
  cases: string[];
  reason: string;
}

export interface PlanPendingRequest {
  id: string;
  scope: EraseScope;
  /** Null for a person across every tenant. */
  tenant: string | null;
  subject: string | null;
  requestedBy: string;
}

export interface Plan {
  now: string;
  /** Execution order: finish-request, rewrap, destroy-key, expire-snapshot, extend-lock, delete-object. */
  actions: PlanAction[];
  deferred: PlanDeferred[];
  /** Objects lethe has no record of writing here: reported, never touched. */
  unknownObjects: PlanUnknownObject[];
  blocked: PlanBlocked[];
  pendingRequests: PlanPendingRequest[];
  summary: {
    keysToDestroy: number;
    cellsRewrapped: number;
    snapshotsToExpire: number;
    objectsToDelete: number;
    bytesToDelete: number;
    tenants: string[];
  };
}

// --- planning ------------------------------------------------------------------------

/**
 * Plans every lifecycle action due at `input.now`. Pure and deterministic. See
 * docs/lifecycle.md for the rules; in short:
 * - a period key is destroyed once its period's end plus the class's maximum age has
 *   passed, after the cells an active hold covers are re-wrapped to the case key;
 * - a case key is destroyed once every selector of its case is released, unless another
 *   active hold still reads cells only through it (then it is listed as blocked);
 * - approved deletion requests a crash left unfinished are finished; pending ones listed;
 * - snapshots outside the keep policy are expired (deferred while their manifest is locked);
 * - packs no live snapshot needs, of no held tenant, are deleted once their
 *   lock has passed (deferred before); vault backups older than the grace window too;
 * - with object lock, objects live snapshots need get their lock extended.
 */
export function planLifecycle(input: PlanInput): Plan {
  const now = input.now;
  const dims = new Map(input.dimensionKeys.map((k) => [k.id, k]));
  const alive = (id: string): boolean => dims.get(id)?.destroyed === false;
  const holds = activeHolds(input.holds);
  const holdsByTenant = new Map<string, Hold[]>();
  for (const hold of holds) push(holdsByTenant, hold.tenant, hold);
  const deferred: PlanDeferred[] = [];
  const blocked: PlanBlocked[] = [];

  // Cell keys by the dimension keys they need, for impact and holds.
  const cellKeysByDim = new Map<string, PlanCellKey[]>();
  for (const key of input.cellKeys) {
    for (const dim of key.dimensionIds) push(cellKeysByDim, dim, key);
  }
  const usageByKey = input.periodKeyUsage === undefined ? null : new Map(input.periodKeyUsage.map((u) => [u.keyId, u]));
  const heldByKey = new Map<string, PlanHeldCellKey[]>();
  for (const held of input.heldCellKeys) push(heldByKey, held.keyId, held);

  // --- deletion requests ---
  const finish: PlanAction[] = input.eraseRequests
    .filter((r) => r.status === 'approved')
    .sort((a, b) => cmp(a.id, b.id))
    .map((r) => ({
      kind: 'finish-request',
      requestId: r.id,
      reason:
        `deletion request ${r.id} (${describeScope(r.scope, r.tenant, r.subject)}) was approved by ` +
        `${r.approvedBy ?? 'unknown'}${r.approvedAt === null ? '' : ` on ${day(r.approvedAt)}`} but not carried out to the end: finish it`,
    }));
  const pendingRequests: PlanPendingRequest[] = input.eraseRequests
    .filter((r) => r.status === 'pending')
    .sort((a, b) => cmp(a.id, b.id))
    .map((r) => ({ id: r.id, scope: r.scope, tenant: r.tenant, subject: r.subject, requestedBy: r.requestedBy }));

  // --- retention of period keys ---
  const rewraps: Extract<PlanAction, { kind: 'rewrap' }>[] = [];
  const destroys: Extract<PlanAction, { kind: 'destroy-key' }>[] = [];
  const destroyed = new Set<string>();
  for (const key of [...input.dimensionKeys].sort((a, b) => cmp(a.id, b.id))) {
    if (key.kind !== 'period' || key.destroyed) continue;
    const parsed = parsePeriodKeyId(key.id);
    if (parsed === null) continue;
    const range = periodRange(parsed.period);
    if (range === null) continue; // a label we cannot read is never shredded
    const maxAge = maxAgeFor(input.rules, parsed.tenant, parsed.class);
    const dueSince = addDuration(range.end, maxAge);
    if (dueSince === null || dueSince.getTime() > now.getTime()) continue;

    const affected = cellKeysByDim.get(key.id) ?? [];
    const wrapped = new Set<string>();
    const own: typeof rewraps = [];
    const deadCases = new Set<string>();
    for (const cell of affected) {
      const tenantHolds = holdsByTenant.get(cell.tenant ?? '');
      if (tenantHolds === undefined) continue;
      // A cell another destroyed key already shreds cannot be (and need not be) re-wrapped.
      if (!cell.dimensionIds.every((d) => d === key.id || alive(d))) continue;
      const already = new Set(
        (heldByKey.get(cell.id) ?? []).filter((h) => h.dimensionIds.every(alive)).map((h) => h.caseId),
      );
      for (const hold of tenantHolds) {
        if (already.has(hold.caseId) || !holdCovers(hold, cell)) continue;
        const tag = `${hold.caseId}\u0000${cell.id}`;
        if (wrapped.has(tag)) continue;
        wrapped.add(tag);
        const caseKey = caseKeyId(hold.tenant, hold.caseId);
        if (dims.get(caseKey)?.destroyed === true) {
          // The case id was released (its key destroyed) and placed again: nothing can be
          // wrapped to a destroyed key, so the period key waits rather than lose held data.
          deadCases.add(hold.caseId);
          continue;
        }
        own.push({
          kind: 'rewrap',
          caseId: hold.caseId,
          tenant: hold.tenant,
          caseKeyId: caseKey,
          cellKeyId: cell.id,
          replaces: key.id,
          dimensionIds: [caseKey, ...cell.dimensionIds.filter((d) => d !== key.id)],
          reason:
            `legal hold ${hold.caseId} covers ${describeCell(cell)}: its key is re-wrapped to the case's key ` +
            `so the held data stays readable after the ${parsed.class} of tenant ${parsed.tenant} ` +
            `${periodWords(parsed.period)} are destroyed`,
        });
      }
    }
    if (deadCases.size > 0) {
      const names = [...deadCases].sort(cmp);
      blocked.push({
        keyId: key.id,
        cases: names,
        reason:
          `${parsed.class} of tenant ${parsed.tenant} ${periodWords(parsed.period)} are past retention, but ` +
          `case${names.length > 1 ? 's' : ''} ${names.join(', ')} hold${names.length > 1 ? '' : 's'} some of them and ` +
          `${names.length > 1 ? 'their keys were' : 'its key was'} destroyed by an earlier release: ` +
          `place the hold again under a new case id`,
      });
      continue;
    }
    rewraps.push(...own);
    const maxAgeText = formatDuration(maxAge);
    destroyed.add(key.id);
    destroys.push({
      kind: 'destroy-key',
      keyId: key.id,
      cause: { kind: 'retention', class: parsed.class, period: parsed.period, maxAge: maxAgeText, dueSince: dueSince.toISOString() },
      reason:
        `${parsed.class} of tenant ${parsed.tenant} ${periodWords(parsed.period)} are past the ${maxAgeText} ` +
        `retention since ${day(dueSince)}`,
      impact: impactOfPeriod(usageByKey, key.id, affected, parsed.tenant),
    });
  }

  // --- released cases ---
  const cellFacts = new Map(input.cellKeys.map((k) => [k.id, k]));
  const cases = new Map<string, { tenant: string; caseId: string; holds: Hold[] }>();
  for (const hold of input.holds) {
    const id = caseKeyId(hold.tenant, hold.caseId);
    const entry = cases.get(id) ?? { tenant: hold.tenant, caseId: hold.caseId, holds: [] };
    entry.holds.push(hold);
    cases.set(id, entry);
  }
  for (const [keyId, c] of [...cases].sort((a, b) => cmp(a[0], b[0]))) {
    if (c.holds.some((h) => h.releasedAt === null) || !alive(keyId)) continue;
    const heldCells = input.heldCellKeys.filter((h) => h.caseId === c.caseId && h.dimensionIds.includes(keyId));
    // Another case's active hold that reads a cell only through this case key would lose it.
    const blockers = new Set<string>();
    for (const held of heldCells) {
      const cell = cellFacts.get(held.keyId);
      if (cell === undefined) continue;
      for (const hold of holds) {
        if (!holdCovers(hold, cell)) continue;
        const wrappings = [cell.dimensionIds, ...(heldByKey.get(cell.id) ?? []).map((h) => h.dimensionIds)];
        const readable = wrappings.some(
          (w) => !w.includes(keyId) && w.every((d) => alive(d) && !destroyed.has(d)),
        );
        if (!readable) blockers.add(hold.caseId);
      }
    }
    const released = c.holds.map((h) => h.releasedAt).filter((d): d is Date => d !== null);
    const last = released.reduce((a, b) => (a.getTime() >= b.getTime() ? a : b));
    if (blockers.size > 0) {
      const names = [...blockers].sort(cmp);
      blocked.push({
        keyId,
        cases: names,
        reason:
          `case ${c.caseId} of tenant ${c.tenant} was released, but its key is the only way left to read ` +
          `cells that case${names.length > 1 ? 's' : ''} ${names.join(', ')} still hold${names.length > 1 ? '' : 's'}: kept until ${names.length > 1 ? 'they are' : 'it is'} released`,
      });
      continue;
    }
    const cellsOfCase = heldCells
      .map((h) => cellFacts.get(h.keyId))
      .filter((k): k is PlanCellKey => k !== undefined);
    destroyed.add(keyId);
    destroys.push({
      kind: 'destroy-key',
      keyId,
      cause: { kind: 'hold-release', case: c.caseId },
      reason:
        `legal hold ${c.caseId} of tenant ${c.tenant} was released on ${day(last)}: the data it kept ` +
        `past its retention is destroyed with the case key`,
      impact: impactOf(cellsOfCase, [c.tenant]),
    });
  }
  rewraps.sort((a, b) => cmp(a.replaces, b.replaces) || cmp(a.cellKeyId, b.cellKeyId) || cmp(a.caseId, b.caseId));
  destroys.sort((a, b) => cmp(a.keyId, b.keyId));

  // --- snapshots ---
  const complete = input.snapshots.filter((s) => s.status === 'complete' && s.completedAt !== null);
  const kept = keepSnapshots(complete, input.rules.snapshots);
  const expiring = new Set<string>();
  const expires: PlanAction[] = [];
  for (const snap of [...complete].sort((a, b) => cmp(a.id, b.id))) {
    if (kept.has(snap.id) || snap.manifestKey === null) continue;
    const why = `snapshot ${snap.id} of ${day(snap.completedAt ?? snap.startedAt)} is outside the keep policy (${describePolicy(input.rules.snapshots)})`;
    if (!snap.manifestInStore) {
      deferred.push({
        snapshotId: snap.id,
        until: null,
        reason: `${why}, but it was written to another store: run lifecycle apply with that store's config`,
      });
      continue;
    }
    if (snap.manifestRetainUntil !== null && snap.manifestRetainUntil.getTime() > now.getTime()) {
      deferred.push({
        snapshotId: snap.id,
        until: snap.manifestRetainUntil.toISOString(),
        reason: `${why}, but its manifest is locked until ${day(snap.manifestRetainUntil)}`,
      });
      continue;
    }
    expiring.add(snap.id);
    expires.push({ kind: 'expire-snapshot', snapshotId: snap.id, manifestKey: snap.manifestKey, reason: why });
  }

  // --- objects ---
  const snapshots = new Map(input.snapshots.map((s) => [s.id, s]));
  const live = (id: string): boolean => {
    const s = snapshots.get(id);
    return s !== undefined && (s.status === 'running' || (s.status === 'complete' && !expiring.has(id)));
  };
  const running = input.snapshots.filter((s) => s.status === 'running');
  const oldestRunning = running.reduce<Date | null>(
    (min, s) => (min === null || s.startedAt.getTime() < min.getTime() ? s.startedAt : min),
    null,
  );
  const heldTenants = new Set(holds.map((h) => h.tenant));
  const extends_: PlanAction[] = [];
  const deletes: Extract<PlanAction, { kind: 'delete-object' }>[] = [];
  const lockedUntil = (o: PlanObject): Date | null =>
    o.retainUntil !== null && o.retainUntil.getTime() > now.getTime() ? o.retainUntil : null;

  const unknownObjects: PlanUnknownObject[] = [];
  for (const obj of [...input.objects].sort((a, b) => cmp(a.key, b.key))) {
    if (!obj.recorded) {
      unknownObjects.push({ objectKey: obj.key, size: obj.size, lastModified: obj.lastModified.toISOString() });
      continue;
    }
    const what = obj.kind === 'pack' ? 'pack' : obj.kind === 'segment' ? 'segment' : obj.kind === 'key-file' ? 'key file' : 'vault backup';
    if (obj.kind === 'vault-backup') {
      const created = vaultBackupTime(obj);
      const end = new Date(created.getTime() + input.rules.graceWindowDays * DAY_MS);
      if (end.getTime() > now.getTime()) continue;
      const why = `vault backup of ${day(created)} is older than the ${input.rules.graceWindowDays}-day grace window`;
      const locked = lockedUntil(obj);
      if (locked !== null) {
        deferred.push({ objectKey: obj.key, until: locked.toISOString(), reason: `${why}, but it is locked until ${day(locked)}` });
        continue;
      }
      deletes.push({ kind: 'delete-object', objectKey: obj.key, objectKind: obj.kind, size: obj.size, reason: why });
      continue;
    }
    const liveRefs = obj.referencedBy.filter(live);
    if (liveRefs.length > 0) {
      if (input.objectLock === null) continue;
      let required: Date | null = null;
      for (const id of liveRefs) {
        const done = snapshots.get(id)?.completedAt ?? null;
        if (done === null) continue; // a running backup locks what it writes itself
        const until = new Date(done.getTime() + input.objectLock.retainDays * DAY_MS);
        if (required === null || until.getTime() > required.getTime()) required = until;
      }
      if (required !== null && (obj.retainUntil === null || obj.retainUntil.getTime() < required.getTime())) {
        extends_.push({
          kind: 'extend-lock',
          objectKey: obj.key,
          retainUntil: required.toISOString(),
          reason:
            `${what} is still used by ${plural(liveRefs.length, 'snapshot')}: it must stay locked until ${day(required)} ` +
            `(${input.objectLock.retainDays} days after the newest of them), but ` +
            (obj.retainUntil === null ? 'it has no lock' : `its lock ends ${day(obj.retainUntil)}`),
        });
      }
      continue;
    }
    const held = obj.tenants.filter((t) => heldTenants.has(t)).sort(compareTenants);
    if (held.length > 0) {
      const caseNames = [...new Set(holds.filter((h) => held.includes(h.tenant)).map((h) => h.caseId))].sort(cmp);
      deferred.push({
        objectKey: obj.key,
        until: null,
        reason: `${what} is no longer used by a live snapshot, but it holds data of ${tenantWords(held)} under legal hold (${caseNames.join(', ')})`,
      });
      continue;
    }
    if (obj.referencedBy.length === 0 && oldestRunning !== null && obj.lastModified.getTime() >= oldestRunning.getTime() - BACKUP_SLACK_MS) {
      deferred.push({
        objectKey: obj.key,
        until: null,
        reason: `${what} is not referenced yet and a backup is running: it may be that backup's`,
      });
      continue;
    }
    const why =
      obj.referencedBy.length === 0
        ? `${what} is referenced by no snapshot (left by an interrupted backup)`
        : `${what} is used only by ${describeSnapshots(obj.referencedBy, expiring)}`;
    const locked = lockedUntil(obj);
    if (locked !== null) {
      deferred.push({ objectKey: obj.key, until: locked.toISOString(), reason: `${why}, but it is locked until ${day(locked)}` });
      continue;
    }
    deletes.push({ kind: 'delete-object', objectKey: obj.key, objectKind: obj.kind, size: obj.size, reason: why });
  }

  const actions: PlanAction[] = [...finish, ...rewraps, ...destroys, ...expires, ...extends_, ...deletes];
  const tenants = new Set<string>();
  for (const d of destroys) for (const t of d.impact.tenants) tenants.add(t);
  for (const r of rewraps) tenants.add(r.tenant);
  for (const r of input.eraseRequests) if (r.status === 'approved' && r.tenant !== null) tenants.add(r.tenant);
  return {
    now: now.toISOString(),
    actions,
    deferred: deferred.sort((a, b) => cmp(a.snapshotId ?? a.objectKey ?? '', b.snapshotId ?? b.objectKey ?? '')),
    unknownObjects,
    blocked: blocked.sort((a, b) => cmp(a.keyId, b.keyId)),
    pendingRequests,
    summary: {
      keysToDestroy: destroys.length,
      cellsRewrapped: rewraps.length,
      snapshotsToExpire: expires.length,
      objectsToDelete: deletes.length,
      bytesToDelete: deletes.reduce((n, d) => n + d.size, 0),
      tenants: sortTenants(tenants),
    },
  };
}

// --- snapshot keep policy --------------------------------------------------------------

const BUCKETS: readonly { rule: keyof SnapshotPolicy; key: (d: Date) => string }[] = [
  { rule: 'keepHourly', key: (d) => d.toISOString().slice(0, 13) },
  { rule: 'keepDaily', key: (d) => d.toISOString().slice(0, 10) },
  { rule: 'keepWeekly', key: isoWeek },
  { rule: 'keepMonthly', key: (d) => d.toISOString().slice(0, 7) },
  { rule: 'keepYearly', key: (d) => d.toISOString().slice(0, 4) },
];

/**
 * The ids of the complete snapshots `policy` keeps (all when null), restic's way: newest
 * first, `keepLast` keeps the first N; each bucket rule keeps the newest snapshot of each
 * new bucket until its count is used up. The newest snapshot is always kept.
 */
export function keepSnapshots(complete: readonly PlanSnapshot[], policy: SnapshotPolicy | null): Set<string> {
  const newestFirst = [...complete].sort(
    (a, b) => (b.completedAt?.getTime() ?? 0) - (a.completedAt?.getTime() ?? 0) || cmp(b.id, a.id),
  );
  if (policy === null) return new Set(newestFirst.map((s) => s.id));
  const kept = new Set<string>();
  newestFirst.slice(0, Math.max(policy.keepLast, 1)).forEach((s) => kept.add(s.id));
  for (const { rule, key } of BUCKETS) {
    let left = policy[rule];
    let lastBucket: string | null = null;
    for (const snap of newestFirst) {
      if (left <= 0) break;
      const bucket = key(snap.completedAt ?? snap.startedAt);
      if (bucket === lastBucket) continue;
      lastBucket = bucket;
      kept.add(snap.id);
      left -= 1;
    }
  }
  return kept;
}

function isoWeek(d: Date): string {
  const day = new Date(Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate()));
  const weekday = (day.getUTCDay() + 6) % 7; // Monday = 0
  const thursday = new Date(day.getTime() + (3 - weekday) * DAY_MS);
  const year = thursday.getUTCFullYear();
  const week = Math.floor((thursday.getTime() - Date.UTC(year, 0, 1)) / (7 * DAY_MS)) + 1;
  return `${year}-W${String(week).padStart(2, '0')}`;
}

function describePolicy(policy: SnapshotPolicy | null): string {
  if (policy === null) return 'keep all';
  const parts = (Object.keys(policy) as (keyof SnapshotPolicy)[])
    .filter((k) => policy[k] > 0)
    .map((k) => `${k} ${policy[k]}`);
  return parts.join(', ');
}

// --- helpers ---------------------------------------------------------------------------

const DAY_MS = 86_400_000;
/** Clock skew between the vault database and the object store tolerated when guarding a running backup. */
const BACKUP_SLACK_MS = 10 * 60_000;

/**
 * Splits `period:<enc tenant>/<class>/<enc label>` (src/cells/ids.ts periodKeyId); null for
 * anything else.
 */
export function parsePeriodKeyId(id: string): { tenant: string; class: string; period: string } | null {
  if (!id.startsWith('period:')) return null;
  const parts = id.slice('period:'.length).split('/');
  if (parts.length !== 3) return null;
  const [tenant = '', dataClass = '', period = ''] = parts;
  try {
    return { tenant: decodeURIComponent(tenant), class: dataClass, period: decodeURIComponent(period) };
  } catch {
    return null;
  }
}

/** The creation time in a vault backup's name (`vault/<YYYYMMDDTHHMMSSmmmZ>.age`), else lastModified. */
function vaultBackupTime(obj: PlanObject): Date {
  const m = /(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})(\d{3})Z\.age(?:\.sig)?$/.exec(obj.key);
  if (m === null) return obj.lastModified;
  const [, y, mo, d, h, mi, s, ms] = m.map(Number);
  return new Date(Date.UTC(y ?? 0, (mo ?? 1) - 1, d, h, mi, s, ms));
}

/** A period key's impact: the vault's aggregate when the loader gave one, else summed here. */
function impactOfPeriod(
  usage: ReadonlyMap<string, PlanKeyUsage> | null,
  keyId: string,
  affected: readonly PlanCellKey[],
  tenant: string,
): DestroyImpact {
  if (usage === null) return impactOf(affected, [tenant]);
  const u = usage.get(keyId);
  return { cellKeys: u?.cellKeys ?? 0, cells: u?.cells ?? 0, bytesPlain: u?.bytesPlain ?? 0, snapshots: u?.snapshots ?? 0, tenants: [tenant] };
}

function impactOf(cells: readonly PlanCellKey[], fallbackTenants: readonly string[]): DestroyImpact {
  const tenants = new Set<string>(fallbackTenants);
  let count = 0;
  let bytesPlain = 0;
  let snapshots = 0;
  for (const c of cells) {
    count += c.usage.cells;
    bytesPlain += c.usage.bytesPlain;
    snapshots = Math.max(snapshots, c.usage.snapshots);
    if (c.tenant !== null) tenants.add(c.tenant);
  }
  return { cellKeys: cells.length, cells: count, bytesPlain, snapshots, tenants: sortTenants(tenants) };
}

function push<K, V>(map: Map<K, V[]>, key: K, value: V): void {
  const list = map.get(key);
  if (list === undefined) map.set(key, [value]);
  else list.push(value);
}

/** Code-unit order: the same on every machine and locale. */
function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** `2026-01-31`, or `2026-01-31 14:05 UTC` when not midnight. */
function day(d: Date): string {
  const iso = d.toISOString();
  return iso.endsWith('T00:00:00.000Z') ? iso.slice(0, 10) : `${iso.slice(0, 10)} ${iso.slice(11, 16)} UTC`;
}

function periodWords(label: string): string {
  if (/^\d{4}-W\d{2}$/.test(label)) return `of week ${label}`;
  if (/^\d{4}-\d{2}-\d{2}$/.test(label)) return `of ${label}`;
  return `from ${label}`;
}

function describeCell(cell: CellKeyFacts): string {
  const subjects = subjectsOf(cell);
  const who = subjects.length === 0 ? '' : ` by user${subjects.length === 1 ? '' : 's'} ${subjects.join(', ')}`;
  const where = cell.conversation === null ? '' : ` in conversation ${cell.conversation}`;
  const when = cell.period === null || cell.period === '-' ? '' : ` ${periodWords(cell.period)}`;
  const tenant = cell.tenant === null ? ' (system)' : ` of tenant ${cell.tenant}`;
  return `the ${cell.class}${tenant}${who}${where}${when}`;
}

function describeScope(scope: EraseScope, tenant: string | null, subject: string | null): string {
  // A person across every tenant (erase request --all-tenants): the tenants are found at execution.
  if (tenant === null) return `${scope} ${subject ?? '?'} in every tenant`;
  switch (scope) {
    case 'tenant':
      return `all data of tenant ${tenant}`;
    case 'user':
      return `user ${subject ?? '?'} of tenant ${tenant}`;
    case 'conversation':
      return `conversation ${subject ?? '?'} of tenant ${tenant}`;
  }
}

function describeSnapshots(ids: readonly string[], expiring: ReadonlySet<string>): string {
  const now = ids.filter((id) => expiring.has(id)).length;
  if (now === ids.length) return `${plural(ids.length, 'snapshot')}, expiring in this plan`;
  if (now === 0) return `${plural(ids.length, 'snapshot')}, already expired or abandoned`;
  return `${plural(ids.length, 'snapshot')}, expired, abandoned or expiring in this plan`;
}

function tenantWords(tenants: readonly string[]): string {
  const named = tenants.map((t) => (t === '' ? 'system' : t));
  return `${tenants.length > 1 ? 'tenants' : 'tenant'} ${named.join(', ')}`;
}

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}
