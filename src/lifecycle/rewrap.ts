import { andWrap, encryptBytes, generateKeyPair } from '../crypto/index.ts';
import { ErrorCode, LetheError, throwIfAborted } from '../errors/index.ts';
import type { KeyOpener } from '../keys/index.ts';
import type { Vault } from '../vault/index.ts';
import type { PlanAction } from './plan.ts';

export type RewrapAction = Extract<PlanAction, { kind: 'rewrap' }>;

export interface RewrapContext {
  readonly vault: Vault;
  /** Opens the cells' keys through their current wrapping (the period key is still alive). */
  readonly opener: KeyOpener;
  /** The master key's public recipient: a new case key is wrapped to it. */
  readonly masterRecipient: string;
  readonly actor: string;
  readonly signal?: AbortSignal;
}

const BATCH = 500;

/**
 * Re-wraps held cells' keys for their cases, ahead of the destruction of a period key they
 * need: each cell identity is opened through its current wrapping and AND-wrapped again to
 * the action's dimension ids (the case key in the period key's place). Creates the case key
 * the first time a case needs one. Idempotent: a re-wrap already stored is kept as it is.
 * One audit entry per case and period key, naming how many cells it keeps.
 */
export async function rewrapForHolds(ctx: RewrapContext, actions: readonly RewrapAction[]): Promise<number> {
  const groups = new Map<string, RewrapAction[]>();
  for (const action of actions) {
    const group = `${action.caseKeyId}\n${action.replaces}`;
    groups.set(group, [...(groups.get(group) ?? []), action]);
  }
  let done = 0;
  for (const group of groups.values()) {
    const first = group[0] as RewrapAction;
    await ensureCaseKey(ctx, first.caseKeyId, first.tenant, first.caseId);
    for (let i = 0; i < group.length; i += BATCH) {
      throwIfAborted(ctx.signal, 're-wrapping held cells');
      const slice = group.slice(i, i + BATCH);
      await ctx.opener.prefetch(slice.map((a) => a.cellKeyId));
      const recipients = await ctx.vault.getDimensionKeys([...new Set(slice.flatMap((a) => a.dimensionIds))]);
      const rows = [];
      for (const action of slice) {
        const opened = await ctx.opener.open(action.cellKeyId);
        if (!opened.ok) {
          const why =
            'destroyed' in opened
              ? `it needs ${opened.destroyed.join(', ')}, already destroyed`
              : 'problem' in opened
                ? opened.problem
                : 'it is not in the vault';
          throw new LetheError(ErrorCode.KEY, `cannot re-wrap cell key ${action.cellKeyId} for case ${action.caseId}: ${why}`);
        }
        const wrapTo = action.dimensionIds.map((id) => {
          const key = recipients.get(id);
          if (key === undefined || key.destroyed) {
            throw new LetheError(ErrorCode.KEY, `cannot re-wrap cell key ${action.cellKeyId} for case ${action.caseId}: dimension key ${id} is ${key === undefined ? 'missing' : 'destroyed'}`);
          }
          return key.recipient;
        });
        rows.push({
          caseId: action.caseId,
          keyId: action.cellKeyId,
          dimensionIds: [...action.dimensionIds],
          wrappedIdentity: await andWrap(opened.identity, wrapTo),
        });
      }
      await ctx.vault.insertHeldCellKeys(rows);
      done += rows.length;
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
  const pair = generateKeyPair();
  const wrappedIdentity = await encryptBytes(Buffer.from(`${pair.identity}\n`, 'utf8'), [ctx.masterRecipient]);
  await ctx.vault.insertDimensionKeys([{ id, kind: 'case', tenant, recipient: pair.recipient, wrappedIdentity }]);
  await ctx.vault.appendAudit({ actor: ctx.actor, action: 'key.create', subject: id, details: { kind: 'case', tenant, case: caseId } });
}
