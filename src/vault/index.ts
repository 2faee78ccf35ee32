/**
 * The key vault: lethe's mutable store of wrapped keys, snapshot catalogue, verification
 * results and hash-chained audit log, in a PostgreSQL schema that is never inside a
 * backup. See {@link Vault}.
 */
export { Vault } from './vault.ts';
export { migrateVault } from './migrate.ts';
export {
  applyVaultRoles,
  checkRolePrefix,
  rolesPrivilegeError,
  vaultRoleNames,
  vaultRolesScript,
  vaultRolesStatements,
  type AppliedRole,
  type VaultRolesOptions,
  type VaultRolesResult,
} from './roles.ts';
export { VAULT_GRANTS, VAULT_JOB_ROLES, VAULT_ROLES, VAULT_ROLE_PURPOSE, grantRuleViolations, type VaultRole } from './role-grants.ts';
export { checkRolePassword } from './scram.ts';
export { VAULT_SCHEMA_VERSION } from './migrations.ts';
export { DEFAULT_VAULT_SCHEMA, checkSchemaName } from './schema-name.ts';
export { canonicalJson, type JsonObject, type JsonValue } from './canonical-json.ts';
export { GENESIS_HASH, auditEntryHash, type AuditEntry, type AuditInput } from './audit-hash.ts';
export {
  AuditChainChecker,
  type AuditAnchor,
  type AuditChainReport,
  type AuditFinding,
} from './audit-chain-check.ts';
export type {
  DimensionKeyInfo,
  DimensionKind,
  NewDimensionKey,
  WrappedDimensionKey,
} from './dimension-keys.ts';
export type { CellKey } from './cell-keys.ts';
export type { SigningPublicKey, SigningPurpose } from './signing-keys.ts';
export type { StoreObject, StoreObjectKind } from './store-objects.ts';
export {
  isComplete,
  type CompleteSnapshot,
  type SnapshotRecord,
  type SnapshotStatus,
} from './snapshots.ts';
export type { CellOrder, SnapshotCell } from './snapshot-cells.ts';
export type { BackupShard } from './backup-shards.ts';
export type { CopyChanges, CurrentCopy, NewCellCopy, RunningSnapshot, SegmentChanges, SegmentRecord } from './cell-copies.ts';
export type { Encapsulation, EncapsulationCiphertext, Kem } from './encapsulations.ts';
export type { Verification, VerificationInput } from './verifications.ts';
export type { AffectedSnapshot, KeyDestruction, RecordedDestruction } from './destructions.ts';
export { newEraseRequestId, type NewEraseRequest, type StoredEraseRequest } from './erase-requests.ts';
export { DurabilityCode, type DurabilityFinding } from './durability.ts';
export type { HeldWrapping, NewHeldCellKey } from './held-cell-keys.ts';
export type { NewHold } from './holds.ts';
export type { Approver, NewApprover, SignedAct } from './approvers.ts';
export { DAEMON_JOBS, type DaemonFacts, type DaemonJob, type DaemonRun, type DaemonRunState, type SlotClaim } from './daemon-runs.ts';
export {
  auditEvidence,
  destructionsIn,
  drillsStarted,
  eraseRequestsOpen,
  holdsInForce,
  restorePoints,
  snapshotsStarted,
  vaultClock,
  type EvidenceAudit,
  type EvidenceDestruction,
  type EvidenceDrill,
  type EvidenceInterval,
  type EvidenceSnapshot,
} from './evidence.ts';
export type { CurrentMasterEpoch, MasterEpoch, MasterProviderKind, RotationInput, RotationResult } from './master-epochs.ts';
