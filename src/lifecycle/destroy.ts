import { createHash } from 'node:crypto';
import { z } from 'zod';
import { verifySignature } from '../crypto/index.ts';
import { ErrorCode, LetheError, isLetheError } from '../errors/index.ts';
import type { Signer } from '../keys/index.ts';
import type { ObjectLock, ObjectStore } from '../storage/index.ts';
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
  /** The lifecycle signing key: tombstones are signed with it. */
  readonly signer: Signer;
  /** Lock for new tombstones (the configured object lock, long enough to outlive the grace window). */
  readonly tombstoneLock?: ObjectLock;
}

/** An object under `destructions/` that is not a tombstone lethe signed for the key its name says. */
export interface ForeignTombstone {
  readonly key: string;
  readonly problem: string;
}

export interface DestroyKeysResult {
  /** One entry per destroyed key, in input order. */
  readonly destroyed: DestroyedKey[];
  /**
   * Objects found where a key's tombstone belongs that lethe did not write (garbage, a
   * tombstone for another key, a bad signature): reported, never trusted. lethe wrote its own
   * tombstone for that key under a name nobody can take in advance.
   */
  readonly foreignTombstones: ForeignTombstone[];
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
   * lifecycle signing key (whose private half the vault never holds): a restored vault
   * re-destroys only keys a tombstone lethe signed names, so whoever can write to the bucket
   * cannot shred keys by planting one, nor suppress one by planting garbage in its place.
   */
  readonly signature: { readonly keyId: string; readonly value: string };
}

// Loose: a field a later lethe adds to a tombstone or cause is kept, not a reason to refuse.
const CauseSchema = z.union([
  z.looseObject({
    kind: z.literal('retention'),
    class: z.string(),
    period: z.string(),
    maxAge: z.string(),
    dueSince: z.string(),
  }),
  z.looseObject({
    kind: z.literal('erasure'),
    request: z.string(),
    scope: z.enum(['user', 'conversation', 'tenant']),
  }),
  z.looseObject({ kind: z.literal('hold-release'), case: z.string() }),
]);

export const TombstoneSchema = z.looseObject({
  format: z.literal(TOMBSTONE_FORMAT),
  keyId: z.string().min(1),
  kind: z.string(),
  tenant: z.string().nullable(),
  destroyedAt: z.iso.datetime(),
  actor: z.string().min(1),
  reason: z.string().min(1),
  cause: CauseSchema,
  signature: z.strictObject({ keyId: z.string().min(1), value: z.string().min(1) }),
});

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

const DAY_MS = 86_400_000;

/**
 * The lock for tombstones and certificates when the store locks objects: the configured mode,
 * until `retainDays` or the grace window from now, whichever is later. A tombstone must
 * outlive every vault backup older than the destruction (those are gone by the end of the
 * grace window), or deleting it would let a restore of such a backup bring the key back.
 */
export function tombstoneLock(
  objectLock: { mode: ObjectLock['mode']; retainDays: number } | undefined,
  graceWindowDays: number,
  now: Date,
): ObjectLock | undefined {
  if (objectLock === undefined) return undefined;
  return { mode: objectLock.mode, retainUntil: new Date(now.getTime() + Math.max(objectLock.retainDays, graceWindowDays) * DAY_MS) };
}

const sha256Hex = (text: string | Uint8Array): string => createHash('sha256').update(text).digest('hex');

/** The bucket key of a dimension key's tombstone: `destructions/<sha256 hex of the id>.json`. */
export function tombstoneKey(keyId: string): string {
  return `destructions/${sha256Hex(Buffer.from(keyId, 'utf8'))}.json`;
}

/**
 * Where a tombstone goes when its usual name is taken by an object lethe did not write:
 * `destructions/<sha256 of the id>.<32 hex of the sha256 of the signed tombstone>.json`.
 * The name depends on the signature, which only the lifecycle key can make, so nobody can
 * occupy it in advance.
 */
export function alternateTombstoneKey(keyId: string, body: Uint8Array): string {
  return `destructions/${sha256Hex(Buffer.from(keyId, 'utf8'))}.${sha256Hex(body).slice(0, 32)}.json`;
}

/** True when `objectKey` is a place a tombstone for `keyId` may be stored. */
export function isTombstoneKeyFor(objectKey: string, keyId: string): boolean {
  const base = `destructions/${sha256Hex(Buffer.from(keyId, 'utf8'))}`;
  return objectKey === `${base}.json` || new RegExp(`^${base}\\.[0-9a-f]{32}\\.json$`).test(objectKey);
}

/**
 * Crypto-shreds dimension keys, for good:
 *
 * 1. puts a tombstone per key into the bucket, signed with the lifecycle key, BEFORE the
 *    vault forgets anything, so a vault restored from an older backup can always learn that
 *    the key must go. An object already at the tombstone's name is kept only when it is a
 *    tombstone lethe signed for that very key; anything else there is reported (result
 *    `foreignTombstones`) and the tombstone goes under {@link alternateTombstoneKey};
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
): Promise<DestroyKeysResult> {
  if (input.actor.trim() === '' || input.reason.trim() === '') {
    throw new LetheError(ErrorCode.USAGE, 'destroying keys needs an actor and a reason (both non-empty)');
  }
  const ids = [...new Set(input.keyIds)];
  if (ids.length === 0) return { destroyed: [], foreignTombstones: [] };
  // Before anything is destroyed: a role that cannot VACUUM would leave the keys on disk.
  await vault.checkKeyTablesVacuumable();
  const known = await vault.getDimensionKeys(ids);
  const recorded = await vault.getDestructions(ids);
  const now = new Date();
  const trusted = await vault.getSigningPublicKeys(['lifecycle', 'legacy']);
  const foreignTombstones: ForeignTombstone[] = [];

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
    const signature = { keyId: input.signer.id, value: input.signer.sign(tombstoneMessage(fields)) };
    const foreign = await putTombstone(store, { ...fields, signature }, trusted, input.tombstoneLock);
    if (foreign !== null) foreignTombstones.push(foreign);
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
  return { destroyed: out, foreignTombstones };
}

/**
 * Why `bytes` is not a tombstone for `keyId` signed by one of `trusted`, or null when it is.
 * Never throws.
 */
export function tombstoneProblem(bytes: Uint8Array, keyId: string, trusted: ReadonlyMap<string, string>): string | null {
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(bytes).toString('utf8'));
  } catch {
    return 'not JSON';
  }
  const t = TombstoneSchema.safeParse(parsed);
  if (!t.success) return `not a ${TOMBSTONE_FORMAT} tombstone`;
  if (t.data.keyId !== keyId) return `a tombstone for another key (${t.data.keyId})`;
  return tombstoneSignedBy(t.data, trusted) ? null : `not signed by a lifecycle key of this vault (key ${t.data.signature.keyId})`;
}

/**
 * Puts a tombstone, keeping one already at its name only when lethe signed it for this key.
 * Returns the foreign object found at the name, if any (the tombstone then goes under the
 * alternate name).
 */
async function putTombstone(
  store: ObjectStore,
  tombstone: Tombstone,
  trusted: ReadonlyMap<string, string>,
  lock: ObjectLock | undefined,
): Promise<ForeignTombstone | null> {
  const body = new TextEncoder().encode(`${JSON.stringify(tombstone)}\n`);
  const key = tombstoneKey(tombstone.keyId);
  const options = lock === undefined ? {} : { lock };
  let existing: Uint8Array | null;
  try {
    existing = await store.getBytes(key);
  } catch (err) {
    if (!isLetheError(err, ErrorCode.NOT_FOUND)) throw err;
    existing = null;
  }
  if (existing === null) {
    await store.put(key, body, options);
    return null;
  }
  const problem = tombstoneProblem(existing, tombstone.keyId, trusted);
  if (problem === null) return null;
  await store.put(alternateTombstoneKey(tombstone.keyId, body), body, options);
  return { key, problem };
}
