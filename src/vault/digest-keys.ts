import { ErrorCode, LetheError } from '../errors/index.ts';
import { chunks, distinct, query, type VaultContext } from './db.ts';

/** Shortest digest key accepted (the column's CHECK says the same). */
export const MIN_DIGEST_KEY_BYTES = 16;

/**
 * The digest (MAC) key of each tenant in `tenants` ('' is the system tenant), creating
 * missing ones with `create` (called once per missing tenant). Concurrent callers
 * converge: one key per tenant wins and everyone gets it, so keyed digests stay
 * comparable between runs.
 *
 * These keys are secrets: they never appear in errors. Throws KEY when `create` returns
 * fewer than {@link MIN_DIGEST_KEY_BYTES} bytes.
 */
export async function getOrCreateDigestKeys(
  ctx: VaultContext,
  tenants: readonly string[],
  create: () => Uint8Array,
): Promise<Map<string, Uint8Array>> {
  const wanted = distinct(tenants);
  const found = await readDigestKeys(ctx, wanted);
  const missing = wanted.filter((t) => !found.has(t));
  if (missing.length === 0) return found;

  const fresh = missing.map((tenant) => {
    const key = create();
    if (key.length < MIN_DIGEST_KEY_BYTES) {
      throw new LetheError(
        ErrorCode.KEY,
        `the digest key generator returned ${key.length} bytes for tenant ${JSON.stringify(tenant)}; ` +
          `at least ${MIN_DIGEST_KEY_BYTES} are needed`,
      );
    }
    return { tenant, key };
  });
  for (const batch of chunks(fresh)) {
    await query(
      ctx.pool,
      'storing new digest keys in the vault',
      `INSERT INTO ${ctx.t.digestKeys} (tenant, key)
       SELECT * FROM unnest($1::text[], $2::bytea[]) ON CONFLICT (tenant) DO NOTHING`,
      [batch.map((f) => f.tenant), batch.map((f) => f.key)],
    );
  }
  for (const [tenant, key] of await readDigestKeys(ctx, missing)) found.set(tenant, key);
  const lost = missing.filter((t) => !found.has(t));
  if (lost.length > 0) {
    throw new LetheError(
      ErrorCode.VAULT,
      `digest keys for tenant(s) ${lost
        .slice(0, 5)
        .map((t) => JSON.stringify(t))
        .join(', ')} ` +
        'vanished right after being stored: is something else deleting rows from the vault?',
    );
  }
  return found;
}

/**
 * The digest keys that exist for `tenants` ('' is the system tenant); never creates one.
 * For restore and verify, which must compare digests but have no business minting keys.
 */
export async function getDigestKeys(
  ctx: VaultContext,
  tenants: readonly string[],
): Promise<Map<string, Uint8Array>> {
  return readDigestKeys(ctx, distinct(tenants));
}

async function readDigestKeys(
  ctx: VaultContext,
  tenants: readonly string[],
): Promise<Map<string, Uint8Array>> {
  const found = new Map<string, Uint8Array>();
  for (const batch of chunks(tenants)) {
    const { rows } = await query<{ tenant: string; key: Buffer }>(
      ctx.pool,
      'reading digest keys from the vault',
      `SELECT tenant, key FROM ${ctx.t.digestKeys} WHERE tenant = ANY($1::text[])`,
      [batch],
    );
    for (const row of rows) found.set(row.tenant, row.key);
  }
  return found;
}
