import { andUnwrap, decryptBytes, equalConstantTime, recipientOf } from '../crypto/index.ts';
import { ErrorCode, LetheError } from '../errors/index.ts';
import type { Vault } from '../vault/index.ts';

/** A cell key's identity, or why it cannot be had. */
export type OpenedKey =
  | { readonly ok: true; readonly identity: string }
  | { readonly ok: false; readonly destroyed: readonly string[] }
  | { readonly ok: false; readonly missing: string }
  /** The vault holds the key, but what it unwraps to is not the key its recipient names. */
  | { readonly ok: false; readonly problem: string };

/** A dimension key as opened: its identity, null when destroyed or absent, or what is wrong with it. */
type OpenedDimension = string | null | { readonly problem: string };

/** Opened cell keys kept per run; dimension keys (far fewer) are all kept. */
const MAX_CACHED_CELL_KEYS = 20_000;

/**
 * Opens cell keys for verify, restore, export and the lifecycle's re-wrap: master identity →
 * dimension identities → AND-unwrap of the cell key. When the cell key's own wrapping needs
 * a destroyed dimension key (a period past retention), a wrapping made for a legal hold
 * (case key in the destroyed key's place) is tried instead. Unwrapped identities are cached
 * for the life of the run (one run, one process); nothing is written anywhere.
 *
 * Every identity unwrapped from the vault is checked, in constant time, against the public
 * recipient stored beside it: a vault row whose wrapped bytes were swapped for another
 * identity wrapped to the (public) master recipient would otherwise open as the wrong key
 * (or, in a re-wrap, be wrapped onwards). Such a key is reported as a `problem`, per cell,
 * never used.
 */
export class KeyOpener {
  private readonly dimensionIdentities = new Map<string, OpenedDimension>();
  private readonly cellIdentities = new Map<string, OpenedKey>();

  constructor(
    private readonly vault: Vault,
    private readonly masterIdentity: string,
  ) {}

  /**
   * Loads the wrapped cell keys for `keyIds` (a batch) and their dimension keys, so that
   * {@link open} needs no further round trips for them. Throws only for vault errors.
   */
  async prefetch(keyIds: readonly string[]): Promise<void> {
    const wanted = keyIds.filter((id) => !this.cellIdentities.has(id));
    if (wanted.length === 0) return;
    // Bounded: a run over millions of cells keeps only the most recently opened keys (a
    // Map iterates in insertion order, so the first entries are the oldest).
    for (const id of this.cellIdentities.keys()) {
      if (this.cellIdentities.size + wanted.length <= MAX_CACHED_CELL_KEYS) break;
      this.cellIdentities.delete(id);
    }
    const ids = [...new Set(wanted)];
    const cellKeys = await this.vault.getCellKeys(ids);
    const heldWrappings = await this.vault.getHeldCellKeys(ids);
    const dimensionIds = new Set<string>();
    for (const key of cellKeys.values()) for (const d of key.dimensionIds) dimensionIds.add(d);
    for (const rewraps of heldWrappings.values()) for (const w of rewraps) for (const d of w.dimensionIds) dimensionIds.add(d);
    await this.loadDimensions([...dimensionIds]);
    for (const id of ids) {
      const key = cellKeys.get(id);
      this.cellIdentities.set(
        id,
        key === undefined
          ? { ok: false, missing: id }
          : await this.openCellKey(id, key, heldWrappings.get(id) ?? []),
      );
    }
  }

  private async openCellKey(
    id: string,
    key: { dimensionIds: readonly string[]; wrappedIdentity: Uint8Array; recipient: string },
    held: readonly { caseId: string; dimensionIds: readonly string[]; wrappedIdentity: Uint8Array }[],
  ): Promise<OpenedKey> {
    const wrappings = [
      { dimensionIds: key.dimensionIds, wrappedIdentity: key.wrappedIdentity, what: 'its dimension keys' },
      ...held.map((w) => ({ ...w, what: `the keys of case ${w.caseId}` })),
    ];
    for (const wrapping of wrappings) {
      const outermostFirst = [...wrapping.dimensionIds].reverse();
      const opened = outermostFirst.map((d) => this.dimensionIdentities.get(d));
      const broken = outermostFirst.find((_, i) => typeof opened[i] === 'object' && opened[i] !== null);
      if (broken !== undefined) {
        const why = this.dimensionIdentities.get(broken) as { problem: string };
        return { ok: false, problem: `cell key ${id} needs dimension key ${broken}, which cannot be trusted: ${why.problem}` };
      }
      if (opened.some((d) => typeof d !== 'string')) continue;
      let identity: string;
      try {
        identity = await andUnwrap(wrapping.wrappedIdentity, opened as string[]);
      } catch (err) {
        return { ok: false, problem: `cell key ${id} does not unwrap with ${wrapping.what}: ${(err as Error).message}` };
      }
      if (!matchesRecipient(identity, key.recipient)) {
        return {
          ok: false,
          problem: `cell key ${id}: the identity unwrapped with ${wrapping.what} is not the key its recipient names; the vault row was altered`,
        };
      }
      return { ok: true, identity };
    }
    // Report the original wrapping's destroyed keys: that is what made the data unreadable.
    return {
      ok: false,
      destroyed: [...key.dimensionIds].reverse().filter((d) => this.dimensionIdentities.get(d) === null),
    };
  }

  /**
   * The identity of dimension key `id` (unwrapped with the master key and checked against
   * its recipient), or null once it is destroyed or when the vault has no such key. For the
   * lifecycle's re-wrap. Throws KEY when the vault's wrapped identity does not belong to the
   * key's recipient (the row was altered): a re-wrap must never wrap to a key it cannot trust.
   */
  async dimensionIdentity(id: string): Promise<string | null> {
    await this.loadDimensions([id]);
    const opened = this.dimensionIdentities.get(id) ?? null;
    if (opened !== null && typeof opened === 'object') throw new LetheError(ErrorCode.KEY, `dimension key ${id}: ${opened.problem}`);
    return opened;
  }

  private async loadDimensions(ids: readonly string[]): Promise<void> {
    const unknown = ids.filter((d) => !this.dimensionIdentities.has(d));
    if (unknown.length === 0) return;
    const wrapped = await this.vault.getWrappedDimensionIdentities(unknown);
    const facts = await this.vault.getDimensionKeys(unknown);
    for (const id of unknown) {
      const bytes = wrapped.get(id);
      const recipient = facts.get(id)?.recipient;
      if (bytes === undefined || bytes === null || recipient === undefined) {
        this.dimensionIdentities.set(id, null);
        continue;
      }
      let identity: string;
      try {
        identity = Buffer.from(await decryptBytes(bytes, [this.masterIdentity])).toString('utf8').trim();
      } catch (err) {
        this.dimensionIdentities.set(id, { problem: `its wrapped identity does not open with the master key (${(err as Error).message})` });
        continue;
      }
      this.dimensionIdentities.set(
        id,
        matchesRecipient(identity, recipient)
          ? identity
          : { problem: 'the identity unwrapped from the vault is not the key its recipient names; the vault row was altered' },
      );
    }
  }

  /** The identity of cell key `keyId`; prefetches it if needed. */
  async open(keyId: string): Promise<OpenedKey> {
    if (!this.cellIdentities.has(keyId)) await this.prefetch([keyId]);
    return this.cellIdentities.get(keyId) ?? { ok: false, missing: keyId };
  }
}

/** True when `identity` is an age identity whose recipient is `recipient` (constant time). */
function matchesRecipient(identity: string, recipient: string): boolean {
  let actual: string;
  try {
    actual = recipientOf(identity);
  } catch {
    return false;
  }
  return equalConstantTime(actual, recipient);
}
