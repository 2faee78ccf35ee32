import { chunks, distinct, query, type VaultContext } from './db.ts';

/**
 * A tuple key kept for a legal hold: the tuple key of one (tuple, encapsulation), sealed
 * under a key derived from a hold re-encapsulation (`rewrap`) to `dimensionIds`, which are
 * the tuple's dimension keys with the case key in place of the period key about to be
 * destroyed (docs/format.md, "Legal holds").
 */
export interface NewHeldCellKey {
  readonly caseId: string;
  /** The tuple's cell key id. */
  readonly keyId: string;
  /** The encapsulation the held cells were written under. */
  readonly encapsulation: string;
  /** The hold re-encapsulation the wrapping key derives from. */
  readonly rewrap: string;
  /** In key-derivation order. */
  readonly dimensionIds: readonly string[];
  /** ChaCha20-Poly1305 of the 32-byte tuple key: 48 bytes. Never log it. */
  readonly wrapped: Uint8Array;
}

/** A held wrapping, as the key opener reads it. */
export interface HeldWrapping {
  readonly caseId: string;
  readonly encapsulation: string;
  readonly rewrap: string;
  readonly dimensionIds: string[];
  readonly wrapped: Uint8Array;
}

/**
 * Stores held wrappings; a (case, key, encapsulation) already stored is left as it is, so a
 * re-run after a crash converges. Returns how many rows this call inserted.
 */
export async function insertHeldCellKeys(ctx: VaultContext, rows: readonly NewHeldCellKey[]): Promise<number> {
  let inserted = 0;
  for (const batch of chunks(rows)) {
    // Ragged text arrays travel as JSON, as in insertCellKeys.
    const result = await query(
      ctx.pool,
      'storing tuple keys kept for legal holds',
      `INSERT INTO ${ctx.t.heldCellKeys} (case_id, key_id, encapsulation, rewrap, dimension_ids, wrapped)
       SELECT h.case_id, h.key_id, h.encapsulation, h.rewrap,
              ARRAY(SELECT d FROM jsonb_array_elements_text(h.dims) WITH ORDINALITY AS e(d, n) ORDER BY n),
              h.wrapped
         FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::jsonb[], $6::bytea[])
              AS h(case_id, key_id, encapsulation, rewrap, dims, wrapped)
       ON CONFLICT (case_id, key_id, encapsulation) DO NOTHING`,
      [
        batch.map((r) => r.caseId),
        batch.map((r) => r.keyId),
        batch.map((r) => r.encapsulation),
        batch.map((r) => r.rewrap),
        batch.map((r) => JSON.stringify(r.dimensionIds)),
        batch.map((r) => Buffer.from(r.wrapped)),
      ],
    );
    inserted += result.rowCount ?? 0;
  }
  return inserted;
}

/** The held wrappings of the tuples `keyIds`, by cell key id. */
export async function getHeldCellKeys(ctx: VaultContext, keyIds: readonly string[]): Promise<Map<string, HeldWrapping[]>> {
  const found = new Map<string, HeldWrapping[]>();
  for (const batch of chunks(distinct(keyIds))) {
    const { rows } = await query<{ case_id: string; key_id: string; encapsulation: string; rewrap: string; dimension_ids: string[]; wrapped: Buffer }>(
      ctx.pool,
      'reading tuple keys kept for legal holds',
      `SELECT case_id, key_id, encapsulation, rewrap, dimension_ids, wrapped FROM ${ctx.t.heldCellKeys}
        WHERE key_id = ANY($1::text[]) ORDER BY key_id, case_id, encapsulation`,
      [batch],
    );
    for (const row of rows) {
      const list = found.get(row.key_id) ?? [];
      list.push({ caseId: row.case_id, encapsulation: row.encapsulation, rewrap: row.rewrap, dimensionIds: row.dimension_ids, wrapped: row.wrapped });
      found.set(row.key_id, list);
    }
  }
  return found;
}

/**
 * Deletes every held wrapping that needs one of the case keys `caseKeyIds` (`case:T/CASE`):
 * once a case key is destroyed they open nothing. By key id rather than case id, because one
 * case id may exist in several tenants, each with its own case key. Returns how many went.
 */
export async function deleteHeldForCase(ctx: VaultContext, caseKeyIds: readonly string[]): Promise<number> {
  let deleted = 0;
  for (const batch of chunks(distinct(caseKeyIds))) {
    const result = await query(
      ctx.pool,
      'deleting tuple keys kept for destroyed case keys',
      `DELETE FROM ${ctx.t.heldCellKeys} WHERE dimension_ids && $1::text[]`,
      [batch],
    );
    deleted += result.rowCount ?? 0;
  }
  return deleted;
}

/** `"schema".held_cell_keys`. */
export function heldCellKeysTable(ctx: VaultContext): string {
  return ctx.t.heldCellKeys;
}
