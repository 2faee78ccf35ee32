import { ErrorCode, LetheError } from '../errors/index.ts';
import { chunks, distinct, query, type VaultContext } from './db.ts';

/** A cell key as stored: public recipient in clear, identity AND-wrapped. */
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
  /** The dimension keys the identity is wrapped to, innermost (applied first) first. */
  readonly dimensionIds: readonly string[];
  readonly recipient: string;
  /** Nested age: unwrapping needs every one of `dimensionIds`, outermost first. */
  readonly wrappedIdentity: Uint8Array;
}

interface CellKeyRow {
  id: string;
  tenant: string | null;
  data_class: string;
  period: string | null;
  author: string | null;
  conversation: string | null;
  dimension_ids: string[];
  recipient: string;
  wrapped_identity: Buffer;
}

const COLUMNS =
  'id, tenant, data_class, period, author, conversation, dimension_ids, recipient, wrapped_identity';

/** Each of `ids` that exists; absent ids are absent from the map. */
export async function getCellKeys(
  ctx: VaultContext,
  ids: readonly string[],
): Promise<Map<string, CellKey>> {
  const found = new Map<string, CellKey>();
  for (const batch of chunks(distinct(ids))) {
    const { rows } = await query<CellKeyRow>(
      ctx.pool,
      'reading cell keys from the vault',
      `SELECT ${COLUMNS} FROM ${ctx.t.cellKeys} WHERE id = ANY($1::text[])`,
      [batch],
    );
    for (const row of rows) found.set(row.id, toCellKey(row));
  }
  return found;
}

/**
 * Inserts the cell keys that do not exist yet and returns, for every id given, the
 * recipient now stored: when processes race to create one cell's key, all converge on the
 * winner's, which callers must encrypt to instead of their own. Throws KEY for a key
 * wrapped to no dimension key, DATABASE when a recipient is already used by another cell.
 */
export async function insertCellKeys(
  ctx: VaultContext,
  keys: readonly CellKey[],
): Promise<Map<string, string>> {
  const byId = new Map<string, CellKey>();
  for (const key of keys) {
    if (key.dimensionIds.length === 0) {
      throw new LetheError(
        ErrorCode.KEY,
        `cell key ${key.id} is wrapped to no dimension key: it could never be shredded`,
      );
    }
    if (!byId.has(key.id)) byId.set(key.id, key);
  }
  for (const batch of chunks([...byId.values()])) {
    // text[][] cannot hold ragged arrays, so each cell's dimension ids travel as a JSON
    // array and are expanded server-side, in order.
    await query(
      ctx.pool,
      'storing new cell keys in the vault',
      `INSERT INTO ${ctx.t.cellKeys}
         (id, tenant, data_class, period, author, conversation, dimension_ids, recipient,
          wrapped_identity)
       SELECT k.id, k.tenant, k.data_class, k.period, k.author, k.conversation,
              ARRAY(SELECT d FROM jsonb_array_elements_text(k.dims) WITH ORDINALITY AS e(d, n)
                    ORDER BY n),
              k.recipient, k.wrapped
         FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::jsonb[],
                     $7::text[], $8::bytea[], $9::text[])
              AS k(id, tenant, data_class, period, author, dims, recipient, wrapped, conversation)
       ON CONFLICT (id) DO NOTHING`,
      [
        batch.map((k) => k.id),
        batch.map((k) => k.tenant),
        batch.map((k) => k.class),
        batch.map((k) => k.period),
        batch.map((k) => k.author),
        batch.map((k) => JSON.stringify(k.dimensionIds)),
        batch.map((k) => k.recipient),
        batch.map((k) => k.wrappedIdentity),
        batch.map((k) => k.conversation),
      ],
    );
  }
  const ids = [...byId.keys()];
  const stored = new Map<string, string>();
  for (const batch of chunks(ids)) {
    const { rows } = await query<{ id: string; recipient: string }>(
      ctx.pool,
      'reading back new cell keys',
      `SELECT id, recipient FROM ${ctx.t.cellKeys} WHERE id = ANY($1::text[])`,
      [batch],
    );
    for (const row of rows) stored.set(row.id, row.recipient);
  }
  const missing = ids.filter((id) => !stored.has(id));
  if (missing.length > 0) {
    throw new LetheError(
      ErrorCode.VAULT,
      `cell key(s) ${missing.slice(0, 5).join(', ')} vanished right after being stored: ` +
        'is something else deleting rows from the vault?',
    );
  }
  return stored;
}

/**
 * The recipient of each of `ids` that exists (absent ids are absent from the map): what the
 * backup asks once per batch of cells, by primary key, so its memory does not grow with
 * the vault. Public values only.
 */
export async function getCellKeyRecipients(
  ctx: VaultContext,
  ids: readonly string[],
): Promise<Map<string, string>> {
  const found = new Map<string, string>();
  for (const batch of chunks(distinct(ids))) {
    const { rows } = await query<{ id: string; recipient: string }>(
      ctx.pool,
      'reading cell key recipients from the vault',
      `SELECT id, recipient FROM ${ctx.t.cellKeys} WHERE id = ANY($1::text[])`,
      [batch],
    );
    for (const row of rows) found.set(row.id, row.recipient);
  }
  return found;
}

/**
 * Recipient of every cell key of one data class, by id: what the backup loads once per
 * class to find existing keys without a round trip per cell. Public values only.
 */
export async function listCellKeyRecipients(
  ctx: VaultContext,
  dataClass: string,
): Promise<Map<string, string>> {
  const { rows } = await query<{ id: string; recipient: string }>(
    ctx.pool,
    `listing cell keys of class ${dataClass}`,
    `SELECT id, recipient FROM ${ctx.t.cellKeys} WHERE data_class = $1`,
    [dataClass],
  );
  return new Map(rows.map((r) => [r.id, r.recipient]));
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
    recipient: row.recipient,
    wrappedIdentity: row.wrapped_identity,
  };
}
