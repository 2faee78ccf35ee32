import { open, readdir, unlink } from 'node:fs/promises';
import { basename, dirname } from 'node:path';
import { decryptBytes, encryptBytes, readMasterKeyFile, writeMasterKeyFile, type DeferredUnwrapper, type FileKeyUnwrapper } from '../crypto/index.ts';
import { errnoCode } from '../crypto/private-file.ts';
import { ErrorCode, LetheError, isLetheError, wrapForeign } from '../errors/index.ts';
import type { CurrentMasterEpoch, MasterProviderKind, Vault } from '../vault/index.ts';

/*
 * THE MASTER SEAM (issue 13). A dimension key's secret is stored in the vault wrapped to a
 * master-key epoch. What the secret bytes ARE (today an X25519 PKCS#8 PEM; a post-quantum
 * dimension key adds its ML-KEM half) is the dimension key's business; WHAT WRAPS THEM is
 * this file's: {@link wrapDimensionSecret} wraps bytes to the current epoch's public
 * recipient, {@link MasterKeyring.unwrap} opens (epoch, wrapped bytes). Nothing else in
 * lethe encrypts to, or decrypts with, the master key's dimension-key wraps.
 */

/** Where new wraps go: an epoch (null on a vault without epochs) and its public recipient. */
export interface MasterWrapTarget {
  readonly epoch: number | null;
  readonly recipient: string;
}

/**
 * Wraps a dimension key's secret bytes to `target`'s recipient (an age X25519 recipient for
 * the file provider). Public material only: the backup host calls it. The caller stores the
 * result with `masterEpoch: target.epoch` and wipes `secret` itself.
 */
export async function wrapDimensionSecret(target: MasterWrapTarget, secret: Uint8Array): Promise<Uint8Array> {
  if (!target.recipient.startsWith('age1') && !target.recipient.startsWith('lethe-p256:')) {
    throw new LetheError(ErrorCode.MASTER_KEY, `master epoch ${String(target.epoch)} has recipient type ${target.recipient.split(/[1:]/)[0] ?? '?'}, which this lethe cannot wrap to`);
  }
  return encryptBytes(secret, [target.recipient]);
}

/**
 * The epoch the vault wraps new keys to now, or, on a vault without epochs (one made by
 * hand, as some tests do), `fallbackRecipient` with no epoch.
 */
export async function currentWrapTarget(vault: Vault, fallbackRecipient: string): Promise<MasterWrapTarget> {
  try {
    const current = await vault.getCurrentMasterEpoch();
    return { epoch: current.epoch, recipient: current.recipient };
  } catch (err) {
    if (isLetheError(err, ErrorCode.VAULT) && /no master-key epoch/.test(err.message)) return { epoch: null, recipient: fallbackRecipient };
    throw err;
  }
}

/** Opens dimension-key wraps: the master side of {@link KeyOpener}. */
export interface MasterKeyring {
  /**
   * The secret bytes inside `wrapped`, which was wrapped to master epoch `epoch` (null: a
   * wrap from before epochs). Throws MASTER_KEY when that epoch's key is not available here
   * (destroyed, or not configured) and KEY/CRYPTO when the bytes do not open. `what` names
   * the key in messages; messages never contain key material.
   */
  unwrap(epoch: number | null, wrapped: Uint8Array, what: string): Promise<Uint8Array>;
}

/** A keyring of one age identity, for any epoch (tests, and tools holding one escrowed key). */
export function singleIdentityKeyring(identity: string): MasterKeyring {
  return { unwrap: async (_epoch, wrapped) => decryptBytes(wrapped, [identity]) };
}

/** What every master-key provider does with its epochs' keys. */
export interface MasterKeyProvider extends MasterKeyring {
  readonly kind: MasterProviderKind;
  /** Where epoch `epoch`'s key lives, for master_epochs.reference (no secret). */
  reference(epoch: number): string;
  /**
   * Creates the key of epoch `epoch` and returns its public recipient. A key for that epoch
   * left by a rotation that did not commit is reused (it was never recorded, so nothing is
   * wrapped to it yet).
   */
  create(epoch: number): Promise<string>;
  /** True when epoch `epoch`'s key still exists in the provider. */
  exists(epoch: number): Promise<boolean>;
  /**
   * Destroys epoch `epoch`'s key for good. Idempotent: a key already gone is not an error.
   * Returns a note for the destruction's record when the provider only schedules the
   * destruction (AWS KMS: when the key's deletion becomes final), else null.
   */
  destroy(epoch: number): Promise<string | null>;
  /**
   * Every age identity this provider still holds (vault backups are age files to an epoch's
   * recipient): identity strings for files, identity objects for keys that never leave an HSM,
   * deferred identities (prepared from the file's header first) for keys in a KMS.
   */
  identities(): Promise<(string | FileKeyUnwrapper | DeferredUnwrapper)[]>;
}

/**
 * The file provider: one age identity file per epoch. Epoch 1 is the configured file itself
 * (so a config from before epochs keeps working unchanged), epoch N > 1 is `<file>.epoch-N`
 * beside it, mode 0600. Destroying an epoch removes its file and syncs the directory.
 */
export class FileMasterKeys implements MasterKeyProvider {
  readonly kind = 'file' as const;
  readonly #identities = new Map<number, string>();

  constructor(readonly file: string) {}

  /** The file of epoch `epoch`. */
  path(epoch: number): string {
    if (!Number.isSafeInteger(epoch) || epoch < 1) throw new LetheError(ErrorCode.INTERNAL, `invalid master epoch ${epoch}`);
    return epoch === 1 ? this.file : `${this.file}.epoch-${epoch}`;
  }

  reference(epoch: number): string {
    return `file:${basename(this.path(epoch))}`;
  }

  async create(epoch: number): Promise<string> {
    const path = this.path(epoch);
    if (await this.exists(epoch)) return (await readMasterKeyFile(path)).recipient;
    return (await writeMasterKeyFile(path)).recipient;
  }

  async exists(epoch: number): Promise<boolean> {
    try {
      const handle = await open(this.path(epoch), 'r');
      await handle.close();
      return true;
    } catch (err) {
      if (errnoCode(err) === 'ENOENT') return false;
      throw wrapForeign(ErrorCode.MASTER_KEY, `checking master key file ${this.path(epoch)}`, err);
    }
  }

  async #identity(epoch: number): Promise<string> {
    let identity = this.#identities.get(epoch);
    if (identity === undefined) {
      const path = this.path(epoch);
      if (!(await this.exists(epoch))) {
        throw new LetheError(
          ErrorCode.MASTER_KEY,
          `the master key of epoch ${epoch} (${path}) does not exist: it was destroyed, or this host lacks it (copy it from escrow)`,
        );
      }
      identity = (await readMasterKeyFile(path)).identity;
      this.#identities.set(epoch, identity);
    }
    return identity;
  }

  async unwrap(epoch: number | null, wrapped: Uint8Array): Promise<Uint8Array> {
    return decryptBytes(wrapped, [await this.#identity(epoch ?? 1)]);
  }

  async destroy(epoch: number): Promise<null> {
    const path = this.path(epoch);
    this.#identities.delete(epoch);
    try {
      await unlink(path);
    } catch (err) {
      if (errnoCode(err) !== 'ENOENT') throw wrapForeign(ErrorCode.MASTER_KEY, `removing master key file ${path}`, err);
    }
    // The unlink is durable only once the directory entry is on disk.
    let dir;
    try {
      dir = await open(dirname(path), 'r');
      await dir.sync();
    } catch (err) {
      throw wrapForeign(ErrorCode.MASTER_KEY, `syncing the directory of ${path}`, err);
    } finally {
      await dir?.close();
    }
    return null;
  }

  async identities(): Promise<string[]> {
    const out: string[] = [];
    const prefix = `${basename(this.file)}.epoch-`;
    let names: string[];
    try {
      names = await readdir(dirname(this.file));
    } catch (err) {
      throw wrapForeign(ErrorCode.MASTER_KEY, `listing the master key directory ${dirname(this.file)}`, err);
    }
    const epochs = names.filter((n) => n.startsWith(prefix) && /^\d+$/.test(n.slice(prefix.length))).map((n) => Number(n.slice(prefix.length)));
    for (const epoch of [1, ...epochs.sort((a, b) => b - a)]) {
      if (await this.exists(epoch)) out.push(await this.#identity(epoch));
    }
    return out;
  }
}

export interface SealResult {
  /** The epoch opened by a rotation this call made (null: none was needed). */
  readonly rotatedTo: number | null;
  readonly rewrapped: number;
  /** Epochs whose keys this call destroyed in the provider. */
  readonly destroyed: readonly number[];
  /** Retired epochs still waiting for their grace window, with when each may go. */
  readonly pending: readonly { readonly epoch: number; readonly destroyAfter: Date }[];
}

const DAY_MS = 86_400_000;

/**
 * Opens a new epoch and re-wraps every live dimension key to it (one vault transaction; see
 * Vault.rotateMasterEpoch): the new epoch's key is created in `provider` first, and each key
 * is unwrapped with the epoch it was wrapped to and wrapped to the new recipient. Must run
 * under the backup job lock (no backup may wrap to the old epoch meanwhile).
 */
export async function rotateMaster(
  vault: Vault,
  provider: MasterKeyProvider,
  input: { actor: string; reason: string; signal?: AbortSignal },
): Promise<{ epoch: number; retired: readonly number[]; rewrapped: number; auditSeq: number }> {
  const epochs = await vault.listMasterEpochs();
  const epoch = epochs.reduce((max, e) => Math.max(max, e.epoch), 0) + 1;
  const recipient = await provider.create(epoch);
  const target: CurrentMasterEpoch = { epoch, provider: provider.kind, recipient };
  return vault.rotateMasterEpoch({
    provider: provider.kind,
    reference: provider.reference(epoch),
    recipient,
    epoch,
    actor: input.actor,
    reason: input.reason,
    rewrap: async (id, fromEpoch, wrapped) => {
      const secret = await provider.unwrap(fromEpoch, wrapped, `dimension key ${id}`);
      try {
        return await wrapDimensionSecret(target, secret);
      } finally {
        secret.fill(0);
      }
    },
    ...(input.signal === undefined ? {} : { signal: input.signal }),
  });
}

/**
 * Destroys, in `provider`, every retired epoch that wraps no live key and whose grace window
 * (counted from its retirement) has passed at `now`, or every such epoch at once with
 * `immediately` (a suspected master compromise). Each is destroyed in the provider first,
 * then recorded (so a crash in between is finished by the next call: destroying is
 * idempotent). Returns the destroyed epochs and those still waiting.
 */
export async function destroyRetiredEpochs(
  vault: Vault,
  provider: MasterKeyProvider,
  input: { actor: string; graceWindowDays: number; now: Date; immediately?: boolean },
): Promise<{ destroyed: number[]; pending: { epoch: number; destroyAfter: Date }[] }> {
  const destroyed: number[] = [];
  const pending: { epoch: number; destroyAfter: Date }[] = [];
  for (const e of await vault.listMasterEpochs()) {
    if (e.retiredAt === null || e.destroyedAt !== null || e.liveKeys > 0) continue;
    if (e.provider !== provider.kind) {
      throw new LetheError(ErrorCode.MASTER_KEY, `master epoch ${e.epoch} lives in provider ${e.provider}, but the config's master is ${provider.kind}: destroy it with a config for that provider`);
    }
    const destroyAfter = new Date(e.retiredAt.getTime() + input.graceWindowDays * DAY_MS);
    if (input.immediately !== true && destroyAfter > input.now) {
      pending.push({ epoch: e.epoch, destroyAfter });
      continue;
    }
    const note = await provider.destroy(e.epoch);
    const why = input.immediately === true ? 'destroyed at once (--destroy-old-now)' : `grace window of ${input.graceWindowDays} days since retirement passed`;
    const reason = note === null ? why : `${why}; ${note}`;
    await vault.recordMasterEpochDestroyed({ epoch: e.epoch, actor: input.actor, reason, at: input.now });
    destroyed.push(e.epoch);
  }
  return { destroyed, pending };
}

/**
 * What a `lifecycle apply` does for the master: when a destroyed dimension key is still
 * wrapped to the current epoch, rotate (every surviving key moves to a new epoch), then
 * destroy the retired epochs whose grace window has passed. After that no copy of the
 * destroyed keys' wrapped bytes, wherever PostgreSQL or its administrators kept it, opens.
 */
export async function sealShreds(
  vault: Vault,
  provider: MasterKeyProvider,
  input: { actor: string; graceWindowDays: number; now: Date; signal?: AbortSignal },
): Promise<SealResult> {
  let rotatedTo: number | null = null;
  let rewrapped = 0;
  if (await vault.currentEpochHoldsDestroyedKeys()) {
    const rotation = await rotateMaster(vault, provider, {
      actor: input.actor,
      reason: 'keys wrapped to it were destroyed: surviving keys moved to a new epoch so this one can be destroyed',
      ...(input.signal === undefined ? {} : { signal: input.signal }),
    });
    rotatedTo = rotation.epoch;
    rewrapped = rotation.rewrapped;
  }
  const { destroyed, pending } = await destroyRetiredEpochs(vault, provider, input);
  return { rotatedTo, rewrapped, destroyed, pending };
}
