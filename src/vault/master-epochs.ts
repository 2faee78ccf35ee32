import { ErrorCode, LetheError, throwIfAborted } from '../errors/index.ts';
import { appendAuditInTransaction } from './audit-log.ts';
import { inTransaction, query, type VaultContext } from './db.ts';

/** Where a master epoch's key lives. */
export type MasterProviderKind = 'file' | 'pkcs11' | 'aws-kms';

/**
 * One master-key epoch, public facts only. Every live dimension key is wrapped to exactly
 * one epoch; a new epoch is opened by a rotation (`lethe keys rotate-master`, or a
 * `lifecycle apply` after a shred), which re-wraps every live key to it and retires the
 * one before. A retired epoch that wraps no live key is destroyed in its provider once the
 * grace window has passed: then no copy of anything ever wrapped to it opens again.
 */
export interface MasterEpoch {
  readonly epoch: number;
  readonly provider: MasterProviderKind;
  /** Where the provider keeps the key (a config field, an object label, a key ARN): never a secret. */
  readonly reference: string;
  /** The public recipient wraps of this epoch are made to. */
  readonly recipient: string;
  readonly createdAt: Date;
  readonly retiredAt: Date | null;
  readonly destroyedAt: Date | null;
  /** Why it was retired (and destroyed). */
  readonly reason: string | null;
  /** Dimension keys still wrapped to it (not destroyed). */
  readonly liveKeys: number;
  /** Destroyed dimension keys that were wrapped to it when destroyed. */
  readonly destroyedKeys: number;
}

/** The epoch new wraps go to. */
export interface CurrentMasterEpoch {
  readonly epoch: number;
  readonly provider: MasterProviderKind;
  readonly recipient: string;
}

interface EpochRow {
  epoch: number;
  provider: MasterProviderKind;
  reference: string;
  recipient: string;
  created_at: Date;
  retired_at: Date | null;
  destroyed_at: Date | null;
  reason: string | null;
  live: string;
  destroyed: string;
}

const epochsTable = (ctx: VaultContext): string => `"${ctx.schema}".master_epochs`;

/** Every epoch, oldest first, with how many live and destroyed keys each wraps. */
export async function listMasterEpochs(ctx: VaultContext): Promise<MasterEpoch[]> {
  const { rows } = await query<EpochRow>(
    ctx.pool,
    'listing master-key epochs',
    `SELECT e.epoch, e.provider, e.reference, e.recipient, e.created_at, e.retired_at, e.destroyed_at, e.reason,
            count(d.id) FILTER (WHERE d.wrapped_identity IS NOT NULL) AS live,
            count(d.id) FILTER (WHERE d.wrapped_identity IS NULL) AS destroyed
       FROM ${epochsTable(ctx)} e LEFT JOIN ${ctx.t.dimensionKeys} d ON d.master_epoch = e.epoch
      GROUP BY e.epoch ORDER BY e.epoch`,
  );
  return rows.map((r) => ({
    epoch: r.epoch,
    provider: r.provider,
    reference: r.reference,
    recipient: r.recipient,
    createdAt: r.created_at,
    retiredAt: r.retired_at,
    destroyedAt: r.destroyed_at,
    reason: r.reason,
    liveKeys: Number(r.live),
    destroyedKeys: Number(r.destroyed),
  }));
}

/**
 * The epoch new dimension keys are wrapped to. Throws VAULT when the vault has none yet
 * (`lethe init` with the master key configured records the first).
 */
export async function getCurrentMasterEpoch(ctx: VaultContext): Promise<CurrentMasterEpoch> {
  const { rows } = await query<{ epoch: number; provider: MasterProviderKind; recipient: string }>(
    ctx.pool,
    'reading the current master-key epoch',
    `SELECT epoch, provider, recipient FROM ${epochsTable(ctx)} WHERE retired_at IS NULL`,
  );
  const row = rows[0];
  if (row === undefined) {
    throw new LetheError(ErrorCode.VAULT, 'the vault has no master-key epoch yet: run `lethe init` with the master key configured');
  }
  return { epoch: row.epoch, provider: row.provider, recipient: row.recipient };
}

/**
 * Records epoch 1 when the vault has no epoch yet (a new vault's `lethe init`), and marks
 * every dimension key without an epoch as wrapped to it. A vault that has epochs is left
 * alone. Returns the current epoch.
 */
export async function recordFirstMasterEpoch(
  ctx: VaultContext,
  first: { provider: MasterProviderKind; reference: string; recipient: string },
): Promise<CurrentMasterEpoch> {
  await inTransaction(ctx.pool, 'recording the first master-key epoch', async (client) => {
    const { rows } = await query<{ n: string }>(client, 'recording the first master-key epoch', `SELECT count(*) AS n FROM ${epochsTable(ctx)}`);
    if (Number(rows[0]?.n ?? 0) > 0) return;
    await query(
      client,
      'recording the first master-key epoch',
      `INSERT INTO ${epochsTable(ctx)} (epoch, provider, reference, recipient) VALUES (1, $1, $2, $3)`,
      [first.provider, first.reference, first.recipient],
    );
    await query(client, 'recording the first master-key epoch', `UPDATE ${ctx.t.dimensionKeys} SET master_epoch = 1 WHERE master_epoch IS NULL`);
  });
  return getCurrentMasterEpoch(ctx);
}

/** What a rotation needs: the new epoch's public facts and how to re-wrap one key. */
export interface RotationInput {
  readonly provider: MasterProviderKind;
  readonly reference: string;
  readonly recipient: string;
  /** The epoch number the caller created the key for: must be one above the highest recorded. */
  readonly epoch: number;
  readonly actor: string;
  /** Why the epochs before are retired (audit and master_epochs.reason). */
  readonly reason: string;
  /** Unwraps `wrapped` (wrapped to `fromEpoch`, null: before epochs) and wraps it to the new epoch. */
  readonly rewrap: (id: string, fromEpoch: number | null, wrapped: Uint8Array) => Promise<Uint8Array>;
  readonly pageRows?: number;
  readonly signal?: AbortSignal;
}

export interface RotationResult {
  readonly epoch: number;
  readonly retired: readonly number[];
  readonly rewrapped: number;
  readonly auditSeq: number;
}

/**
 * Opens epoch `input.epoch` and re-wraps every live dimension key to it, in ONE transaction:
 * the current epoch is retired (retired_at, reason), the new one inserted as current, every
 * live key not yet wrapped to it is read a page at a time (keyset, rows locked), re-wrapped
 * by the caller and written back, and a `master.rotate` audit entry is appended. Either all
 * of it commits or none (a failure leaves the old epoch current and every wrap as it was).
 * Memory holds one page. Throws VAULT when `input.epoch` is not the next number (another
 * rotation won), DATABASE as it comes.
 */
export async function rotateMasterEpoch(ctx: VaultContext, input: RotationInput): Promise<RotationResult> {
  const doing = 'rotating the master key';
  const pageRows = input.pageRows ?? 500;
  return inTransaction(ctx.pool, doing, async (client) => {
    // Serialises rotations (callers also hold the backup job lock, so no backup inserts meanwhile).
    await query(client, doing, `SELECT epoch FROM ${epochsTable(ctx)} ORDER BY epoch FOR UPDATE`);
    const { rows: top } = await query<{ max: number | null }>(client, doing, `SELECT max(epoch) AS max FROM ${epochsTable(ctx)}`);
    const expected = (top[0]?.max ?? 0) + 1;
    if (input.epoch !== expected) {
      throw new LetheError(ErrorCode.VAULT, `a master-key rotation to epoch ${input.epoch} found the vault expecting epoch ${expected}: another rotation ran meanwhile; run it again`);
    }
    const { rows: retired } = await query<{ epoch: number }>(
      client,
      doing,
      `UPDATE ${epochsTable(ctx)} SET retired_at = now(), reason = $1 WHERE retired_at IS NULL RETURNING epoch`,
      [input.reason],
    );
    await query(
      client,
      doing,
      `INSERT INTO ${epochsTable(ctx)} (epoch, provider, reference, recipient) VALUES ($1, $2, $3, $4)`,
      [input.epoch, input.provider, input.reference, input.recipient],
    );
    let rewrapped = 0;
    let after = '';
    for (;;) {
      throwIfAborted(input.signal, doing);
      const { rows } = await query<{ id: string; master_epoch: number | null; wrapped_identity: Buffer }>(
        client,
        doing,
        `SELECT id, master_epoch, wrapped_identity FROM ${ctx.t.dimensionKeys}
          WHERE wrapped_identity IS NOT NULL AND master_epoch IS DISTINCT FROM $1 AND id > $2
          ORDER BY id LIMIT $3 FOR UPDATE`,
        [input.epoch, after, pageRows],
      );
      if (rows.length === 0) break;
      const ids: string[] = [];
      const wraps: Uint8Array[] = [];
      for (const row of rows) {
        ids.push(row.id);
        wraps.push(await input.rewrap(row.id, row.master_epoch, row.wrapped_identity));
      }
      await query(
        client,
        doing,
        `UPDATE ${ctx.t.dimensionKeys} d SET wrapped_identity = u.wrapped, master_epoch = $3
           FROM unnest($1::text[], $2::bytea[]) AS u(id, wrapped) WHERE d.id = u.id AND d.wrapped_identity IS NOT NULL`,
        [ids, wraps, input.epoch],
      );
      rewrapped += rows.length;
      after = rows[rows.length - 1]?.id ?? after;
      if (rows.length < pageRows) break;
    }
    const entry = await appendAuditInTransaction(ctx, client, {
      actor: input.actor,
      action: 'master.rotate',
      subject: `epoch ${input.epoch}`,
      details: { epoch: input.epoch, provider: input.provider, reference: input.reference, recipient: input.recipient, retired: retired.map((r) => r.epoch), rewrapped, reason: input.reason },
    });
    return { epoch: input.epoch, retired: retired.map((r) => r.epoch), rewrapped, auditSeq: entry.seq };
  });
}

/**
 * Records that epoch `epoch`'s key was destroyed in its provider, with a `master.destroy`
 * audit entry, in one transaction. Refuses (VAULT) an epoch that is current or still wraps
 * a live key: destroying it would shred what lethe keeps. Idempotent: an epoch already
 * recorded as destroyed keeps its record (returns false).
 */
export async function recordMasterEpochDestroyed(
  ctx: VaultContext,
  input: { epoch: number; actor: string; reason: string; at: Date },
): Promise<boolean> {
  const doing = `recording the destruction of master-key epoch ${input.epoch}`;
  return inTransaction(ctx.pool, doing, async (client) => {
    const { rows } = await query<{ retired_at: Date | null; destroyed_at: Date | null; live: boolean }>(
      client,
      doing,
      `SELECT retired_at, destroyed_at,
              EXISTS (SELECT 1 FROM ${ctx.t.dimensionKeys} WHERE master_epoch = $1 AND wrapped_identity IS NOT NULL) AS live
         FROM ${epochsTable(ctx)} WHERE epoch = $1 FOR UPDATE`,
      [input.epoch],
    );
    const row = rows[0];
    if (row === undefined) throw new LetheError(ErrorCode.VAULT, `the vault has no master-key epoch ${input.epoch}`);
    if (row.destroyed_at !== null) return false;
    if (row.retired_at === null || row.live) {
      throw new LetheError(ErrorCode.VAULT, `master-key epoch ${input.epoch} is ${row.retired_at === null ? 'current' : 'still wrapping live keys'}: rotate (\`lethe keys rotate-master\`) before destroying it`);
    }
    await query(
      client,
      doing,
      `UPDATE ${epochsTable(ctx)} SET destroyed_at = $2, reason = reason || '; destroyed: ' || $3 WHERE epoch = $1`,
      [input.epoch, input.at, input.reason],
    );
    await appendAuditInTransaction(ctx, client, {
      actor: input.actor,
      action: 'master.destroy',
      subject: `epoch ${input.epoch}`,
      details: { epoch: input.epoch, reason: input.reason },
    });
    return true;
  });
}

/**
 * The wrapped identity and its master epoch for each of `ids` that exists: null when the key
 * was destroyed. `epoch` is null for a wrap made before epochs existed.
 */
export async function getWrappedDimensionKeysWithEpoch(
  ctx: VaultContext,
  ids: readonly string[],
): Promise<Map<string, { epoch: number | null; wrapped: Uint8Array } | null>> {
  const found = new Map<string, { epoch: number | null; wrapped: Uint8Array } | null>();
  if (ids.length === 0) return found;
  const { rows } = await query<{ id: string; master_epoch: number | null; wrapped_identity: Buffer | null }>(
    ctx.pool,
    'reading wrapped dimension keys from the vault',
    `SELECT id, master_epoch, wrapped_identity FROM ${ctx.t.dimensionKeys} WHERE id = ANY($1::text[])`,
    [[...new Set(ids)]],
  );
  for (const row of rows) found.set(row.id, row.wrapped_identity === null ? null : { epoch: row.master_epoch, wrapped: row.wrapped_identity });
  return found;
}

/** True when a destroyed dimension key is still wrapped to the current epoch (a rotation would make its shred final). */
export async function currentEpochHoldsDestroyedKeys(ctx: VaultContext): Promise<boolean> {
  const { rows } = await query<{ any: boolean }>(
    ctx.pool,
    'looking for destroyed keys of the current master epoch',
    `SELECT EXISTS (SELECT 1 FROM ${ctx.t.dimensionKeys} d JOIN ${epochsTable(ctx)} e ON e.epoch = d.master_epoch
                     WHERE d.wrapped_identity IS NULL AND e.retired_at IS NULL) AS any`,
  );
  return rows[0]?.any === true;
}

/** The distinct master epochs the dimension keys `ids` are (or were, when destroyed) wrapped to, ascending. */
export async function masterEpochsOfKeys(ctx: VaultContext, ids: readonly string[]): Promise<number[]> {
  if (ids.length === 0) return [];
  const { rows } = await query<{ epoch: number }>(
    ctx.pool,
    'reading the master epochs of dimension keys',
    `SELECT DISTINCT master_epoch AS epoch FROM ${ctx.t.dimensionKeys} WHERE id = ANY($1::text[]) AND master_epoch IS NOT NULL ORDER BY 1`,
    [[...new Set(ids)]],
  );
  return rows.map((r) => r.epoch);
}
