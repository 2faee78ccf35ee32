import type { CellKeyFacts, DestructionCause, DestructionRecord } from '../lifecycle/types.ts';
import { ErrorCode, LetheError } from '../errors/index.ts';
import { appendAuditInTransaction } from './audit-log.ts';
import { chunks, distinct, inTransaction, query, toSafeInt, type VaultContext } from './db.ts';
import { heldCellKeysTable } from './held-cell-keys.ts';

/** `"schema".destructions`. */
function destructionsTable(ctx: VaultContext): string {
  return `"${ctx.schema}".destructions`;
}

interface DestructionRow {
  key_id: string;
  destroyed_at: Date;
  actor: string;
  reason: string;
  cause: DestructionCause;
  audit_seq: string;
}

const COLUMNS = 'key_id, destroyed_at, actor, reason, cause, audit_seq';

/** The destruction records of those of `keyIds` that have one, by key id. */
export async function getDestructions(
  ctx: VaultContext,
  keyIds: readonly string[],
): Promise<Map<string, DestructionRecord>> {
  const found = new Map<string, DestructionRecord>();
  for (const batch of chunks(distinct(keyIds))) {
    const { rows } = await query<DestructionRow>(
      ctx.pool,
      'reading destruction records',
      `SELECT ${COLUMNS} FROM ${destructionsTable(ctx)} WHERE key_id = ANY($1::text[])`,
      [batch],
    );
    for (const row of rows) found.set(row.key_id, toRecord(row));
  }
  return found;
}

/** Every destruction record, oldest first (then by key id). */
export async function listDestructions(ctx: VaultContext): Promise<DestructionRecord[]> {
  const { rows } = await query<DestructionRow>(
    ctx.pool,
    'listing destruction records',
    `SELECT ${COLUMNS} FROM ${destructionsTable(ctx)} ORDER BY destroyed_at, key_id`,
  );
  return rows.map(toRecord);
}

/** One key to destroy and record. */
export interface KeyDestruction {
  readonly keyId: string;
  /** Chosen by the caller, so the bucket tombstone and the vault row say the same instant. */
  readonly destroyedAt: Date;
  readonly actor: string;
  readonly reason: string;
  readonly cause: DestructionCause;
}

/** A destruction record with the hash of its audit entry (its chain position). */
export interface RecordedDestruction extends DestructionRecord {
  readonly auditHash: string;
  /** False when the record existed before this call (nothing was redone). */
  readonly created: boolean;
}

/**
 * Crypto-shreds and records, in ONE transaction: for each key without a destruction record,
 * sets its wrapped identity to NULL (unless already NULL, when `destroyed_at` is kept),
 * appends a `key.destroy` audit entry (details: keyId, cause, reason) and inserts the
 * destructions row carrying that entry's seq. Keys that already have a record are returned
 * as recorded; ids that are not dimension keys are left out of the result. Either every
 * key of the call is destroyed and recorded, or (on error) none is.
 *
 * The old row version keeps the wrapped bytes in the heap until {@link vacuumKeyTables}.
 */
export async function recordKeyDestructions(
  ctx: VaultContext,
  keys: readonly KeyDestruction[],
): Promise<RecordedDestruction[]> {
  const byId = new Map<string, KeyDestruction>();
  for (const k of keys) if (!byId.has(k.keyId)) byId.set(k.keyId, k);
  if (byId.size === 0) return [];
  const doing = 'destroying dimension keys';
  return inTransaction(ctx.pool, doing, async (client) => {
    const ids = [...byId.keys()];
    // Row locks: two destroyers of one key queue here, and the second sees the first's record.
    const existing = await query<{ id: string; destroyed_at: Date | null }>(
      client,
      doing,
      `SELECT id, destroyed_at FROM ${ctx.t.dimensionKeys} WHERE id = ANY($1::text[])
        ORDER BY id FOR UPDATE`,
      [ids],
    );
    const present = new Map(existing.rows.map((r) => [r.id, r.destroyed_at]));
    const recorded = await query<DestructionRow & { hash: string | null }>(
      client,
      doing,
      `SELECT d.key_id, d.destroyed_at, d.actor, d.reason, d.cause, d.audit_seq, a.hash
         FROM ${destructionsTable(ctx)} d LEFT JOIN ${ctx.t.auditLog} a ON a.seq = d.audit_seq
        WHERE d.key_id = ANY($1::text[])`,
      [ids],
    );
    const before = new Map(recorded.rows.map((r) => [r.key_id, r]));
    const out: RecordedDestruction[] = [];
    // The digests of every cell that needs these keys go in the same transaction: a digest
    // that outlived its cell's keys would confirm a guess of the shredded content to anyone
    // holding the digest key. (Idempotent, so a re-destruction after a vault restore repeats it.)
    // The keyed row fingerprints go too, and the segments holding such cells lose theirs,
    // so the next backup reads those segments again and leaves the shredded cells out.
    const destroying = ids.filter((id) => present.has(id));
    await query(
      client,
      doing,
      `WITH hit AS (
         UPDATE ${ctx.t.cellCopies} SET digest = NULL, fingerprint = NULL
          WHERE key_id IN (SELECT id FROM ${ctx.t.cellKeys} WHERE dimension_ids && $1::text[])
         RETURNING store, segment)
       UPDATE ${ctx.t.segments} g SET fingerprint = NULL
         FROM (SELECT DISTINCT store, segment FROM hit) h
        WHERE g.store = h.store AND g.segment = h.segment AND g.to_seq IS NULL`,
      [destroying],
    );
    for (const [id, key] of byId) {
      if (!present.has(id)) continue;
      const old = before.get(id);
      if (old !== undefined) {
        out.push({ ...toRecord(old), auditHash: old.hash ?? '', created: false });
        continue;
      }
      // A key shredded before records existed keeps its original time.
      const destroyedAt = present.get(id) ?? key.destroyedAt;
      await query(
        client,
        doing,
        `UPDATE ${ctx.t.dimensionKeys} SET wrapped_identity = NULL, destroyed_at = $2
          WHERE id = $1 AND wrapped_identity IS NOT NULL`,
        [id, destroyedAt],
      );
      const entry = await appendAuditInTransaction(ctx, client, {
        actor: key.actor,
        action: 'key.destroy',
        subject: id,
        details: { keyId: id, cause: key.cause, reason: key.reason },
      });
      await query(
        client,
        doing,
        `INSERT INTO ${destructionsTable(ctx)} (key_id, destroyed_at, actor, reason, cause, audit_seq)
         VALUES ($1, $2, $3, $4, $5::jsonb, $6)`,
        [id, destroyedAt, key.actor, key.reason, JSON.stringify(key.cause), entry.seq],
      );
      out.push({
        keyId: id,
        destroyedAt,
        actor: key.actor,
        reason: key.reason,
        cause: key.cause,
        auditSeq: entry.seq,
        auditHash: entry.hash,
        created: true,
      });
    }
    return out;
  });
}

/**
 * VACUUM FULL of dimension_keys, held_cell_keys and cell_copies: rewrites them into new
 * files so no dead row version keeps a destroyed key's wrapped identity (or a shredded
 * cell's digest) on disk (the old files are truncated at commit). Takes an ACCESS EXCLUSIVE lock on each table for the rewrite (a
 * fraction of a second for a vault's few thousand dimension keys), so backups wait briefly.
 * WAL segments and base backups of the vault's server are outside lethe's reach: they are
 * what the grace window covers, with the vault backups.
 */
export async function vacuumKeyTables(
  ctx: VaultContext,
  options: { waitMs?: number } = {},
): Promise<{ clean: boolean }> {
  await checkKeyTablesVacuumable(ctx);
  // A dead row version outlives VACUUM FULL while any transaction that might still see it
  // runs: one that was already running anywhere in the cluster when the key was destroyed
  // (PostgreSQL keeps rows deleted after the oldest running xid), or an older snapshot in
  // this database. So first wait, briefly, for those to end; every later apply vacuums again.
  const deadline = Date.now() + (options.waitMs ?? 60_000);
  const { rows } = await query<{ next: string }>(ctx.pool, 'reading the transaction horizon', `SELECT pg_snapshot_xmax(pg_current_snapshot())::text AS next`);
  const target = rows[0]?.next ?? '0';
  let clean = false;
  for (let delay = 20; ; delay = Math.min(delay * 2, 500)) {
    const { rows: waiting } = await query<{ older: boolean }>(
      ctx.pool,
      'checking for transactions older than the destruction',
      `SELECT pg_snapshot_xmin(pg_current_snapshot()) < $1::xid8
           OR EXISTS (SELECT 1 FROM pg_stat_activity
                       WHERE datname = current_database() AND pid <> pg_backend_pid()
                         AND backend_xmin IS NOT NULL
                         AND age(backend_xmin) > age(($1::xid8::text::numeric % 4294967296)::text::xid)) AS older`,
      [target],
    );
    if (waiting[0]?.older !== true) {
      clean = true;
      break;
    }
    if (Date.now() >= deadline) break;
    await new Promise((resolve) => setTimeout(resolve, delay));
  }
  // VACUUM cannot run inside a transaction block: one statement per table on the pool.
  for (const table of keyTables(ctx)) {
    await query(ctx.pool, `vacuuming ${table} after destroying keys`, `VACUUM FULL ${table}`);
  }
  return { clean };
}

/** The tables {@link vacuumKeyTables} rewrites. */
function keyTables(ctx: VaultContext): string[] {
  return [ctx.t.dimensionKeys, heldCellKeysTable(ctx), ctx.t.cellCopies];
}

/**
 * Throws VAULT, naming the fix, unless this connection's role may VACUUM every key table:
 * PostgreSQL lets only a table's owner (or the database's, or a superuser; from version 17
 * also a holder of MAINTAIN) do that, and for anyone else VACUUM only warns and skips the
 * table, which would leave destroyed keys' old row versions on disk while lethe reports
 * them gone. Call it before destroying anything.
 */
export async function checkKeyTablesVacuumable(ctx: VaultContext): Promise<void> {
  const doing = 'checking that this vault role may VACUUM the key tables';
  const { rows } = await query<{ name: string; role: string }>(
    ctx.pool,
    doing,
    `SELECT c.relname AS name, current_user AS role FROM pg_catalog.pg_class c
      WHERE c.oid = ANY($1::text[]::regclass[])
        AND NOT pg_catalog.pg_has_role(c.relowner, 'USAGE')
        AND NOT pg_catalog.pg_has_role((SELECT datdba FROM pg_catalog.pg_database WHERE datname = current_database()), 'USAGE')
        AND NOT CASE WHEN current_setting('server_version_num')::int >= 170000
                     THEN has_table_privilege(c.oid, 'MAINTAIN') ELSE false END
      ORDER BY 1`,
    [keyTables(ctx)],
  );
  const first = rows[0];
  if (first === undefined) return;
  throw new LetheError(
    ErrorCode.VAULT,
    `the vault role ${first.role} may not VACUUM ${rows.map((r) => r.name).join(', ')} (only a table's owner may), so ` +
      "destroyed keys' old row versions would stay on disk: run lifecycle, hold and erase as the vault's lifecycle role, " +
      'which `lethe init --roles` makes the owner of those tables (docs/operations.md, "Vault roles")',
    { details: { role: first.role, tables: rows.map((r) => r.name) } },
  );
}

interface FactsRow {
  id: string;
  tenant: string | null;
  data_class: string;
  period: string | null;
  author: string | null;
  conversation: string | null;
  dimension_ids: string[];
}

const FACT_COLUMNS = 'id, tenant, data_class, period, author, conversation, dimension_ids';

/** The cell keys wrapped to any of the dimension keys `dimensionKeyIds` (GIN index), by id. */
export async function cellKeysNeeding(
  ctx: VaultContext,
  dimensionKeyIds: readonly string[],
): Promise<CellKeyFacts[]> {
  const ids = distinct(dimensionKeyIds);
  if (ids.length === 0) return [];
  const { rows } = await query<FactsRow>(
    ctx.pool,
    'finding the cell keys that need given dimension keys',
    `SELECT ${FACT_COLUMNS} FROM ${ctx.t.cellKeys} WHERE dimension_ids && $1::text[] ORDER BY id`,
    [ids],
  );
  return rows.map(toFacts);
}

/** Every cell key of one tenant (tuple facts only, never wrapped identities), by id. */
export async function tenantCellKeys(ctx: VaultContext, tenant: string): Promise<CellKeyFacts[]> {
  const { rows } = await query<FactsRow>(
    ctx.pool,
    `listing the cell keys of tenant ${tenant}`,
    `SELECT ${FACT_COLUMNS} FROM ${ctx.t.cellKeys} WHERE tenant = $1 ORDER BY id`,
    [tenant],
  );
  return rows.map(toFacts);
}

/** A snapshot holding cells under given cell keys. */
export interface AffectedSnapshot {
  readonly snapshotId: string;
  readonly status: 'complete' | 'expired';
  /** Cells (one per table and tuple) of the snapshot under those keys. */
  readonly cells: number;
}

/**
 * The complete and expired snapshots with cells under any of `cellKeyIds`, oldest first,
 * with how many such cells each holds.
 */
export async function snapshotsUsingCellKeys(
  ctx: VaultContext,
  cellKeyIds: readonly string[],
): Promise<AffectedSnapshot[]> {
  const ids = distinct(cellKeyIds);
  if (ids.length === 0) return [];
  const { rows } = await query<{ id: string; status: string; cells: string }>(
    ctx.pool,
    'finding the snapshots that hold given cells',
    `SELECT s.id, s.status, count(*) AS cells
       FROM ${ctx.t.snapshotCells} c JOIN ${ctx.t.snapshots} s ON s.id = c.snapshot_id
      WHERE c.key_id = ANY($1::text[]) AND s.status IN ('complete', 'expired')
      GROUP BY s.id, s.status, s.started_at ORDER BY s.started_at, s.id`,
    [ids],
  );
  return rows.map((r) => {
    if (r.status !== 'complete' && r.status !== 'expired') {
      throw new LetheError(ErrorCode.INTERNAL, `snapshot ${r.id} has status ${r.status}`);
    }
    return { snapshotId: r.id, status: r.status, cells: toSafeInt(r.cells, 'cell count') };
  });
}

function toRecord(row: DestructionRow): DestructionRecord {
  return {
    keyId: row.key_id,
    destroyedAt: row.destroyed_at,
    actor: row.actor,
    reason: row.reason,
    cause: row.cause,
    auditSeq: toSafeInt(row.audit_seq, 'destruction audit seq'),
  };
}

function toFacts(row: FactsRow): CellKeyFacts {
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
