import type { Config } from '../config/index.ts';
import { ErrorCode, isLetheError } from '../errors/index.ts';
import type { ObjectInfo, ObjectStore } from '../storage/index.ts';
import type { Vault } from '../vault/index.ts';
import type { PlanInput, PlanObject, PlanObjectKind, PlanSnapshot } from './plan.ts';

/** Prefixes the lifecycle deletes under, with the kind of object each holds. */
const PREFIXES: readonly [string, PlanObjectKind][] = [
  ['packs/', 'pack'],
  ['segments/', 'segment'],
  ['vault/', 'vault-backup'],
];

/** Lock lookups in flight at once (one request each on S3). */
const LOCK_CONCURRENCY = 8;

/**
 * Reads everything {@link planLifecycle} decides on: the vault's keys, cell keys (with
 * usage by complete snapshots), re-wraps, holds, deletion requests and snapshots, and the
 * store's packs and vault backups with their locks and whether the vault records
 * lethe writing each of them to this store. Changes nothing. References count across every
 * store the vault knows, so an object any snapshot still needs is never taken for an orphan.
 *
 * The store is listed before the vault is read: an object listed then either belongs to a
 * snapshot the vault already shows (running or done) or was left by a run that is over, so
 * a pack a backup is uploading right now is never taken for an orphan (the planner keeps
 * unreferenced objects younger than a running backup).
 *
 * Throws DATABASE or STORAGE errors as the vault and store raise them; a missing hold or
 * request table is an error, never an empty list (destruction fails closed).
 */
export async function loadPlanInput(vault: Vault, store: ObjectStore, config: Config, now: Date): Promise<PlanInput> {
  const listed: { info: ObjectInfo; kind: PlanObjectKind }[] = [];
  for (const [prefix, kind] of PREFIXES) {
    for await (const info of store.list(prefix)) listed.push({ info, kind });
  }

  const [dimensionKeys, cellKeys, periodKeyUsage, heldCellKeys, holds, requests, snapshotRows, objectRefs, recorded] = await Promise.all([
    vault.lifecycleDimensionKeys(),
    vault.lifecycleCellKeys(),
    vault.lifecyclePeriodKeyUsage(),
    vault.lifecycleHeldCellKeys(),
    vault.listHolds(),
    vault.listEraseRequests(),
    vault.lifecycleSnapshots(),
    vault.lifecycleObjectRefs(),
    vault.storeObjects(store.description),
  ]);

  const refs = new Map<string, { snapshots: readonly string[]; tenants: readonly string[] }>();
  for (const r of objectRefs) refs.set(r.key, r);

  const objects = (
    await mapLimit(listed, LOCK_CONCURRENCY, async ({ info, kind }): Promise<PlanObject | null> => {
      const lock = await lockOf(store, info.key);
      if (lock === undefined) return null; // deleted since the listing: nothing to plan
      const ref = refs.get(info.key);
      return {
        key: info.key,
        kind,
        size: info.size,
        lastModified: info.lastModified,
        retainUntil: lock,
        referencedBy: ref?.snapshots ?? [],
        tenants: ref?.tenants ?? [],
        recorded: recorded.get(info.key)?.kind === kind,
      };
    })
  ).filter((o): o is PlanObject => o !== null);

  // Only a complete snapshot's manifest can be due for deletion.
  const snapshots: PlanSnapshot[] = await mapLimit(snapshotRows, LOCK_CONCURRENCY, async (s) => ({
    ...s,
    manifestInStore: s.manifestKey !== null && recorded.get(s.manifestKey)?.kind === 'manifest',
    manifestRetainUntil:
      s.status === 'complete' && s.manifestKey !== null ? ((await lockOf(store, s.manifestKey)) ?? null) : null,
  }));

  const objectLock = config.storage.objectLock;
  return {
    now,
    rules: config.retention,
    objectLock: objectLock === undefined ? null : { mode: objectLock.mode, retainDays: objectLock.retainDays },
    dimensionKeys,
    cellKeys,
    periodKeyUsage,
    heldCellKeys,
    holds,
    eraseRequests: requests,
    snapshots,
    objects,
  };
}

/** The object's retain-until date, null when unlocked, undefined when the object is gone. */
async function lockOf(store: ObjectStore, key: string): Promise<Date | null | undefined> {
  try {
    const lock = await store.retention(key);
    return lock === null ? null : lock.retainUntil;
  } catch (err) {
    if (isLetheError(err, ErrorCode.NOT_FOUND)) return undefined;
    throw err;
  }
}

/** `fn` over `items` with at most `limit` calls in flight; results in input order. */
async function mapLimit<T, R>(items: readonly T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i] as T);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}
