import { randomBytes } from 'node:crypto';
import {
  decodeRecipient,
  encodeRecipient,
  encodeDimensionSecret,
  generateRawKeyPair,
  heldWrapKey,
  hybridTupleKey,
  mlkemEncapsulate,
  mlkemKeyPair,
  newMlKemSeed,
  seal,
  sharedSecret,
  tupleKey,
  x25519PrivateKey,
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
  /** keys.postQuantum: a new case key gets an ML-KEM-768 half. */
  readonly postQuantum?: boolean;
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
  /**
   * This run's re-encapsulation per tenant and kem; its private key lives only here. A tuple
   * key written under a hybrid (x25519-mlkem768) encapsulation is kept only under a hybrid
   * re-encapsulation, so a hold never lowers a cell's protection to X25519 alone.
   */
  const encapsulations = new Map<string, RunEncapsulation>();
  const encapsulationFor = async (tenant: string, hybrid: boolean): Promise<RunEncapsulation> => {
    const slot = `${tenant}\n${String(hybrid)}`;
    let found = encapsulations.get(slot);
    if (found === undefined) {
      const pair = generateRawKeyPair();
      const id = `${run}/${encodeURIComponent(tenant)}${hybrid ? '/x25519-mlkem768' : ''}`;
      found = { id, privateKey: x25519PrivateKey(pair.privateKey), ephemeral: pair.publicKey, kemParts: hybrid ? new Map() : null };
      pair.privateKey.fill(0);
      await ctx.vault.insertEncapsulations([{ id, purpose: 'hold', snapshotId: null, tenant, kem: hybrid ? 'x25519-mlkem768' : 'x25519', ephemeral: found.ephemeral }]);
      encapsulations.set(slot, found);
    }
    return found;
  };
  let done = 0;
  for (const group of groups.values()) {
    const first = group[0] as RewrapAction;
    await ensureCaseKey(ctx, first.caseKeyId, first.tenant, first.caseId);
    for (let i = 0; i < group.length; i += BATCH) {
      throwIfAborted(ctx.signal, 're-wrapping held cells');
      const slice = group.slice(i, i + BATCH);
      const encsOf = await ctx.vault.encapsulationsOfKeys(slice.map((a) => a.cellKeyId));
      const pairs = slice.flatMap((a) => (encsOf.get(a.cellKeyId) ?? []).map((enc) => ({ key: a.cellKeyId, encapsulation: enc })));
      await ctx.opener.prefetch(pairs);
      const sliceDims = [...new Set(slice.flatMap((a) => a.dimensionIds))];
      const publicKeys = await ctx.vault.getDimensionKeys(sliceDims);
      const originals = await ctx.vault.getEncapsulations([...new Set(pairs.map((p) => p.encapsulation))]);
      const anyHybrid = [...originals.values()].some((e) => e.kem === 'x25519-mlkem768');
      const mlkemPublics = anyHybrid ? await ctx.vault.getMlkemPublicKeys(sliceDims) : new Map<string, Uint8Array>();
      const rows: NewHeldCellKey[] = [];
      for (const action of slice) {
        const prkCase = new Map<boolean, Buffer>();
        const caseKey = async (hybrid: boolean): Promise<Buffer> => {
          let prk = prkCase.get(hybrid);
          if (prk === undefined) {
            const encapsulation = await encapsulationFor(first.tenant, hybrid);
            prk = await reencapsulate(ctx, encapsulation, action, publicKeys, mlkemPublics);
            prkCase.set(hybrid, prk);
          }
          return prk;
        };
        for (const enc of encsOf.get(action.cellKeyId) ?? []) {
          const opened = await ctx.opener.open(action.cellKeyId, enc);
          if (!opened.ok) {
            const why = 'destroyed' in opened ? `it needs ${opened.destroyed.join(', ')}, already destroyed` : 'problem' in opened ? opened.problem : 'it is not in the vault';
            throw new LetheError(ErrorCode.KEY, `cannot keep cell key ${action.cellKeyId} (encapsulation ${enc}) for case ${action.caseId}: ${why}`);
          }
          const hybrid = originals.get(enc)?.kem === 'x25519-mlkem768';
          const prk = await caseKey(hybrid);
          rows.push({
            caseId: action.caseId,
            keyId: action.cellKeyId,
            encapsulation: enc,
            rewrap: (await encapsulationFor(first.tenant, hybrid)).id,
            dimensionIds: [...action.dimensionIds],
            wrapped: seal(heldWrapKey(prk, action.cellKeyId, enc), opened.prk),
          });
        }
        for (const prk of prkCase.values()) prk.fill(0);
      }
      const ciphertexts = [...encapsulations.values()].flatMap((e) =>
        [...(e.kemParts ?? new Map<string, KemPart>())].filter(([, p]) => !p.stored).map(([dimensionId, p]) => {
          p.stored = true;
          return { encapsulation: e.id, dimensionId, ciphertext: p.ciphertext };
        }),
      );
      await ctx.vault.insertEncapsulationCiphertexts(ciphertexts);
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

interface KemPart {
  readonly k: Uint8Array;
  readonly ciphertext: Uint8Array;
  stored: boolean;
}

interface RunEncapsulation {
  readonly id: string;
  readonly privateKey: ReturnType<typeof x25519PrivateKey>;
  readonly ephemeral: Uint8Array;
  /** Hybrid only: `K_D` and `C_D` per dimension key, made once per run. */
  readonly kemParts: Map<string, KemPart> | null;
}

/**
 * The tuple key of `action.dimensionIds` (the case key in the period key's place) under this
 * run's re-encapsulation: X25519 only, or hybrid (the ML-KEM part of each key made once per run).
 */
async function reencapsulate(
  ctx: RewrapContext,
  encapsulation: RunEncapsulation,
  action: RewrapAction,
  publicKeys: ReadonlyMap<string, { readonly recipient: string; readonly destroyed: boolean }>,
  mlkemPublics: ReadonlyMap<string, Uint8Array>,
): Promise<Buffer> {
  const secrets = action.dimensionIds.map((id) => {
    const key = publicKeys.get(id);
    if (key === undefined || key.destroyed) {
      throw new LetheError(ErrorCode.KEY, `cannot keep cell key ${action.cellKeyId} for case ${action.caseId}: dimension key ${id} is ${key === undefined ? 'missing' : 'destroyed'}`);
    }
    return sharedSecret(encapsulation.privateKey, decodeRecipient(key.recipient), `dimension key ${id}`);
  });
  if (encapsulation.kemParts === null) return tupleKey(secrets, encapsulation.ephemeral, action.dimensionIds);
  const parts = [];
  for (const [i, id] of action.dimensionIds.entries()) {
    let part = encapsulation.kemParts.get(id);
    if (part === undefined) {
      const publicKey = mlkemPublics.get(id) ?? (await ctx.vault.getMlkemPublicKeys([id])).get(id);
      if (publicKey === undefined) {
        throw new LetheError(
          ErrorCode.KEY,
          `cannot keep cell key ${action.cellKeyId} for case ${action.caseId}: it was written post-quantum, and dimension key ${id} has no ML-KEM-768 half; ` +
            'set keys.postQuantum and run `lethe init` (with the master key) to give it one, then apply again',
        );
      }
      const { ciphertext, secret } = mlkemEncapsulate(publicKey, `dimension key ${id}`);
      part = { k: secret, ciphertext, stored: false };
      encapsulation.kemParts.set(id, part);
    }
    parts.push({ z: secrets[i] as Buffer, k: part.k, ciphertext: part.ciphertext });
  }
  return hybridTupleKey(parts, encapsulation.ephemeral, action.dimensionIds);
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
  const seed = ctx.postQuantum === true ? newMlKemSeed() : null;
  const mlkemPublic = seed === null ? null : mlkemKeyPair(seed).publicKey;
  const secret = Buffer.from(encodeDimensionSecret({ x25519: pair.privateKey, mlkemSeed: seed }), 'utf8');
  const wrappedIdentity = await wrapDimensionSecret(target, secret);
  secret.fill(0);
  pair.privateKey.fill(0);
  seed?.fill(0);
  await ctx.vault.insertDimensionKeys([
    {
      id,
      kind: 'case',
      tenant,
      recipient: encodeRecipient(pair.publicKey),
      wrappedIdentity,
      ...(target.epoch === null ? {} : { masterEpoch: target.epoch }),
      ...(mlkemPublic === null ? {} : { mlkemPublic }),
    },
  ]);
  await ctx.vault.appendAudit({ actor: ctx.actor, action: 'key.create', subject: id, details: { kind: 'case', tenant, case: caseId } });
}
