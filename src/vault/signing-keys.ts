import { ErrorCode, LetheError } from '../errors/index.ts';
import { inTransaction, query, type VaultContext } from './db.ts';

/** A manifest signing key pair. */
export interface SigningKey {
  readonly id: string;
  /** Published in manifests' signatures so verifiers can pick the key. */
  readonly publicKey: string;
  /**
   * Secret. Stored as given: the caller chooses the encoding (and whether it is wrapped).
   * Never put it in errors or logs.
   */
  readonly privateKey: Uint8Array;
}

interface SigningKeyRow {
  id: string;
  public_key: string;
  private_key: Buffer;
}

/** The key new manifests are signed with, or null before the first one is created. */
export async function getActiveSigningKey(ctx: VaultContext): Promise<SigningKey | null> {
  const { rows } = await query<SigningKeyRow>(
    ctx.pool,
    'reading the active signing key',
    `SELECT id, public_key, private_key FROM ${ctx.t.signingKeys} WHERE retired_at IS NULL`,
  );
  const row = rows[0];
  return row === undefined
    ? null
    : { id: row.id, publicKey: row.public_key, privateKey: row.private_key };
}

/**
 * Stores `key` and returns the key that is active afterwards.
 *
 * Without `rotate`, `key` becomes active only if no key is: concurrent first runs
 * converge on one winner, and callers must sign with the returned key. With `rotate`, the
 * active key is retired (kept, so old manifests still verify) and `key` becomes active.
 *
 * Throws DATABASE when `key.id` or `key.publicKey` is already stored.
 */
export async function insertSigningKey(
  ctx: VaultContext,
  key: SigningKey,
  options: { rotate?: boolean } = {},
): Promise<SigningKey> {
  const doing = `storing signing key ${key.id}`;
  const values = [key.id, key.publicKey, key.privateKey];
  if (options.rotate === true) {
    return inTransaction(ctx.pool, doing, async (client) => {
      // Serialise rotations: two at once would otherwise both retire and both insert.
      await query(client, doing, `LOCK TABLE ${ctx.t.signingKeys} IN SHARE ROW EXCLUSIVE MODE`);
      await query(
        client,
        doing,
        `UPDATE ${ctx.t.signingKeys} SET retired_at = now() WHERE retired_at IS NULL`,
      );
      await query(
        client,
        doing,
        `INSERT INTO ${ctx.t.signingKeys} (id, public_key, private_key) VALUES ($1, $2, $3)`,
        values,
      );
      return key;
    });
  }
  // The conflict target is the one-active-key index, so a duplicate id or public key
  // still raises instead of being silently dropped.
  await query(
    ctx.pool,
    doing,
    `INSERT INTO ${ctx.t.signingKeys} (id, public_key, private_key) VALUES ($1, $2, $3)
     ON CONFLICT ((true)) WHERE retired_at IS NULL DO NOTHING`,
    values,
  );
  const active = await getActiveSigningKey(ctx);
  if (active === null) {
    throw new LetheError(
      ErrorCode.VAULT,
      `${doing}: no signing key is active right after storing one`,
    );
  }
  return active;
}

/** Every signing key's public half (retired ones too), by id, to verify any manifest. */
export async function getSigningPublicKeys(ctx: VaultContext): Promise<Map<string, string>> {
  const { rows } = await query<{ id: string; public_key: string }>(
    ctx.pool,
    'reading signing public keys',
    `SELECT id, public_key FROM ${ctx.t.signingKeys} ORDER BY created_at, id`,
  );
  return new Map(rows.map((r) => [r.id, r.public_key]));
}
