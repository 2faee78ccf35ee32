import { ErrorCode, LetheError } from '../errors/index.ts';
import { chunks, inTransaction, query, type VaultContext } from './db.ts';

/** A key file object and the sha256 of its bytes, as a manifest names it. */
export interface KeyFileRef {
  readonly key: string;
  readonly sha256: string;
}

/** A cell key that no key file holds yet (public and AND-wrapped parts only). */
export interface UnstoredCellKey {
  readonly id: string;
  readonly recipient: string;
  readonly dimensionIds: string[];
  readonly wrappedIdentity: Uint8Array;
}

const PAGE_ROWS = 2000;

/** True when some cell key is in no key file yet. */
export async function hasUnstoredCellKeys(ctx: VaultContext): Promise<boolean> {
  const { rows } = await query<{ any: boolean }>(
    ctx.pool,
    'looking for cell keys not yet in a key file',
    `SELECT EXISTS (SELECT 1 FROM ${ctx.t.cellKeys} WHERE key_file IS NULL) AS any`,
  );
  return rows[0]?.any === true;
}

/** Cell keys in no key file yet, by id, a page at a time (keyset pagination). */
export async function* iterateUnstoredCellKeys(ctx: VaultContext): AsyncGenerator<UnstoredCellKey> {
  let after = '';
  for (;;) {
    const { rows } = await query<{ id: string; recipient: string; dimension_ids: string[]; wrapped_identity: Buffer }>(
      ctx.pool,
      'reading cell keys not yet in a key file',
      `SELECT id, recipient, dimension_ids, wrapped_identity FROM ${ctx.t.cellKeys}
        WHERE key_file IS NULL AND id > $1 ORDER BY id LIMIT $2`,
      [after, PAGE_ROWS],
    );
    for (const r of rows) {
      yield { id: r.id, recipient: r.recipient, dimensionIds: r.dimension_ids, wrappedIdentity: r.wrapped_identity };
    }
    const last = rows.at(-1);
    if (last === undefined || rows.length < PAGE_ROWS) return;
    after = last.id;
  }
}

/**
 * Records a stored key file and marks the keys it holds, in one transaction. Throws VAULT
 * when a key named is unknown or already in another key file (two writers: a bug).
 */
export async function recordKeyFile(
  ctx: VaultContext,
  file: { key: string; sha256: string; snapshotId: string; keyIds: readonly string[] },
): Promise<void> {
  const doing = `recording key file ${file.key}`;
  await inTransaction(ctx.pool, doing, async (client) => {
    await query(client, doing, `INSERT INTO ${ctx.t.keyFiles} (key, sha256, snapshot_id) VALUES ($1, $2, $3)`, [
      file.key,
      file.sha256,
      file.snapshotId,
    ]);
    for (const batch of chunks(file.keyIds)) {
      const { rowCount } = await query(
        client,
        doing,
        `UPDATE ${ctx.t.cellKeys} SET key_file = $1 WHERE id = ANY($2::text[]) AND key_file IS NULL`,
        [file.key, batch],
      );
      if (rowCount !== batch.length) {
        throw new LetheError(ErrorCode.VAULT, `${doing}: ${batch.length - (rowCount ?? 0)} of its keys are unknown or already in another key file`);
      }
    }
  });
}

/** The key files holding the keys a snapshot's cells use, by object key. */
export async function keyFilesForSnapshot(ctx: VaultContext, snapshotId: string): Promise<KeyFileRef[]> {
  const { rows } = await query<KeyFileRef>(
    ctx.pool,
    `finding the key files of snapshot ${snapshotId}`,
    `SELECT f.key, f.sha256 FROM ${ctx.t.keyFiles} f
      WHERE f.key IN (SELECT k.key_file FROM ${ctx.t.cellKeys} k
                        JOIN ${ctx.t.snapshotCells} c ON c.key_id = k.id
                       WHERE c.snapshot_id = $1)
      ORDER BY f.key`,
    [snapshotId],
  );
  return rows;
}
