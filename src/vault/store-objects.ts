import { chunks, query, type VaultContext } from './db.ts';

/** What lethe writes to a store and may later delete there. */
export type StoreObjectKind = 'pack' | 'key-file' | 'manifest' | 'segment' | 'vault-backup';

export interface StoreObject {
  readonly key: string;
  readonly kind: StoreObjectKind;
  readonly snapshotId: string | null;
}

/**
 * Records that lethe is writing `objects` to `store` (its description, e.g.
 * `s3://bucket/prefix/`). Called before an upload starts, so an upload a crash interrupts is
 * still known to be lethe's. Recording an object twice is harmless.
 */
export async function recordStoreObjects(ctx: VaultContext, store: string, objects: readonly StoreObject[]): Promise<void> {
  for (const batch of chunks(objects)) {
    await query(
      ctx.pool,
      `recording objects written to ${store}`,
      `INSERT INTO ${ctx.t.storeObjects} (store, key, kind, snapshot_id)
       SELECT $1, * FROM unnest($2::text[], $3::text[], $4::text[]) ON CONFLICT (store, key) DO NOTHING`,
      [store, batch.map((o) => o.key), batch.map((o) => o.kind), batch.map((o) => o.snapshotId)],
    );
  }
}

/**
 * Every object the vault records lethe writing to `store`, by key. Lifecycle deletes
 * nothing that is not in this map: an object lethe has no record of writing to this store
 * (a foreign file, a copy of another store's objects) is reported instead.
 */
export async function storeObjects(ctx: VaultContext, store: string): Promise<Map<string, StoreObject>> {
  const { rows } = await query<{ key: string; kind: StoreObjectKind; snapshot_id: string | null }>(
    ctx.pool,
    `reading the objects lethe wrote to ${store}`,
    `SELECT key, kind, snapshot_id FROM ${ctx.t.storeObjects} WHERE store = $1`,
    [store],
  );
  return new Map(rows.map((r) => [r.key, { key: r.key, kind: r.kind, snapshotId: r.snapshot_id }]));
}

/** Forgets objects lifecycle has deleted from `store`. */
export async function forgetStoreObjects(ctx: VaultContext, store: string, keys: readonly string[]): Promise<void> {
  for (const batch of chunks(keys)) {
    await query(
      ctx.pool,
      `forgetting objects deleted from ${store}`,
      `DELETE FROM ${ctx.t.storeObjects} WHERE store = $1 AND key = ANY($2::text[])`,
      [store, batch],
    );
  }
}
