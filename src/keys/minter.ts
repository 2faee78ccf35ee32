import { andWrap, encryptBytes, generateKeyPair } from '../crypto/index.ts';
import { cellKeyId, dimensionKeyIds, dimensionKind, type CellTuple, type DataClass } from '../cells/ids.ts';
import { ErrorCode, LetheError } from '../errors/index.ts';
import type { Vault } from '../vault/index.ts';

/** The cell key a backup encrypts a cell to, or the destroyed dimension key that forbids it. */
export type CellKeyResult =
  | { readonly keyId: string; readonly recipient: string }
  | { readonly keyId: string; readonly destroyed: string };

interface PendingCellKey {
  readonly id: string;
  readonly tuple: CellTuple;
  readonly dimensionIds: string[];
  readonly recipient: string;
  readonly wrappedIdentity: Uint8Array;
}

const FLUSH_AT = 500;

/**
 * Creates and finds keys for the backup job using only public material: new dimension keys
 * are wrapped to the master key's public recipient, new cell keys are AND-wrapped to their
 * dimension keys' recipients, and the secret halves are dropped as soon as they are wrapped.
 * Nothing here can decrypt anything.
 *
 * Keys are created the first time their tuple is seen and are stable afterwards: a cell
 * keeps its key across snapshots, which is what lets unchanged cells be referenced.
 * Must run under the backup job lock (one creator at a time); a conflict is a bug and throws.
 */
export class KeyMinter {
  private readonly dimensions = new Map<string, { recipient: string; destroyed: boolean }>();
  private readonly cellKeys = new Map<string, string>();
  private readonly loadedClasses = new Set<DataClass>();
  private pending: PendingCellKey[] = [];
  /** Cell keys created by this run. */
  created = 0;

  constructor(
    private readonly vault: Vault,
    private readonly masterRecipient: string,
  ) {}

  /** Loads the public half of every dimension key; call once before the first cell. */
  async load(): Promise<void> {
    for (const key of await this.vault.listDimensionKeys()) {
      this.dimensions.set(key.id, { recipient: key.recipient, destroyed: key.destroyed });
    }
  }

  /**
   * The cell key for `tuple`, creating it (and any missing dimension key) on first sight.
   * Returns `destroyed` when one of the tuple's dimension keys has been shredded: such data
   * must not be written again under a fresh key.
   */
  async cellKey(tuple: CellTuple): Promise<CellKeyResult> {
    const keyId = cellKeyId(tuple);
    const dimensionIds = dimensionKeyIds(tuple);
    for (const id of dimensionIds) {
      if (this.dimensions.get(id)?.destroyed === true) return { keyId, destroyed: id };
    }
    if (!this.loadedClasses.has(tuple.class)) {
      for (const [id, recipient] of await this.vault.listCellKeyRecipients(tuple.class)) {
        this.cellKeys.set(id, recipient);
      }
      this.loadedClasses.add(tuple.class);
    }
    const known = this.cellKeys.get(keyId);
    if (known !== undefined) return { keyId, recipient: known };

    const recipients: string[] = [];
    for (const id of dimensionIds) recipients.push(await this.dimensionRecipient(id, tuple.tenant));
    const pair = generateKeyPair();
    const wrappedIdentity = await andWrap(pair.identity, recipients);
    this.pending.push({ id: keyId, tuple, dimensionIds, recipient: pair.recipient, wrappedIdentity });
    this.cellKeys.set(keyId, pair.recipient);
    this.created += 1;
    if (this.pending.length >= FLUSH_AT) await this.flush();
    return { keyId, recipient: pair.recipient };
  }

  /** Writes the cell keys created since the last flush to the vault. */
  async flush(): Promise<void> {
    const batch = this.pending;
    this.pending = [];
    if (batch.length === 0) return;
    const stored = await this.vault.insertCellKeys(
      batch.map((k) => ({
        id: k.id,
        tenant: k.tuple.tenant,
        class: k.tuple.class,
        period: k.tuple.period,
        author: k.tuple.author,
        conversation: null,
        dimensionIds: k.dimensionIds,
        recipient: k.recipient,
        wrappedIdentity: k.wrappedIdentity,
      })),
    );
    for (const key of batch) {
      if (stored.get(key.id) !== key.recipient) {
        throw new LetheError(
          ErrorCode.INTERNAL,
          `cell key ${key.id} was created concurrently by another writer; backups must hold the job lock`,
        );
      }
    }
  }

  private async dimensionRecipient(id: string, tenant: string | null): Promise<string> {
    const known = this.dimensions.get(id);
    if (known !== undefined) return known.recipient;
    const pair = generateKeyPair();
    const wrappedIdentity = await encryptBytes(Buffer.from(`${pair.identity}\n`, 'utf8'), [this.masterRecipient]);
    const stored = await this.vault.insertDimensionKeys([
      { id, kind: dimensionKind(id), tenant, recipient: pair.recipient, wrappedIdentity },
    ]);
    const recipient = stored.get(id);
    if (recipient === undefined) throw new LetheError(ErrorCode.VAULT, `dimension key ${id} was not stored`);
    this.dimensions.set(id, { recipient, destroyed: false });
    return recipient;
  }
}
