import { destroyKeys, isTombstoneKeyFor, TombstoneSchema, tombstoneSignedBy, type Tombstone } from '../lifecycle/destroy.ts';
import type { Signer } from '../keys/index.ts';
import type { ObjectStore } from '../storage/index.ts';
import { canonicalJson, type Vault } from '../vault/index.ts';

/** Where destroyKeys leaves one tombstone per destroyed dimension key. */
export const TOMBSTONE_PREFIX = 'destructions/';

type ParsedTombstone = Tombstone;

/** An object under `destructions/` that is not a tombstone lethe signed for the key its name says. */
export interface IgnoredTombstone {
  readonly key: string;
  readonly problem: string;
}

/** A key a restored vault still held although the bucket says it was destroyed. */
export interface ReappliedDestruction {
  readonly keyId: string;
  /** When it was first destroyed, per its tombstone. */
  readonly firstDestroyedAt: string;
  /** When it was destroyed again, and the audit entry that records it. */
  readonly destroyedAt: string;
  readonly auditSeq: number;
}

/**
 * Reads every object under `destructions/` and destroys again, with lifecycle's destroyKeys
 * (same cause, the original reason, `actor` as actor, tombstones signed by `signer`), each
 * key that a valid tombstone names and the vault still holds. A valid tombstone is signed by
 * a lifecycle (or legacy) key of the vault and stored under a name for the key it names
 * (see isTombstoneKeyFor). Anything else there is ignored and returned in `ignored`: trusting
 * it would let whoever can write to the bucket shred keys, and stopping on it would let them
 * block every vault restore. Keys the vault never had are counted, not created.
 */
export async function reapplyTombstones(
  vault: Vault,
  store: ObjectStore,
  context: { key: string; actor: string; signer: Signer },
): Promise<{ reapplied: ReappliedDestruction[]; alreadyApplied: number; unknownKeys: number; ignored: IgnoredTombstone[] }> {
  const tombstones = new Map<string, ParsedTombstone>();
  const ignored: IgnoredTombstone[] = [];
  const publicKeys = await vault.getSigningPublicKeys(['lifecycle', 'legacy']);
  for await (const object of store.list(TOMBSTONE_PREFIX)) {
    let raw: unknown;
    try {
      raw = JSON.parse(Buffer.from(await store.getBytes(object.key)).toString('utf8'));
    } catch {
      raw = undefined;
    }
    const parsed = TombstoneSchema.safeParse(raw);
    const problem = !parsed.success
      ? 'not a tombstone'
      : !isTombstoneKeyFor(object.key, parsed.data.keyId)
        ? `it names ${parsed.data.keyId}, whose tombstones are stored under another name`
        : !tombstoneSignedBy(parsed.data, publicKeys)
          ? `not signed by a lifecycle key of this vault (key ${parsed.data.signature.keyId})`
          : null;
    if (problem !== null || !parsed.success) {
      ignored.push({ key: object.key, problem: problem ?? 'not a tombstone' });
      continue;
    }
    // A key may have a tombstone under its usual and its alternate name: either will do.
    if (!tombstones.has(parsed.data.keyId)) tombstones.set(parsed.data.keyId, parsed.data);
  }
  const ids = [...tombstones.keys()];
  const known = await vault.getDimensionKeys(ids);
  const wrapped = await vault.getWrappedDimensionIdentities(ids);
  const recorded = await vault.getDestructions(ids);
  let alreadyApplied = 0;
  let unknownKeys = 0;
  const groups = new Map<string, ParsedTombstone[]>();
  for (const t of tombstones.values()) {
    if (!known.has(t.keyId)) {
      unknownKeys += 1;
      continue;
    }
    if (wrapped.get(t.keyId) === null && recorded.has(t.keyId)) {
      alreadyApplied += 1;
      continue;
    }
    // One destroyKeys call per (cause, reason, actor): the record keeps what the tombstone says.
    const group = canonicalJson({ cause: t.cause, reason: t.reason, actor: t.actor });
    groups.set(group, [...(groups.get(group) ?? []), t]);
  }
  const reapplied: ReappliedDestruction[] = [];
  for (const group of groups.values()) {
    const [first] = group;
    if (first === undefined) continue;
    const { destroyed, foreignTombstones } = await destroyKeys(vault, store, {
      keyIds: group.map((t) => t.keyId),
      actor: context.actor,
      reason:
        `${first.reason} (destroyed by ${first.actor}; destroyed again after the vault was restored ` +
        `from ${context.key}, which predates it)`,
      cause: first.cause,
      signer: context.signer,
    });
    for (const f of foreignTombstones) if (!ignored.some((i) => i.key === f.key)) ignored.push(f);
    const firstAt = new Map(group.map((t) => [t.keyId, t.destroyedAt]));
    for (const d of destroyed) {
      reapplied.push({
        keyId: d.keyId,
        firstDestroyedAt: firstAt.get(d.keyId) ?? '',
        destroyedAt: d.destroyedAt.toISOString(),
        auditSeq: d.auditSeq,
      });
    }
  }
  return { reapplied, alreadyApplied, unknownKeys, ignored };
}
