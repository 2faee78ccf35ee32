import { keyFileKey } from '../manifest/index.ts';
import type { ObjectLock, ObjectStore } from '../storage/index.ts';
import type { Vault } from '../vault/index.ts';

/**
 * Stores the cell keys this snapshot uses that no key file in this store holds yet as
 * `keys/<snapshot>.ndjson`: one JSON line per key with its public recipient, its dimension
 * key ids (innermost first) and its AND-wrapped identity in base64. Every key a manifest
 * uses is thus in the bucket too, so a snapshot can be read with the stock `age` CLI and an
 * export of the dimension keys (runbooks/disaster-recovery.md).
 *
 * Returns the key file's object key, or null when there was nothing new.
 */
export async function writeKeyFile(options: {
  vault: Vault;
  store: ObjectStore;
  snapshotId: string;
  lock?: ObjectLock;
}): Promise<string | null> {
  const { vault, store, snapshotId } = options;
  const keys = vault.iterateUnstoredCellKeys(snapshotId, store.description)[Symbol.asyncIterator]();
  const first = await keys.next();
  if (first.done === true) return null;
  const ids: string[] = [];
  async function* lines(): AsyncGenerator<Buffer> {
    for (let next = first; next.done !== true; next = await keys.next()) {
      const key = next.value;
      ids.push(key.id);
      const line = {
        id: key.id,
        recipient: key.recipient,
        dimensions: key.dimensionIds,
        wrapped: Buffer.from(key.wrappedIdentity).toString('base64'),
      };
      yield Buffer.from(`${JSON.stringify(line)}\n`, 'utf8');
    }
  }
  const key = keyFileKey(snapshotId);
  await vault.recordStoreObjects(store.description, [{ key, kind: 'key-file', snapshotId }]);
  const { sha256 } = await store.put(key, lines(), options.lock === undefined ? {} : { lock: options.lock });
  await vault.recordKeyFile({ store: store.description, key, sha256, snapshotId, keyIds: ids });
  return key;
}
