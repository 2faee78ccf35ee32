import { z } from 'zod';
import { canonicalJson } from '../vault/index.ts';

/**
 * The vault backup's layout. The object `vault/<YYYYMMDDTHHMMSSmmmZ>.age` is one age v1 file
 * encrypted to the master key's recipient; its plaintext is NDJSON:
 *
 * 1. the header: `{"format":"lethe.vault-backup.v1","schemaVersion":3,"createdAt":ISO,
 *    "schema":"lethe","tables":[{"name":"meta","columns":[{"name":"key","type":"text"},…]},…]}`
 *    with the tables in load order (a table after the tables its foreign keys point to);
 * 2. per table, in that order: `{"table":NAME}`, one JSON array per row (each value the
 *    column's PostgreSQL text form, bytea as base64, SQL NULL as null), then
 *    `{"tableEnd":NAME,"rows":N}`;
 * 3. the trailer `{"end":true,"rows":{NAME:N,…}}`. A file without it was cut short.
 *
 * Every vault table is in it except `migrations`, which `schemaVersion` stands for.
 */
export const VAULT_BACKUP_FORMAT = 'lethe.vault-backup.v1';

/** Where vault backups live in the bucket. */
export const VAULT_BACKUP_PREFIX = 'vault/';

const KEY_PATTERN = /^vault\/(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})(\d{3})Z\.age$/;

/** `vault/<YYYYMMDDTHHMMSSmmmZ>.age` for a backup created at `at` (UTC). */
export function vaultBackupKey(at: Date): string {
  const compact = at.toISOString().replace(/[-:]/g, '').replace('.', '');
  return `${VAULT_BACKUP_PREFIX}${compact.replace(/Z$/, '')}Z.age`;
}

/** The creation time named by a vault backup key, or null when `key` is not one. */
export function parseVaultBackupKey(key: string): Date | null {
  const m = KEY_PATTERN.exec(key);
  if (m === null) return null;
  const [, y, mo, d, h, mi, s, ms] = m;
  const at = new Date(`${y}-${mo}-${d}T${h}:${mi}:${s}.${ms}Z`);
  return Number.isNaN(at.getTime()) || vaultBackupKey(at) !== key ? null : at;
}

const Identifier = z.string().regex(/^[a-z_][a-z0-9_]{0,62}$/);

export const ColumnSchema = z.strictObject({ name: Identifier, type: z.string().min(1).max(200) });

export const TableSchema = z.strictObject({
  name: Identifier,
  columns: z.array(ColumnSchema).min(1),
});

export const HeaderSchema = z.strictObject({
  format: z.literal(VAULT_BACKUP_FORMAT),
  schemaVersion: z.number().int().positive(),
  createdAt: z.iso.datetime(),
  schema: Identifier,
  tables: z.array(TableSchema).min(1),
});

export type VaultBackupHeader = z.infer<typeof HeaderSchema>;
export type VaultBackupTable = z.infer<typeof TableSchema>;

export const TableStartSchema = z.strictObject({ table: Identifier });
export const TableEndSchema = z.strictObject({
  tableEnd: Identifier,
  rows: z.number().int().nonnegative(),
});
export const TrailerSchema = z.strictObject({
  end: z.literal(true),
  rows: z.record(z.string(), z.number().int().nonnegative()),
});

/**
 * Beside each backup, `vault/<…>.age.sig`: what the backup is (its key, sha256, size, time and
 * schema version), signed with the lifecycle signing key over `lethe.vault-backup-signature.v1\n`
 * followed by the canonical JSON of every other field. A vault backup is age-encrypted to the
 * master key's *public* recipient, so anyone could make one: a restore checks this signature,
 * and the backup's sha256 against it, before decrypting a byte.
 */
export const VAULT_BACKUP_SIGNATURE_FORMAT = 'lethe.vault-backup-signature.v1';

/** The signature object's key for a vault backup's key. */
export function vaultBackupSignatureKey(backupKey: string): string {
  return `${backupKey}.sig`;
}

export const VaultBackupSignatureSchema = z.strictObject({
  format: z.literal(VAULT_BACKUP_SIGNATURE_FORMAT),
  backup: z.string().min(1),
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
  size: z.number().int().nonnegative(),
  createdAt: z.iso.datetime(),
  schemaVersion: z.number().int().positive(),
  signature: z.strictObject({ keyId: z.string().min(1), value: z.string().min(1) }),
});

export type VaultBackupSignature = z.infer<typeof VaultBackupSignatureSchema>;

/** The bytes a vault backup signature covers. */
export function vaultBackupSignedMessage(body: Omit<VaultBackupSignature, 'signature'>): Uint8Array {
  return new TextEncoder().encode(`${VAULT_BACKUP_SIGNATURE_FORMAT}\n${canonicalJson(body)}`);
}
