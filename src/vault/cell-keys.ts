import { ErrorCode, LetheError } from '../errors/index.ts';
import { chunks, distinct, query, type Queryable, type VaultContext } from './db.ts';

/**
 * A tuple's facts: the dimension keys every cell of the tuple needs. The id is the tuple's
 * "cell key id" (`cell:T/class/period/author/conversation`); no key material is stored for
 * it: a cell's key is derived from the encapsulation of the snapshot that wrote it
 * (docs/format.md). Lifecycle asks which tuples need a dimension key (GIN index).
 */
export interface CellKey {
  readonly id: string;
  /** Null for system cells. */
  readonly tenant: string | null;
  /** Data class (`messages`, `attachments`, ...). */
  readonly class: string;
  readonly period: string | null;
  readonly author: string | null;
  /** Chat-store conversation id, for tables that map one; null otherwise. */
  readonly conversation: string | null;
  /** The dimension keys the tuple's cells need, in key-derivation order (period, user, conversation, tenant). */
  readonly dimensionIds: readonly string[];
}

interface CellKeyRow {
  id: string;
  tenant: string | null;
  data_class: string;
  period: string | null;
  author: string | null;
  conversation: string | null;
  dimension_ids: string[];
}

const COLUMNS = 'id, tenant, data_class, period, author, conversation, dimension_ids';

/** Each of `ids` that exists; absent ids are absent from the map. */
export async function getCellKeys(ctx: VaultContext, ids: readonly string[]): Promise<Map<string, CellKey>> {
  const found = new Map<string, CellKey>();
  for (const batch of chunks(distinct(ids))) {
    const { rows } = await query<CellKeyRow>(
      ctx.pool,
      'reading cell key facts from the vault',
      `SELECT ${COLUMNS} FROM ${ctx.t.cellKeys} WHERE id = ANY($1::text[])`,
      [batch],
    );
    for (const row of rows) found.set(row.id, toCellKey(row));
  }
  return found;
}

/**
 * Records the tuples that are not recorded yet (ON CONFLICT DO NOTHING: a tuple's facts
 * never change, so concurrent writers agree). Throws KEY for a tuple with no dimension key:
 * its cells could never be shredded.
 */
export async function insertCellKeys(ctx: VaultContext, keys: readonly CellKey[], db: Queryable = ctx.pool): Promise<void> {
  const byId = new Map<string, CellKey>();
  for (const key of keys) {
    if (key.dimensionIds.length === 0) {
      throw new LetheError(ErrorCode.KEY, `cell key ${key.id} needs no dimension key: it could never be shredded`);
    }
    if (!byId.has(key.id)) byId.set(key.id, key);
  }
  for (const batch of chunks([...byId.values()])) {
    // text[][] cannot hold ragged arrays, so each tuple's dimension ids travel as a JSON
    // array and are expanded server-side, in order.
    await query(
      db,
      'recording cell key facts in the vault',
      `INSERT INTO ${ctx.t.cellKeys} (id, tenant, data_class, period, author, conversation, dimension_ids)
       SELECT k.id, k.tenant, k.data_class, k.period, k.author, k.conversation,
              ARRAY(SELECT d FROM jsonb_array_elements_text(k.dims) WITH ORDINALITY AS e(d, n) ORDER BY n)
         FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::jsonb[], $7::text[])
              AS k(id, tenant, data_class, period, author, dims, conversation)
       ON CONFLICT (id) DO NOTHING`,
      [
        batch.map((k) => k.id),
        batch.map((k) => k.tenant),
        batch.map((k) => k.class),
        batch.map((k) => k.period),
        batch.map((k) => k.author),
        batch.map((k) => JSON.stringify(k.dimensionIds)),
        batch.map((k) => k.conversation),
      ],
    );
  }
}

function toCellKey(row: CellKeyRow): CellKey {
  return {
    id: row.id,
    tenant: row.tenant,
    class: row.data_class,
    period: row.period,
    author: row.author,
    conversation: row.conversation,
    dimensionIds: row.dimension_ids,
  };
}
