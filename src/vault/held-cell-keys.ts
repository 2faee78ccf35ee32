import { chunks, distinct, query, type VaultContext } from './db.ts';

/** A cell key re-wrapped for a legal hold case (see the held_cell_keys table). */
export interface NewHeldCellKey {
  readonly caseId: string;
  /** The cell key id. */
  readonly keyId: string;
  /** Innermost first, the case key in the place of the key about to be destroyed. */
  readonly dimensionIds: readonly string[];
  /** Nested age, as for cell keys. Never log it. */
  readonly wrappedIdentity: Uint8Array;
}

/** A held wrapping of one cell key. */
export interface HeldWrapping {
  readonly caseId: string;
  readonly dimensionIds: string[];
  readonly wrappedIdentity: Uint8Array;
}

/** `"schema".held_cell_keys`. */
export function heldCellKeysTable(ctx: VaultContext): string {
  return `"${ctx.schema}".held_cell_keys`;
}

/**
 * Stores re-wrapped cell keys; a (case, cell key) pair already stored is left as it is
 * (ON CONFLICT DO NOTHING), so a re-run after a crash converges. Returns how many rows
 * this call inserted.
 */
export async function insertHeldCellKeys(
  ctx: VaultContext,
  rows: readonly NewHeldCellKey[],
): Promise<number> {
  let inserted = 0;
  for (const batch of chunks(rows)) {
    // Ragged text arrays travel as JSON, as in insertCellKeys.
    const result = await query(
      ctx.pool,
      'storing re-wrapped cell keys for legal holds',
      `INSERT INTO ${heldCellKeysTable(ctx)} (case_id, key_id, dimension_ids, wrapped_identity)
       SELECT h.case_id, h.key_id,
              ARRAY(SELECT d FROM jsonb_array_elements_text(h.dims) WITH ORDINALITY AS e(d, n)
                    ORDER BY n),
              h.wrapped
         FROM unnest($1::text[], $2::text[], $3::jsonb[], $4::bytea[])
              AS h(case_id, key_id, dims, wrapped)
       ON CONFLICT (case_id, key_id) DO NOTHING`,
      [
        batch.map((r) => r.caseId),
        batch.map((r) => r.keyId),
        batch.map((r) => JSON.stringify(r.dimensionIds)),
        batch.map((r) => r.wrappedIdentity),
      ],
    );
    inserted += result.rowCount ?? 0;
  }
  return inserted;
}

/** The held wrappings of each of the cell keys `keyIds` that has any, by cell key id. */
export async function getHeldCellKeys(
  ctx: VaultContext,
  keyIds: readonly string[],
): Promise<Map<string, HeldWrapping[]>> {
  const found = new Map<string, HeldWrapping[]>();
  for (const batch of chunks(distinct(keyIds))) {
    const { rows } = await query<{
      case_id: string;
      key_id: string;
      dimension_ids: string[];
      wrapped_identity: Buffer;
    }>(
      ctx.pool,
      'reading re-wrapped cell keys',
      `SELECT case_id, key_id, dimension_ids, wrapped_identity FROM ${heldCellKeysTable(ctx)}
        WHERE key_id = ANY($1::text[]) ORDER BY key_id, case_id`,
      [batch],
    );
    for (const row of rows) {
      const list = found.get(row.key_id) ?? [];
      list.push({
        caseId: row.case_id,
        dimensionIds: row.dimension_ids,
        wrappedIdentity: row.wrapped_identity,
      });
      found.set(row.key_id, list);
    }
  }
  return found;
}

/**
 * Deletes every held wrapping that needs one of the case keys `caseKeyIds` (`case:T/CASE`):
 * once a case key is destroyed they open nothing, and deleting them keeps the table from
 * holding dead ciphertext. By key id rather than case id, because one case id may exist in
 * several tenants, each with its own case key. Returns how many rows went.
 */
export async function deleteHeldForCase(
  ctx: VaultContext,
  caseKeyIds: readonly string[],
): Promise<number> {
  let deleted = 0;
  for (const batch of chunks(distinct(caseKeyIds))) {
    const result = await query(
      ctx.pool,
      'deleting re-wrapped cell keys of destroyed case keys',
      `DELETE FROM ${heldCellKeysTable(ctx)} WHERE dimension_ids && $1::text[]`,
      [batch],
    );
    deleted += result.rowCount ?? 0;
  }
  return deleted;
}
