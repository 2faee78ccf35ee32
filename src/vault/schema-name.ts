import { ErrorCode, LetheError } from '../errors/index.ts';

/** The vault's PostgreSQL schema unless the config names another. */
export const DEFAULT_VAULT_SCHEMA = 'lethe';

// Lower-case only, so the quoted name and the name an operator types into psql agree.
const SCHEMA_NAME = /^[a-z_][a-z0-9_]{0,62}$/;

/** Schema-qualified, quoted names of every vault table, ready to splice into SQL. */
export interface VaultTables {
  readonly migrations: string;
  readonly meta: string;
  readonly dimensionKeys: string;
  readonly cellKeys: string;
  readonly encapsulations: string;
  readonly encapsulationCiphertexts: string;
  readonly heldCellKeys: string;
  readonly cellCopies: string;
  readonly segments: string;
  readonly storeObjects: string;
  readonly signingKeys: string;
  readonly snapshots: string;
  readonly snapshotCells: string;
  readonly verifications: string;
  readonly auditLog: string;
}

/**
 * Returns `schema` when it is a plain lower-case SQL identifier (at most 63 characters);
 * otherwise throws CONFIG_INVALID. The schema name is spliced into SQL text (identifiers
 * cannot be bound as parameters), so this check is what keeps that safe.
 */
export function checkSchemaName(schema: string): string {
  if (!SCHEMA_NAME.test(schema)) {
    throw new LetheError(
      ErrorCode.CONFIG_INVALID,
      `vault schema name ${JSON.stringify(schema)} is not allowed: use lower-case letters, ` +
        'digits and underscores, starting with a letter or underscore (at most 63 characters)',
    );
  }
  return schema;
}

/** The quoted, qualified table names for a (checked) schema. */
export function vaultTables(schema: string): VaultTables {
  const s = `"${checkSchemaName(schema)}"`;
  return {
    migrations: `${s}.migrations`,
    meta: `${s}.meta`,
    dimensionKeys: `${s}.dimension_keys`,
    cellKeys: `${s}.cell_keys`,
    encapsulations: `${s}.encapsulations`,
    encapsulationCiphertexts: `${s}.encapsulation_ciphertexts`,
    heldCellKeys: `${s}.held_cell_keys`,
    cellCopies: `${s}.cell_copies`,
    segments: `${s}.segments`,
    storeObjects: `${s}.store_objects`,
    signingKeys: `${s}.signing_keys`,
    snapshots: `${s}.snapshots`,
    snapshotCells: `${s}.snapshot_cells`,
    verifications: `${s}.verifications`,
    auditLog: `${s}.audit_log`,
  };
}

/**
 * The text an advisory-lock key is hashed from. Scoped by schema so two vaults in one
 * database (tests, staging beside production) never block each other.
 */
export function lockKeyText(schema: string, purpose: string): string {
  return `lethe:${schema}:${purpose}`;
}
