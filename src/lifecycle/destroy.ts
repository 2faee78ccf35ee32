import { createHash } from 'node:crypto';
import { sign, verifySignature } from '../crypto/index.ts';
import { ErrorCode, LetheError } from '../errors/index.ts';
import type { ObjectStore } from '../storage/index.ts';
import { canonicalJson, type Vault } from '../vault/index.ts';
import type { DestructionCause } from './types.ts';

/** The tombstone's format tag (`destructions/<sha256 of key id>.json`). */
export const TOMBSTONE_FORMAT = 'lethe.destruction.v1';

export interface DestroyKeysInput {
  /** Dimension key ids. Ids that are not in the vault are skipped (and not returned). */
  readonly keyIds: readonly string[];
  readonly actor: string;
  /** A human sentence: why these keys go. */
  readonly reason: string;
  readonly cause: DestructionCause;
}

export interface DestroyedKey {
  readonly keyId: string;
  readonly destroyedAt: Date;
  readonly auditSeq: number;
  readonly auditHash: string;
}

/** A tombstone as stored in the bucket: what a restored old vault must destroy again. */
export interface Tombstone {
  readonly format: typeof TOMBSTONE_FORMAT;
  readonly keyId: string;
  readonly kind: string;
  readonly tenant: string | null;
  readonly destroyedAt: string;
  readonly actor: string;
  readonly reason: string;
  readonly cause: DestructionCause;
  /**
   * Ed25519 over `lethe.destruction.v1\n` + the canonical JSON of every other field, by the
   * vault's manifest signing key: a restored vault re-destroys only keys a tombstone lethe
   * signed names, so whoever can write to the bucket cannot shred keys by planting one.
   */
  readonly signature: { readonly keyId: string; readonly value: string };
}

/** The bytes a tombstone's signature covers. */
export function tombstoneMessage(tombstone: Omit<Tombstone, 'signature'> & { signature?: unknown }): Uint8Array {
  const { signature: _signature, ...fields } = tombstone;
  return new TextEncoder().encode(`${TOMBSTONE_FORMAT}\n${canonicalJson(fields)}`);
}

/** True when `tombstone` carries a valid signature by one of `publicKeys` (id → key). */
export function tombstoneSignedBy(tombstone: Tombstone, publicKeys: ReadonlyMap<string, string>): boolean {
  const publicKey = publicKeys.get(tombstone.signature.keyId);
  return publicKey !== undefined && verifySignature(publicKey, tombstoneMessage(tombstone), tombstone.signature.value);
}

/** The bucket key of a dimension key's tombstone: `destructions/<sha256 hex of the id>.json`. */
export function tombstoneKey(keyId: string): string {
  return `destructions/${createHash('sha256').update(keyId, 'utf8').digest('hex')}.json`;
}

/**
 * Crypto-shreds dimension keys, for good:
 *
 * 1. puts a tombstone per key into the bucket (an existing tombstone is kept, never
 *    overwritten), BEFORE the vault forgets anything, so a vault restored from an older
 *    backup can always learn that the key must go;
 * 2. in ONE vault transaction: wrapped identity NULL + destroyed_at, the destructions row,
 *    the `key.destroy` audit entry (details: keyId, cause, reason) whose seq the row keeps;
 * 3. deletes held (re-wrapped) cell keys that need a destroyed case key;
 * 4. VACUUM FULL of dimension_keys and held_cell_keys, so no dead row version keeps the
 *    wrapped bytes in the tables' files.
 *
 * Idempotent: keys already destroyed and recorded come back with their existing record and
 * nothing is redone for them (steps 3 and 4 still run, so a run killed after step 2 is
 * finished by the next). Ids the vault does not know are skipped and left out of the result,
 * so the caller can tell "no key existed". Returns one entry per destroyed key, in input
 * order. Throws STORAGE / DATABASE as they come; a failure in step 1 destroys nothing.
 *
 * Never logs or returns key material: only ids, times and the audit position.
 */
export async function destroyKeys(
  vault: Vault,
  store: ObjectStore,
  input: DestroyKeysInput,
): Promise<DestroyedKey[]> {
  if (input.actor.trim() === '' || input.reason.trim() === '') {
    throw new LetheError(ErrorCode.USAGE, 'destroying keys needs an actor and a reason (both non-empty)');
  }
  const ids = [...new Set(input.keyIds)];
  if (ids.length === 0) return [];
  const known = await vault.getDimensionKeys(ids);
  const recorded = await vault.getDestructions(ids);
  const now = new Date();
  const signingKey = await vault.getActiveSigningKey();
  if (signingKey === null) throw new LetheError(ErrorCode.VAULT, 'the vault has no signing key to sign tombstones with: run `lethe init`');

  for (const id of ids) {
    const info = known.get(id);
    if (info === undefined) continue;
    const previous = recorded.get(id);
    const fields: Omit<Tombstone, 'signature'> = {
      format: TOMBSTONE_FORMAT,
      keyId: id,
      kind: info.kind,
      tenant: info.tenant,
      destroyedAt: (previous?.destroyedAt ?? now).toISOString(),
      actor: previous?.actor ?? input.actor,
      reason: previous?.reason ?? input.reason,
      cause: previous?.cause ?? input.cause,
    };
    const signature = { keyId: signingKey.id, value: sign(signingKey.privateKey, tombstoneMessage(fields)) };
    await putTombstone(store, { ...fields, signature });
  }

  const records = await vault.recordKeyDestructions(
    ids
      .filter((id) => known.has(id))
      .map((keyId) => ({ keyId, destroyedAt: now, actor: input.actor, reason: input.reason, cause: input.cause })),
  );

  const caseKeys = records.map((r) => r.keyId).filter((id) => known.get(id)?.kind === 'case');
  if (caseKeys.length > 0) await vault.deleteHeldForCase(caseKeys);
  if (records.length > 0) await vault.vacuumKeyTables();

  const byId = new Map(records.map((r) => [r.keyId, r]));
  const out: DestroyedKey[] = [];
  for (const id of ids) {
    const r = byId.get(id);
    if (r !== undefined) {
      out.push({ keyId: r.keyId, destroyedAt: r.destroyedAt, auditSeq: r.auditSeq, auditHash: r.auditHash });
    }
  }
  return out;
}

/** Puts a tombstone unless one is already there (head first: tombstones are never overwritten). */
async function putTombstone(store: ObjectStore, tombstone: Tombstone): Promise<void> {
  const key = tombstoneKey(tombstone.keyId);
  if ((await store.head(key)) !== null) return;
  await store.put(key, new TextEncoder().encode(`${JSON.stringify(tombstone)}\n`));
}
