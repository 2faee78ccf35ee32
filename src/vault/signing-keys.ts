import { ErrorCode, LetheError } from '../errors/index.ts';
import { inTransaction, query, type VaultContext } from './db.ts';

/**
 * What a signing key signs. `backup`: manifests and the audit objects the backup exports.
 * `lifecycle`: tombstones, destruction certificates, vault backups. `legacy`: a key from
 * before the vault stopped holding private halves (vault schema 4); it signed all of these,
 * and its private half was stored in the vault, so it is retired and only ever verifies.
 */
export type SigningPurpose = 'backup' | 'lifecycle' | 'legacy';

/** The public half of a signing key, as the vault records it. Private halves never enter the vault. */
export interface SigningPublicKey {
  readonly id: string;
  readonly purpose: SigningPurpose;
  /** base64 of the raw 32-byte Ed25519 public key. */
  readonly publicKey: string;
  readonly createdAt: Date;
  readonly retiredAt: Date | null;
}

interface Row {
  id: string;
  purpose: SigningPurpose;
  public_key: string;
  created_at: Date;
  retired_at: Date | null;
}

const toKey = (r: Row): SigningPublicKey => ({
  id: r.id,
  purpose: r.purpose,
  publicKey: r.public_key,
  createdAt: r.created_at,
  retiredAt: r.retired_at,
});

/** Every signing key's public half, oldest first. */
export async function listSigningKeys(ctx: VaultContext): Promise<SigningPublicKey[]> {
  const { rows } = await query<Row>(
    ctx.pool,
    'reading signing keys',
    `SELECT id, purpose, public_key, created_at, retired_at FROM ${ctx.t.signingKeys} ORDER BY created_at, id`,
  );
  return rows.map(toKey);
}

/**
 * The public halves (id → base64 key) of every key, retired ones too, whose purpose is one
 * of `purposes`: what a reader checks a signature of that kind against. A manifest is
 * trusted only under a `backup` (or `legacy`) key, a tombstone only under a `lifecycle` (or
 * `legacy`) key, so one job's key cannot vouch for another job's objects.
 */
export async function getSigningPublicKeys(
  ctx: VaultContext,
  purposes: readonly SigningPurpose[],
): Promise<Map<string, string>> {
  const { rows } = await query<{ id: string; public_key: string }>(
    ctx.pool,
    'reading signing public keys',
    `SELECT id, public_key FROM ${ctx.t.signingKeys} WHERE purpose = ANY($1::text[]) ORDER BY created_at, id`,
    [purposes],
  );
  return new Map(rows.map((r) => [r.id, r.public_key]));
}

/**
 * Records `key` (public half only) as the active key for its purpose. When another key is
 * active for that purpose it is retired (kept, so what it signed still verifies): replacing
 * a key file and running `lethe init` is a rotation. Returns whether anything changed.
 *
 * Throws SIGNING_KEY when the key is already recorded for another purpose, or was retired
 * (a retired key is never made active again: generate a new one), and for `legacy`, which
 * is never registered.
 */
export async function registerSigningKey(
  ctx: VaultContext,
  key: { id: string; purpose: Exclude<SigningPurpose, 'legacy'>; publicKey: string },
): Promise<{ changed: boolean; retired: string[] }> {
  const doing = `registering ${key.purpose} signing key ${key.id}`;
  return inTransaction(ctx.pool, doing, async (client) => {
    // Serialise registrations: two at once would otherwise both retire and both insert.
    await query(client, doing, `LOCK TABLE ${ctx.t.signingKeys} IN SHARE ROW EXCLUSIVE MODE`);
    const { rows } = await query<Row>(
      client,
      doing,
      `SELECT id, purpose, public_key, created_at, retired_at FROM ${ctx.t.signingKeys} WHERE id = $1 OR public_key = $2`,
      [key.id, key.publicKey],
    );
    const known = rows[0];
    if (known !== undefined) {
      if (known.purpose !== key.purpose || known.public_key !== key.publicKey) {
        throw new LetheError(
          ErrorCode.SIGNING_KEY,
          `${doing}: the vault already records this key as a ${known.purpose} key; each job needs a key of its own`,
        );
      }
      if (known.retired_at !== null) {
        throw new LetheError(
          ErrorCode.SIGNING_KEY,
          `${doing}: this key was retired on ${known.retired_at.toISOString()} and is never used again; ` +
            'move the key file aside and run `lethe init` to create a new one',
        );
      }
      return { changed: false, retired: [] };
    }
    const retired = await query<{ id: string }>(
      client,
      doing,
      `UPDATE ${ctx.t.signingKeys} SET retired_at = now() WHERE purpose = $1 AND retired_at IS NULL RETURNING id`,
      [key.purpose],
    );
    await query(
      client,
      doing,
      `INSERT INTO ${ctx.t.signingKeys} (id, purpose, public_key) VALUES ($1, $2, $3)`,
      [key.id, key.purpose, key.publicKey],
    );
    return { changed: true, retired: retired.rows.map((r) => r.id) };
  });
}

/** The id of the active key for `purpose`, or null when none is registered. */
export async function activeSigningKeyId(ctx: VaultContext, purpose: Exclude<SigningPurpose, 'legacy'>): Promise<string | null> {
  const { rows } = await query<{ id: string }>(
    ctx.pool,
    `reading the active ${purpose} signing key`,
    `SELECT id FROM ${ctx.t.signingKeys} WHERE purpose = $1 AND retired_at IS NULL`,
    [purpose],
  );
  return rows[0]?.id ?? null;
}
