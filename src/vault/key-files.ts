import { chunks, inTransaction, query, type VaultContext } from './db.ts';

/** A key file object and the sha256 of its bytes, as a manifest names it. */
export interface KeyFileRef {
  readonly key: string;
  readonly sha256: string;
}

/** A cell key a snapshot needs that no key file in its store holds yet. */
export interface UnstoredCellKey {
  readonly id: string;
  readonly recipient: string;
  readonly dimensionIds: string[];
  readonly wrappedIdentity: Uint8Array;
}

const PAGE_ROWS = 2000;

/**
 * The cell keys that `snapshotId`'s cells use and that no key file in `store` holds, by
 * id, a page at a time (keyset pagination; no connection held between pages).
 */
export async function* iterateUnstoredCellKeys(
  ctx: VaultContext,
  snapshotId: string,
  store: string,
): AsyncGenerator<UnstoredCellKey> {
  let after = '';
  for (;;) {
    const { rows } = await query<{ id: string; recipient: string; dimension_ids: string[]; wrapped_identity: Buffer }>(
      ctx.pool,
      `reading the cell keys of snapshot ${snapshotId} not yet in a key file`,
      `SELECT k.id, k.recipient, k.dimension_ids, k.wrapped_identity FROM ${ctx.t.cellKeys} k
        WHERE k.id > $3
          AND k.id IN (SELECT c.key_id FROM ${ctx.t.snapshotCells} c WHERE c.snapshot_id = $1)
          AND NOT EXISTS (SELECT 1 FROM ${ctx.t.keyFileEntries} e WHERE e.store = $2 AND e.key_id = k.id)
        ORDER BY k.id COLLATE "C" LIMIT $4`,
      [snapshotId, store, after, PAGE_ROWS],
    );
    for (const r of rows) {
      yield { id: r.id, recipient: r.recipient, dimensionIds: r.dimension_ids, wrappedIdentity: r.wrapped_identity };
    }
    const last = rows.at(-1);
    if (last === undefined || rows.length < PAGE_ROWS) return;
    after = last.id;
  }
}

/** Records a stored key file and the keys it holds, in one transaction. */
export async function recordKeyFile(
  ctx: VaultContext,
  file: { store: string; key: string; sha256: string; snapshotId: string; keyIds: readonly string[] },
): Promise<void> {
  const doing = `recording key file ${file.key}`;
  await inTransaction(ctx.pool, doing, async (client) => {
    await query(client, doing, `INSERT INTO ${ctx.t.keyFiles} (store, key, sha256, snapshot_id) VALUES ($1, $2, $3, $4)`, [
      file.store,
      file.key,
      file.sha256,
      file.snapshotId,
    ]);
    for (const batch of chunks(file.keyIds)) {
      await query(
        client,
        doing,
        `INSERT INTO ${ctx.t.keyFileEntries} (store, key_id, key_file) SELECT $1, unnest($2::text[]), $3`,
        [file.store, batch, file.key],
      );
    }
  });
}

/** The key files in `store` holding the keys a snapshot's cells use, by object key. */
export async function keyFilesForSnapshot(ctx: VaultContext, snapshotId: string, store: string): Promise<KeyFileRef[]> {
  const { rows } = await query<KeyFileRef>(
    ctx.pool,
    `finding the key files of snapshot ${snapshotId}`,
    `SELECT f.key, f.sha256 FROM ${ctx.t.keyFiles} f
      WHERE f.store = $2
        AND f.key IN (SELECT e.key_file FROM ${ctx.t.keyFileEntries} e
                        JOIN ${ctx.t.snapshotCells} c ON c.key_id = e.key_id
                       WHERE c.snapshot_id = $1 AND e.store = $2)
      ORDER BY f.key COLLATE "C"`,
    [snapshotId, store],
  );
  return rows;
}
