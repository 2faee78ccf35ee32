import { andWrap, encryptBytes, generateKeyPair } from '../crypto/index.ts';
import { cellKeyId, dimensionKeyIds, dimensionKind, type CellTuple } from '../cells/ids.ts';
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

interface DimensionFacts {
  readonly recipient: string;
  readonly destroyed: boolean;
}

/**
 * Dimension keys remembered between batches. Tenant keys and the current period's keys
 * recur in every batch; users and conversations come and go. Beyond this many the oldest
 * entry is forgotten (and asked for again if it recurs), so memory stays bounded whatever
 * the number of users and conversations: about 250 bytes an entry.
 */
const DIMENSION_CACHE_ENTRIES = 20_000;

/**
 * Creates and finds keys for the backup job using only public material: new dimension keys
 * are wrapped to the master key's public recipient, new cell keys are AND-wrapped to their
 * dimension keys' recipients, and the secret halves are dropped as soon as they are wrapped.
 * Nothing here can decrypt anything.
 *
 * Keys are created the first time their tuple is seen and are stable afterwards: a cell
 * keeps its key across snapshots, which is what lets unchanged cells be referenced.
 * Lookups are batched ({@link cellKeys}): one vault query per batch of tuples by primary
 * key, so memory holds one batch, not the vault's keys. Keys created for a batch are in
 * the vault when the call returns.
 * Must run under the backup job lock (one creator at a time); a conflict is a bug and throws.
 */
export class KeyMinter {
  private readonly dimensions = new Map<string, DimensionFacts>();
  /** Cell keys created by this run. */
  created = 0;

  constructor(
    private readonly vault: Vault,
    private readonly masterRecipient: string,
  ) {}

  /**
   * The cell key of each tuple, by cell key id, creating any that is missing (and any
   * missing dimension key) and storing it before returning. A tuple one of whose dimension
   * keys was shredded gets `destroyed`: such data must not be written again under a fresh key.
   */
  async cellKeys(tuples: readonly CellTuple[]): Promise<Map<string, CellKeyResult>> {
    const results = new Map<string, CellKeyResult>();
    const wanted = new Map<string, { tuple: CellTuple; dimensionIds: string[] }>();
    for (const tuple of tuples) {
      const keyId = cellKeyId(tuple);
      if (!wanted.has(keyId)) wanted.set(keyId, { tuple, dimensionIds: dimensionKeyIds(tuple) });
    }
    await this.loadDimensions([...wanted.values()].flatMap((w) => w.dimensionIds));

    const live: string[] = [];
    for (const [keyId, { dimensionIds }] of wanted) {
      const destroyed = dimensionIds.find((id) => this.dimensions.get(id)?.destroyed === true);
      if (destroyed !== undefined) results.set(keyId, { keyId, destroyed });
      else live.push(keyId);
    }
    if (live.length === 0) return results;

    const known = await this.vault.getCellKeyRecipients(live);
    const pending: PendingCellKey[] = [];
    for (const keyId of live) {
      const recipient = known.get(keyId);
      if (recipient !== undefined) {
        results.set(keyId, { keyId, recipient });
        continue;
      }
      const { tuple, dimensionIds } = wanted.get(keyId) as { tuple: CellTuple; dimensionIds: string[] };
      const recipients: string[] = [];
      for (const id of dimensionIds) recipients.push(await this.dimensionRecipient(id, tuple.tenant));
      const pair = generateKeyPair();
      const wrappedIdentity = await andWrap(pair.identity, recipients);
      pending.push({ id: keyId, tuple, dimensionIds, recipient: pair.recipient, wrappedIdentity });
      results.set(keyId, { keyId, recipient: pair.recipient });
    }
    await this.store(pending);
    this.created += pending.length;
    return results;
  }

  /** The cell key for one tuple (see {@link cellKeys}). */
  async cellKey(tuple: CellTuple): Promise<CellKeyResult> {
    const keyId = cellKeyId(tuple);
    const result = (await this.cellKeys([tuple])).get(keyId);
    if (result === undefined) throw new LetheError(ErrorCode.INTERNAL, `no cell key result for ${keyId}`);
    return result;
  }

  private async store(batch: readonly PendingCellKey[]): Promise<void> {
    if (batch.length === 0) return;
    const stored = await this.vault.insertCellKeys(
      batch.map((k) => ({
        id: k.id,
        tenant: k.tuple.tenant,
        class: k.tuple.class,
        period: k.tuple.period,
        author: k.tuple.author,
        conversation: k.tuple.conversation,
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

  /** Reads the public facts of the dimension keys in `ids` that are not remembered yet. */
  private async loadDimensions(ids: readonly string[]): Promise<void> {
    const missing = [...new Set(ids)].filter((id) => !this.dimensions.has(id));
    if (missing.length === 0) return;
    for (const [id, info] of await this.vault.getDimensionKeys(missing)) {
      this.remember(id, { recipient: info.recipient, destroyed: info.destroyed });
    }
  }

  private remember(id: string, facts: DimensionFacts): void {
    this.dimensions.delete(id);
    this.dimensions.set(id, facts);
    while (this.dimensions.size > DIMENSION_CACHE_ENTRIES) {
      const oldest = this.dimensions.keys().next().value as string;
      this.dimensions.delete(oldest);
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
    this.remember(id, { recipient, destroyed: false });
    return recipient;
  }
}
