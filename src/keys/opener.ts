import { andUnwrap, decryptBytes } from '../crypto/index.ts';
import { ErrorCode, LetheError } from '../errors/index.ts';
import type { Vault } from '../vault/index.ts';

/** A cell key's identity, or why it cannot be had. */
export type OpenedKey =
  | { readonly ok: true; readonly identity: string }
  | { readonly ok: false; readonly destroyed: readonly string[] }
  | { readonly ok: false; readonly missing: string };

/**
 * Opens cell keys for verify, restore, export and the lifecycle's re-wrap: master identity →
 * dimension identities → AND-unwrap of the cell key. When the cell key's own wrapping needs
 * a destroyed dimension key (a period past retention), a wrapping made for a legal hold
 * (case key in the destroyed key's place) is tried instead. Unwrapped identities are cached
 * for the life of the run (one run, one process); nothing is written anywhere.
 */
/** Opened cell keys kept per run; dimension keys (far fewer) are all kept. */
const MAX_CACHED_CELL_KEYS = 20_000;

export class KeyOpener {
  private readonly dimensionIdentities = new Map<string, string | null>();
  private readonly cellIdentities = new Map<string, OpenedKey>();

  constructor(
    private readonly vault: Vault,
    private readonly masterIdentity: string,
  ) {}

  /**
   * Loads the wrapped cell keys for `keyIds` (a batch) and their dimension keys, so that
   * {@link open} needs no further round trips for them.
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
      if (key === undefined) {
        this.cellIdentities.set(id, { ok: false, missing: id });
        continue;
      }
      const wrappings = [
        { dimensionIds: key.dimensionIds, wrappedIdentity: key.wrappedIdentity, what: 'its dimension keys' },
        ...(heldWrappings.get(id) ?? []).map((w) => ({ ...w, what: `the keys of case ${w.caseId}` })),
      ];
      let opened: OpenedKey | undefined;
      for (const wrapping of wrappings) {
        const outermostFirst = [...wrapping.dimensionIds].reverse();
        if (outermostFirst.some((d) => typeof this.dimensionIdentities.get(d) !== 'string')) continue;
        const identities = outermostFirst.map((d) => this.dimensionIdentities.get(d) as string);
        try {
          opened = { ok: true, identity: await andUnwrap(wrapping.wrappedIdentity, identities) };
        } catch (err) {
          throw new LetheError(ErrorCode.KEY, `cell key ${id} does not unwrap with ${wrapping.what}`, { cause: err });
        }
        break;
      }
      // Report the original wrapping's destroyed keys: that is what made the data unreadable.
      opened ??= {
        ok: false,
        destroyed: [...key.dimensionIds].reverse().filter((d) => typeof this.dimensionIdentities.get(d) !== 'string'),
      };
      this.cellIdentities.set(id, opened);
    }
  }

  /**
   * The identity of dimension key `id` (unwrapped with the master key), or null once it is
   * destroyed or when the vault has no such key. For the lifecycle's re-wrap.
   */
  async dimensionIdentity(id: string): Promise<string | null> {
    await this.loadDimensions([id]);
    return this.dimensionIdentities.get(id) ?? null;
  }

  private async loadDimensions(ids: readonly string[]): Promise<void> {
    const unknown = ids.filter((d) => !this.dimensionIdentities.has(d));
    if (unknown.length === 0) return;
    const wrapped = await this.vault.getWrappedDimensionIdentities(unknown);
    for (const id of unknown) {
      const bytes = wrapped.get(id);
      if (bytes === undefined || bytes === null) {
        this.dimensionIdentities.set(id, null);
        continue;
      }
      const plain = await decryptBytes(bytes, [this.masterIdentity]);
      this.dimensionIdentities.set(id, Buffer.from(plain).toString('utf8').trim());
    }
  }

  /** The identity of cell key `keyId`; prefetches it if needed. */
  async open(keyId: string): Promise<OpenedKey> {
    if (!this.cellIdentities.has(keyId)) await this.prefetch([keyId]);
    return this.cellIdentities.get(keyId) ?? { ok: false, missing: keyId };
  }
}
