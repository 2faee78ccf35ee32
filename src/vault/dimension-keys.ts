import { ErrorCode, LetheError, throwIfAborted } from '../errors/index.ts';
import { chunks, distinct, query, type VaultContext } from './db.ts';

/** The dimensions a shred key can belong to (the `kind` column's CHECK lists the same). */
export type DimensionKind = 'tenant' | 'user' | 'conversation' | 'period' | 'case' | 'system';

/** The public facts about a dimension key; never its identity. */
export interface DimensionKeyInfo {
  /** `tenant:T`, `user:T/U`, `period:T/messages/2026-03`, `case:T/CASE-42`, `system`. */
  readonly id: string;
  readonly kind: DimensionKind;
  /** Null only for the `system` key. */
  readonly tenant: string | null;
  /** The age recipient data is wrapped to. Still returned after destruction. */
  readonly recipient: string;
  /** True once the wrapped identity has been erased (crypto-shredded). */
  readonly destroyed: boolean;
}

/** A new dimension key, its identity already wrapped to the master key by the caller. */
export interface NewDimensionKey {
  readonly id: string;
  readonly kind: DimensionKind;
  readonly tenant: string | null;
  readonly recipient: string;
  /** age file encrypted to the master key; the vault stores it as given. */
  readonly wrappedIdentity: Uint8Array;
  /**
   * The master epoch `wrappedIdentity` is wrapped to (src/keys/master.ts wrapDimensionSecret
   * says which). Absent: the vault's current epoch at insert, or none on a vault without epochs.
   */
  readonly masterEpoch?: number;
  /** keys.postQuantum: the raw ML-KEM-768 public key (1184 bytes); its seed is inside `wrappedIdentity`. */
  readonly mlkemPublic?: Uint8Array;
}

interface InfoRow {
  id: string;
  kind: DimensionKind; // the CHECK constraint guarantees the union
  tenant: string | null;
  recipient: string;
  destroyed: boolean;
}

// `destroyed_at`, not `wrapped_identity IS NULL`: the table's CHECK makes them agree, and
// the backup's vault role may not read wrapped_identity at all (src/vault/role-grants.ts).
const INFO_COLUMNS = 'id, kind, tenant, recipient, destroyed_at IS NOT NULL AS destroyed';
const PAGE_ROWS = 1000;

/** Public facts for each of `ids` that exists; absent ids are absent from the map. */
export async function getDimensionKeys(
  ctx: VaultContext,
  ids: readonly string[],
): Promise<Map<string, DimensionKeyInfo>> {
  const found = new Map<string, DimensionKeyInfo>();
  for (const batch of chunks(distinct(ids))) {
    const { rows } = await query<InfoRow>(
      ctx.pool,
      'reading dimension keys from the vault',
      `SELECT ${INFO_COLUMNS} FROM ${ctx.t.dimensionKeys} WHERE id = ANY($1::text[])`,
      [batch],
    );
    for (const row of rows) found.set(row.id, { ...row });
  }
  return found;
}

/**
 * Inserts the keys that do not exist yet and returns, for every id given, the recipient
 * now stored. When several processes create the same id at once, exactly one insert wins
 * and every caller gets the winner's recipient, so all data for that dimension is wrapped
 * to one key: callers must wrap to the returned recipient, not their own.
 *
 * An id that was destroyed keeps its row and is never re-created: its (now useless)
 * recipient is returned, so check {@link getDimensionKeys}' `destroyed` before creating.
 * Throws DATABASE when a recipient is already used by another id (keys must never be
 * shared, or destroying one would not shred the other).
 */
export async function insertDimensionKeys(
  ctx: VaultContext,
  keys: readonly NewDimensionKey[],
): Promise<Map<string, string>> {
  const byId = new Map<string, NewDimensionKey>();
  for (const key of keys) if (!byId.has(key.id)) byId.set(key.id, key);
  for (const batch of chunks([...byId.values()])) {
    // Separate statements on purpose: the read-back must take a fresh snapshot to see a
    // concurrent winner that our ON CONFLICT waited for.
    await query(
      ctx.pool,
      'storing new dimension keys in the vault',
      `INSERT INTO ${ctx.t.dimensionKeys} (id, kind, tenant, recipient, wrapped_identity, master_epoch, mlkem_public)
       SELECT k.id, k.kind, k.tenant, k.recipient, k.wrapped,
              COALESCE(k.epoch, (SELECT epoch FROM "${ctx.schema}".master_epochs WHERE retired_at IS NULL)), k.mlkem
         FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bytea[], $6::integer[], $7::bytea[])
              AS k(id, kind, tenant, recipient, wrapped, epoch, mlkem)
       ON CONFLICT (id) DO NOTHING`,
      [
        batch.map((k) => k.id),
        batch.map((k) => k.kind),
        batch.map((k) => k.tenant),
        batch.map((k) => k.recipient),
        batch.map((k) => k.wrappedIdentity),
        batch.map((k) => k.masterEpoch ?? null),
        batch.map((k) => (k.mlkemPublic === undefined ? null : Buffer.from(k.mlkemPublic))),
      ],
    );
  }
  const stored = await getDimensionKeys(ctx, [...byId.keys()]);
  const recipients = new Map<string, string>();
  const missing: string[] = [];
  for (const id of byId.keys()) {
    const key = stored.get(id);
    if (key === undefined) missing.push(id);
    else recipients.set(id, key.recipient);
  }
  if (missing.length > 0) {
    throw new LetheError(
      ErrorCode.VAULT,
      `dimension key(s) ${missing.slice(0, 5).join(', ')} vanished right after being stored: ` +
        'is something else deleting rows from the vault?',
    );
  }
  return recipients;
}

/**
 * Public facts of every dimension key, destroyed ones included, ordered by id. One row per
 * dimension value (tenants + users + conversations + periods + cases), so the backup can
 * load them once instead of asking per cell.
 */
export async function listDimensionKeys(ctx: VaultContext): Promise<DimensionKeyInfo[]> {
  const { rows } = await query<InfoRow>(
    ctx.pool,
    'listing dimension keys',
    `SELECT ${INFO_COLUMNS} FROM ${ctx.t.dimensionKeys} ORDER BY id`,
  );
  return rows.map((row) => ({ ...row }));
}

/**
 * The user keys of chat-store user `user` in every tenant (`user:T/U`, destroyed ones
 * included), by tenant then id. Matched exactly: the id's user part must equal `user`
 * percent-encoded as cells/ids.ts writes it (no pattern is built from the id, so `%` or `_`
 * in it match only themselves), and each row's id must be exactly `user:<its tenant>/<user>`.
 * One person in many tenants is a handful of rows; the scan reads the user keys only.
 */
export async function userKeysOf(ctx: VaultContext, user: string): Promise<DimensionKeyInfo[]> {
  // Tenant and user are percent-encoded, so the only '/' in a user key id is the separator.
  const encoded = encodeURIComponent(user);
  const { rows } = await query<InfoRow>(
    ctx.pool,
    'finding the user keys of one person in every tenant',
    `SELECT ${INFO_COLUMNS} FROM ${ctx.t.dimensionKeys}
      WHERE kind = 'user' AND split_part(id, '/', 2) = $1 ORDER BY tenant, id`,
    [encoded],
  );
  return rows
    .filter((row) => row.tenant !== null && row.id === `user:${encodeURIComponent(row.tenant)}/${encoded}`)
    .map((row) => ({ ...row }));
}

/**
 * The ML-KEM-768 public key of each of `ids` that has one (keys.postQuantum); ids without
 * one (X25519-only keys, unknown ids) are absent. Public, like the recipient.
 */
export async function getMlkemPublicKeys(ctx: VaultContext, ids: readonly string[]): Promise<Map<string, Uint8Array>> {
  const found = new Map<string, Uint8Array>();
  for (const batch of chunks(distinct(ids))) {
    const { rows } = await query<{ id: string; mlkem_public: Buffer }>(
      ctx.pool,
      'reading ML-KEM public keys of dimension keys',
      `SELECT id, mlkem_public FROM ${ctx.t.dimensionKeys} WHERE id = ANY($1::text[]) AND mlkem_public IS NOT NULL`,
      [batch],
    );
    for (const row of rows) found.set(row.id, new Uint8Array(row.mlkem_public));
  }
  return found;
}

/**
 * Gives a live X25519-only key its ML-KEM half: the public key, and the wrapped secret that
 * now holds both halves (the same X25519 key, so every cell written before still opens).
 * `masterEpoch`: the epoch the new wrap is to (null: leave the row's). Returns false (and
 * changes nothing) when the key is destroyed or already has one.
 */
export async function addMlkemHalf(
  ctx: VaultContext,
  id: string,
  mlkemPublic: Uint8Array,
  wrappedIdentity: Uint8Array,
  masterEpoch: number | null,
): Promise<boolean> {
  const { rowCount } = await query(
    ctx.pool,
    'adding an ML-KEM half to a dimension key',
    `UPDATE ${ctx.t.dimensionKeys} SET mlkem_public = $2, wrapped_identity = $3, master_epoch = COALESCE($4, master_epoch)
      WHERE id = $1 AND mlkem_public IS NULL AND wrapped_identity IS NOT NULL`,
    [id, Buffer.from(mlkemPublic), Buffer.from(wrappedIdentity), masterEpoch],
  );
  return rowCount === 1;
}

/** A dimension key with its wrapped identity (null once destroyed), for escrow export. */
export interface WrappedDimensionKey extends DimensionKeyInfo {
  readonly wrappedIdentity: Uint8Array | null;
}

/**
 * Yields every dimension key with its wrapped identity, in id order, a page at a time
 * (keyset pagination; no connection held between pages). For `lethe keys export`.
 */
export async function* iterateWrappedDimensionKeys(
  ctx: VaultContext,
  options: { pageRows?: number; signal?: AbortSignal } = {},
): AsyncGenerator<WrappedDimensionKey> {
  const pageRows = options.pageRows ?? PAGE_ROWS;
  let after: string | null = null;
  for (;;) {
    throwIfAborted(options.signal, 'reading dimension keys');
    const { rows }: { rows: (InfoRow & { wrapped_identity: Buffer | null })[] } = await query(
      ctx.pool,
      'reading dimension keys',
      `SELECT ${INFO_COLUMNS}, wrapped_identity FROM ${ctx.t.dimensionKeys}
        WHERE $1::text IS NULL OR id > $1 ORDER BY id LIMIT $2`,
      [after, pageRows],
    );
    for (const { wrapped_identity, ...info } of rows)
      yield { ...info, wrappedIdentity: wrapped_identity };
    const last = rows.at(-1);
    if (last === undefined || rows.length < pageRows) return;
    after = last.id;
  }
}

/**
 * The wrapped identity of each of `ids` that exists: bytes to unwrap with the master key,
 * or null when the key was destroyed. Absent ids are absent from the map.
 */
export async function getWrappedDimensionIdentities(
  ctx: VaultContext,
  ids: readonly string[],
): Promise<Map<string, Uint8Array | null>> {
  const found = new Map<string, Uint8Array | null>();
  for (const batch of chunks(distinct(ids))) {
    const { rows } = await query<{ id: string; wrapped_identity: Buffer | null }>(
      ctx.pool,
      'reading wrapped dimension keys from the vault',
      `SELECT id, wrapped_identity FROM ${ctx.t.dimensionKeys} WHERE id = ANY($1::text[])`,
      [batch],
    );
    for (const row of rows) found.set(row.id, row.wrapped_identity);
  }
  return found;
}

/**
 * Crypto-shreds: erases the wrapped identity of each of `ids` and stamps `destroyed_at`;
 * returns the ids destroyed by this call (already destroyed or unknown ids are skipped).
 * The row and recipient stay, so the key is never silently re-created. PostgreSQL keeps
 * the old tuple until VACUUM and in WAL and vault backups for their retention: that is the
 * grace window certificates state.
 */
export async function destroyDimensionKeys(
  ctx: VaultContext,
  ids: readonly string[],
): Promise<string[]> {
  const destroyed: string[] = [];
  for (const batch of chunks(distinct(ids))) {
    const { rows } = await query<{ id: string }>(
      ctx.pool,
      'destroying dimension keys in the vault',
      `UPDATE ${ctx.t.dimensionKeys} SET wrapped_identity = NULL, destroyed_at = now()
        WHERE id = ANY($1::text[]) AND wrapped_identity IS NOT NULL RETURNING id`,
      [batch],
    );
    destroyed.push(...rows.map((r) => r.id));
  }
  return destroyed;
}
