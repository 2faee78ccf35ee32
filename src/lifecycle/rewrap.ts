import { randomBytes } from 'node:crypto';
import {
  decodeRecipient,
  encodeRecipient,
  generateRawKeyPair,
  heldWrapKey,
  seal,
  sharedSecret,
  tupleKey,
  x25519PrivateKey,
  x25519PrivateKeyPem,
} from '../crypto/index.ts';
import { ErrorCode, LetheError, throwIfAborted } from '../errors/index.ts';
import { currentWrapTarget, wrapDimensionSecret, type KeyOpener } from '../keys/index.ts';
import type { NewHeldCellKey, Vault } from '../vault/index.ts';
import type { PlanAction } from './plan.ts';

export type RewrapAction = Extract<PlanAction, { kind: 'rewrap' }>;

export interface RewrapContext {
  readonly vault: Vault;
  /** Opens the tuple keys through their own dimension keys (the period key is still alive). */
  readonly opener: KeyOpener;
  /** The master key's public recipient: a new case key is wrapped to it. */
  readonly masterRecipient: string;
  readonly actor: string;
  readonly signal?: AbortSignal;
}

const BATCH = 500;

/**
 * Keeps held cells readable ahead of the destruction of a period key they need: for each
 * held tuple and each encapsulation its cells were written under, the tuple key is opened
 * through its own dimension keys and sealed under a key derived from a fresh encapsulation
 * (one ephemeral X25519 key per run and tenant) to the action's dimension ids: the case key
 * in the period key's place. Destroying the case key, or any remaining dimension key, still
 * shreds them. Creates the case key the first time a case needs one. Idempotent: a held
 * wrapping already stored is kept as it is. One audit entry per case and period key.
 */
export async function rewrapForHolds(ctx: RewrapContext, actions: readonly RewrapAction[]): Promise<number> {
  const groups = new Map<string, RewrapAction[]>();
  for (const action of actions) {
    const group = `${action.caseKeyId}\n${action.replaces}`;
    groups.set(group, [...(groups.get(group) ?? []), action]);
  }
  const run = `hold-${new Date().toISOString().replace(/[-:.]/g, '')}-${randomBytes(3).toString('hex')}`;
  /** This run's re-encapsulation per tenant; its private key lives only here. */
  const encapsulations = new Map<string, { id: string; privateKey: ReturnType<typeof x25519PrivateKey>; ephemeral: Uint8Array }>();
  const encapsulationFor = async (tenant: string): Promise<{ id: string; privateKey: ReturnType<typeof x25519PrivateKey>; ephemeral: Uint8Array }> => {
    let found = encapsulations.get(tenant);
    if (found === undefined) {
      const pair = generateRawKeyPair();
      found = { id: `${run}/${encodeURIComponent(tenant)}`, privateKey: x25519PrivateKey(pair.privateKey), ephemeral: pair.publicKey };
      pair.privateKey.fill(0);
      await ctx.vault.insertEncapsulations([{ id: found.id, purpose: 'hold', snapshotId: null, tenant, kem: 'x25519', ephemeral: found.ephemeral }]);
      encapsulations.set(tenant, found);
    }
    return found;
  };
  let done = 0;
  for (const group of groups.values()) {
    const first = group[0] as RewrapAction;
    await ensureCaseKey(ctx, first.caseKeyId, first.tenant, first.caseId);
    const encapsulation = await encapsulationFor(first.tenant);
    for (let i = 0; i < group.length; i += BATCH) {
      throwIfAborted(ctx.signal, 're-wrapping held cells');
      const slice = group.slice(i, i + BATCH);
      const encsOf = await ctx.vault.encapsulationsOfKeys(slice.map((a) => a.cellKeyId));
      const pairs = slice.flatMap((a) => (encsOf.get(a.cellKeyId) ?? []).map((enc) => ({ key: a.cellKeyId, encapsulation: enc })));
      await ctx.opener.prefetch(pairs);
      const publicKeys = await ctx.vault.getDimensionKeys([...new Set(slice.flatMap((a) => a.dimensionIds))]);
      const rows: NewHeldCellKey[] = [];
      for (const action of slice) {
        const secrets = action.dimensionIds.map((id) => {
          const key = publicKeys.get(id);
          if (key === undefined || key.destroyed) {
            throw new LetheError(ErrorCode.KEY, `cannot keep cell key ${action.cellKeyId} for case ${action.caseId}: dimension key ${id} is ${key === undefined ? 'missing' : 'destroyed'}`);
          }
          return sharedSecret(encapsulation.privateKey, decodeRecipient(key.recipient), `dimension key ${id}`);
        });
        const prkCase = tupleKey(secrets, encapsulation.ephemeral, action.dimensionIds);
        for (const enc of encsOf.get(action.cellKeyId) ?? []) {
          const opened = await ctx.opener.open(action.cellKeyId, enc);
          if (!opened.ok) {
            const why = 'destroyed' in opened ? `it needs ${opened.destroyed.join(', ')}, already destroyed` : 'problem' in opened ? opened.problem : 'it is not in the vault';
            throw new LetheError(ErrorCode.KEY, `cannot keep cell key ${action.cellKeyId} (encapsulation ${enc}) for case ${action.caseId}: ${why}`);
          }
          rows.push({
            caseId: action.caseId,
            keyId: action.cellKeyId,
            encapsulation: enc,
            rewrap: encapsulation.id,
            dimensionIds: [...action.dimensionIds],
            wrapped: seal(heldWrapKey(prkCase, action.cellKeyId, enc), opened.prk),
          });
        }
        prkCase.fill(0);
      }
      await ctx.vault.insertHeldCellKeys(rows);
      done += slice.length;
    }
    await ctx.vault.appendAudit({
      actor: ctx.actor,
      action: 'hold.rewrap',
      subject: first.caseId,
      details: { tenant: first.tenant, caseKey: first.caseKeyId, replaces: first.replaces, cells: group.length, reason: first.reason },
    });
  }
  return done;
}

/** Creates the case's key (wrapped to the master key's public recipient) unless it exists. */
async function ensureCaseKey(ctx: RewrapContext, id: string, tenant: string, caseId: string): Promise<void> {
  const existing = (await ctx.vault.getDimensionKeys([id])).get(id);
  if (existing !== undefined) {
    if (existing.destroyed) {
      throw new LetheError(
        ErrorCode.KEY,
        `the key of case ${caseId} in tenant ${tenant} was destroyed when the case was released; place the hold under a new case id`,
      );
    }
    return;
  }
  const pair = generateRawKeyPair();
  const target = await currentWrapTarget(ctx.vault, ctx.masterRecipient);
  const secret = Buffer.from(x25519PrivateKeyPem(pair.privateKey), 'utf8');
  const wrappedIdentity = await wrapDimensionSecret(target, secret);
  secret.fill(0);
  pair.privateKey.fill(0);
  await ctx.vault.insertDimensionKeys([
    { id, kind: 'case', tenant, recipient: encodeRecipient(pair.publicKey), wrappedIdentity, ...(target.epoch === null ? {} : { masterEpoch: target.epoch }) },
  ]);
  await ctx.vault.appendAudit({ actor: ctx.actor, action: 'key.create', subject: id, details: { kind: 'case', tenant, case: caseId } });
}
