import type { ObjectStore } from '../storage/index.ts';
import { parseVaultBackupKey, VAULT_BACKUP_PREFIX } from './format.ts';

export interface VaultBackupInfo {
  readonly key: string;
  /** The creation time the key names. */
  readonly createdAt: Date;
  /** Bytes of the age file. */
  readonly size: number;
}

/**
 * The vault backups in `store`, oldest first (key order is time order). Objects under
 * `vault/` whose names are not `<YYYYMMDDTHHMMSSmmmZ>.age` are not vault backups and are
 * left out. Throws STORAGE.
 */
export async function listVaultBackups(store: ObjectStore): Promise<VaultBackupInfo[]> {
  const out: VaultBackupInfo[] = [];
  for await (const object of store.list(VAULT_BACKUP_PREFIX)) {
    const createdAt = parseVaultBackupKey(object.key);
    if (createdAt !== null) out.push({ key: object.key, createdAt, size: object.size });
  }
  return out;
}
