/**
 * Vault backups: the whole key vault, age-encrypted to the master key, in the bucket under
 * `vault/`, kept for the grace window; and their restore, which re-applies every
 * destruction recorded in the bucket since, so an old backup cannot resurrect a shredded key.
 */
export {
  VAULT_BACKUP_FORMAT,
  VAULT_BACKUP_PREFIX,
  VAULT_BACKUP_SIGNATURE_FORMAT,
  parseVaultBackupKey,
  vaultBackupKey,
  vaultBackupSignatureKey,
  type VaultBackupHeader,
} from './format.ts';
export { writeVaultBackup, type VaultBackupResult, type VaultTableProgress, type WriteVaultBackupInput } from './write.ts';
export { listVaultBackups, type VaultBackupInfo } from './list.ts';
export {
  restoreVaultBackup,
  type RestoreVaultBackupInput,
  type RestoreVaultBackupResult,
} from './restore.ts';
export { reapplyTombstones, type IgnoredTombstone, type ReappliedDestruction } from './tombstones.ts';
