import { andUnwrap, decryptBytes } from '../crypto/index.ts';
import { ErrorCode, LetheError } from '../errors/index.ts';
import type { Vault } from '../vault/index.ts';

/** A cell key's identity, or why it cannot be had. */
export type OpenedKey =
  | { readonly ok: true; readonly identity: string }
  | { readonly ok: false; readonly destroyed: readonly string[] }
  | { readonly ok: false; readonly missing: string };

/**
 * Opens cell keys for verify and restore: master identity → dimension identities →
 * AND-unwrap of the cell key. Unwrapped identities are cached for the life of the run (one
 * run, one process); nothing is written anywhere.
 */
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
    const cellKeys = await this.vault.getCellKeys([...new Set(wanted)]);
    const dimensionIds = new Set<string>();
    for (const key of cellKeys.values()) for (const d of key.dimensionIds) dimensionIds.add(d);
    const unknownDims = [...dimensionIds].filter((d) => !this.dimensionIdentities.has(d));
    if (unknownDims.length > 0) {
      const wrapped = await this.vault.getWrappedDimensionIdentities(unknownDims);
      for (const id of unknownDims) {
        const bytes = wrapped.get(id);
        if (bytes === undefined || bytes === null) {
          this.dimensionIdentities.set(id, null);
          continue;
        }
        const plain = await decryptBytes(bytes, [this.masterIdentity]);
        this.dimensionIdentities.set(id, Buffer.from(plain).toString('utf8').trim());
      }
    }
    for (const id of new Set(wanted)) {
      const key = cellKeys.get(id);
      if (key === undefined) {
        this.cellIdentities.set(id, { ok: false, missing: id });
        continue;
      }
      const outermostFirst = [...key.dimensionIds].reverse();
      const destroyed = outermostFirst.filter((d) => this.dimensionIdentities.get(d) === null);
      if (destroyed.length > 0) {
        this.cellIdentities.set(id, { ok: false, destroyed });
        continue;
      }
      const identities = outermostFirst.map((d) => this.dimensionIdentities.get(d) as string);
      try {
        this.cellIdentities.set(id, { ok: true, identity: await andUnwrap(key.wrappedIdentity, identities) });
      } catch (err) {
        throw new LetheError(ErrorCode.KEY, `cell key ${id} does not unwrap with its dimension keys`, { cause: err });
      }
    }
  }

  /** The identity of cell key `keyId`; prefetches it if needed. */
  async open(keyId: string): Promise<OpenedKey> {
    if (!this.cellIdentities.has(keyId)) await this.prefetch([keyId]);
    return this.cellIdentities.get(keyId) ?? { ok: false, missing: keyId };
  }
}
