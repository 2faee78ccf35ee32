import { z } from 'zod';
import { ErrorCode, LetheError } from '../errors/index.ts';
import { destroyKeys, TOMBSTONE_FORMAT, tombstoneKey, tombstoneSignedBy } from '../lifecycle/destroy.ts';
import type { ObjectStore } from '../storage/index.ts';
import { canonicalJson, type Vault } from '../vault/index.ts';

/** Where destroyKeys leaves one tombstone per destroyed dimension key. */
export const TOMBSTONE_PREFIX = 'destructions/';

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

const TombstoneSchema = z.looseObject({
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

type ParsedTombstone = z.infer<typeof TombstoneSchema>;

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
 * Reads every tombstone under `destructions/` and destroys again, with lifecycle's
 * destroyKeys (same cause, the original reason, `actor` as actor), each named key the vault
 * still holds. Keys the vault never had are counted, not created. Throws INTEGRITY for a
 * tombstone lethe did not write (unreadable, or filed under another key's name), before
 * destroying anything: the operator must look at the bucket before the restore can finish.
 */
export async function reapplyTombstones(
  vault: Vault,
  store: ObjectStore,
  context: { key: string; actor: string },
): Promise<{ reapplied: ReappliedDestruction[]; alreadyApplied: number; unknownKeys: number }> {
  const tombstones: ParsedTombstone[] = [];
  const publicKeys = await vault.getSigningPublicKeys();
  for await (const object of store.list(TOMBSTONE_PREFIX)) {
    let raw: unknown;
    try {
      raw = JSON.parse(Buffer.from(await store.getBytes(object.key)).toString('utf8'));
    } catch {
      raw = undefined;
    }
    const parsed = TombstoneSchema.safeParse(raw);
    if (
      !parsed.success ||
      tombstoneKey(parsed.data.keyId) !== object.key ||
      !tombstoneSignedBy(parsed.data, publicKeys)
    ) {
      throw new LetheError(
        ErrorCode.INTEGRITY,
        `tombstone ${object.key} is not one lethe wrote (unreadable, named for another key, or not signed by ` +
          'a signing key of this vault); the vault ' +
          `was restored from ${context.key} but its destructions are not re-applied yet. Inspect the object, ` +
          'then run the same restore again to finish',
        { details: { object: object.key } },
      );
    }
    tombstones.push(parsed.data);
  }
  const ids = tombstones.map((t) => t.keyId);
  const known = await vault.getDimensionKeys(ids);
  const wrapped = await vault.getWrappedDimensionIdentities(ids);
  const recorded = await vault.getDestructions(ids);
  let alreadyApplied = 0;
  let unknownKeys = 0;
  const groups = new Map<string, ParsedTombstone[]>();
  for (const t of tombstones) {
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
    const destroyed = await destroyKeys(vault, store, {
      keyIds: group.map((t) => t.keyId),
      actor: context.actor,
      reason:
        `${first.reason} (destroyed by ${first.actor}; destroyed again after the vault was restored ` +
        `from ${context.key}, which predates it)`,
      cause: first.cause,
    });
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
  return { reapplied, alreadyApplied, unknownKeys };
}
