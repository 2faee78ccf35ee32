import pg from 'pg';
import { ErrorCode, LetheError } from '../errors/index.ts';
import { pgClientConfig } from '../tls/index.ts';
import type { AuditAnchor, AuditChainReport } from './audit-chain-check.ts';
import type { AuditEntry, AuditInput } from './audit-hash.ts';
import { auditExportedSeq, setAuditExportedSeq } from './audit-export-mark.ts';
import { appendAudit, auditHead, iterateAudit, verifyAuditChain } from './audit-log.ts';
import { getCellKeys, insertCellKeys, type CellKey } from './cell-keys.ts';
import {
  getEncapsulationCiphertexts,
  getEncapsulations,
  insertEncapsulationCiphertexts,
  insertEncapsulations,
  listEncapsulationCiphertexts,
  type Encapsulation,
  type EncapsulationCiphertext,
} from './encapsulations.ts';
import { guardPool, query, vaultContext, type VaultContext } from './db.ts';
import { inspectVaultDurability, type DurabilityFinding } from './durability.ts';
import {
  addMlkemHalf,
  destroyDimensionKeys,
  getDimensionKeys,
  getMlkemPublicKeys,
  getWrappedDimensionIdentities,
  insertDimensionKeys,
  iterateWrappedDimensionKeys,
  listDimensionKeys,
  userKeysOf,
  type DimensionKeyInfo,
  type NewDimensionKey,
  type WrappedDimensionKey,
} from './dimension-keys.ts';
import { jobLockHeld, withJobLock } from './job-lock.ts';
import {
  claimDaemonSlot,
  daemonFacts,
  finishDaemonRun,
  heartbeatDaemonRun,
  lastDaemonSlots,
  releaseDaemonSlot,
  vaultNow,
  listDaemonRuns,
  type DaemonFacts,
  type DaemonJob,
  type DaemonRun,
  type DaemonRunState,
  type SlotClaim,
} from './daemon-runs.ts';
import type { JsonObject } from './canonical-json.ts';
import { backupShards, claimBackupShard, createBackupShards, finishBackupShard, offeredBackupShard, type BackupShard } from './backup-shards.ts';
import { getFormatVersion, getMasterRecipient, setMasterRecipient } from './meta.ts';
import {
  currentEpochHoldsDestroyedKeys,
  getCurrentMasterEpoch,
  getWrappedDimensionKeysWithEpoch,
  listMasterEpochs,
  masterEpochsOfKeys,
  recordFirstMasterEpoch,
  recordMasterEpochDestroyed,
  rotateMasterEpoch,
  type CurrentMasterEpoch,
  type MasterEpoch,
  type MasterProviderKind,
  type RotationInput,
  type RotationResult,
} from './master-epochs.ts';
import { VAULT_SCHEMA_VERSION } from './migrations.ts';
import { DEFAULT_VAULT_SCHEMA } from './schema-name.ts';
import {
  activeSigningKeyId,
  getSigningPublicKeys,
  listSigningKeys,
  registerSigningKey,
  type SigningPublicKey,
  type SigningPurpose,
} from './signing-keys.ts';
import { forgetStoreObjects, recordStoreObjects, storeObjects, type StoreObject } from './store-objects.ts';
import { encapsulationsOfKeys, iterateSnapshotCells, type CellOrder, type SnapshotCell } from './snapshot-cells.ts';
import {
  cellsOfNewSegment,
  supersedeCopiesExcept,
  currentCopies,
  currentCopiesOfSegments,
  currentSegments,
  currentSegmentsOutside,
  pruneTrees,
  recordCopyChanges,
  recordSegmentChanges,
  segmentsOfSnapshot,
  type CopyChanges,
  type CurrentCopy,
  type RunningSnapshot,
  type SegmentChanges,
  type SegmentRecord,
} from './cell-copies.ts';
import {
  abandonSnapshot,
  abandonStaleSnapshots,
  beginSnapshot,
  completeSnapshot,
  expireSnapshot,
  findSnapshot,
  getSnapshot,
  latestCompleteSnapshot,
  listSnapshots,
  type CompleteSnapshot,
  type SnapshotRecord,
} from './snapshots.ts';
import {
  lastVerification,
  recordVerification,
  type Verification,
  type VerificationInput,
  listVerifications,
} from './verifications.ts';
import type { DestructionRecord, Hold } from '../lifecycle/types.ts';
import {
  cellKeysNeeding,
  checkKeyTablesVacuumable,
  getDestructions,
  listDestructions,
  recordKeyDestructions,
  snapshotsUsingCellKeys,
  tenantCellKeys,
  vacuumKeyTables,
  type AffectedSnapshot,
  type KeyDestruction,
  type RecordedDestruction,
} from './destructions.ts';
import {
  approveEraseRequest,
  createEraseRequest,
  getEraseRequest,
  listEraseRequests,
  markEraseRequestExecuted,
  type NewEraseRequest,
  type StoredEraseRequest,
} from './erase-requests.ts';
import {
  deleteHeldForCase,
  getHeldCellKeys,
  insertHeldCellKeys,
  type HeldWrapping,
  type NewHeldCellKey,
} from './held-cell-keys.ts';
import { listHolds, placeHolds, releaseCase, type NewHold } from './holds.ts';
import {
  enrolApprover,
  getApprover,
  listApprovers,
  revokeApprover,
  type Approver,
  type NewApprover,
  type SignedAct,
} from './approvers.ts';
import type { CellKeyFacts } from '../lifecycle/types.ts';
import {
  lifecycleCellKeys,
  lifecyclePeriodKeyUsage,
  type LifecycleKeyUsage,
  lifecycleDimensionKeys,
  lifecycleHeldCellKeys,
  lifecycleObjectRefs,
  lifecycleSnapshots,
  type LifecycleCellKey,
  type LifecycleDimensionKey,
  type LifecycleHeldCellKey,
  type LifecycleObjectRefs,
  type LifecycleSnapshot,
} from './lifecycle-state.ts';

/** The vault's data format this build understands (meta `format_version`). */
const FORMAT_VERSION = 2;

/**
 * lethe's key vault: a PostgreSQL schema holding wrapped keys, the snapshot catalogue,
 * verification results and the audit chain. It stores bytes as given and does no
 * cryptography beyond SHA-256 for the audit chain: wrapping and unwrapping happen in the
 * caller, so this module never sees a key's secret half in clear; signing keys are held
 * by the jobs that sign, and the vault keeps only their public halves.
 *
 * Every method is one or a few round trips whatever the number of ids (multi-row
 * statements over arrays). pg errors surface as DATABASE errors that say what was being
 * done. The pool (and so the connection string) lives in a private field, so logging a
 * Vault cannot print a password.
 */
export class Vault {
  readonly schema: string;
  readonly #ctx: VaultContext;
  readonly #ownsPool: boolean;

  /**
   * Uses `pool` (the caller keeps ownership) or a new pool for `url` (closed by
   * {@link close}). Does not touch the database: use {@link Vault.open} to also check
   * that the schema is initialised.
   */
  constructor(poolOrUrl: pg.Pool | string, schema: string = DEFAULT_VAULT_SCHEMA) {
    const pool =
      typeof poolOrUrl === 'string'
        ? new pg.Pool(pgClientConfig(poolOrUrl, { application_name: 'lethe' }))
        : poolOrUrl;
    this.#ownsPool = typeof poolOrUrl === 'string';
    // A connection dropped by the server would otherwise crash the process with an
    // unhandled 'error' event; the next query reports the problem properly instead.
    if (this.#ownsPool) guardPool(pool);
    this.#ctx = vaultContext(pool, schema);
    this.schema = schema;
  }

  /**
   * Connects and checks that `schema` holds a vault at this build's version. Throws VAULT
   * with the fix when it does not (not initialised or older: run `lethe init`; newer:
   * upgrade lethe), DATABASE when the database cannot be reached.
   */
  static async open(url: string, schema: string = DEFAULT_VAULT_SCHEMA): Promise<Vault> {
    const vault = new Vault(url, schema);
    try {
      await vault.#checkReady();
      return vault;
    } catch (err) {
      await vault.close();
      throw err;
    }
  }

  async #checkReady(): Promise<void> {
    const { rows } = await query<{ present: boolean }>(
      this.#ctx.pool,
      'opening the vault',
      'SELECT to_regclass($1) IS NOT NULL AS present',
      [this.#ctx.t.migrations],
    );
    if (rows[0]?.present !== true) {
      throw new LetheError(
        ErrorCode.VAULT,
        `vault not initialised: run \`lethe init\` (no vault schema "${this.schema}" in this database)`,
        { details: { schema: this.schema } },
      );
    }
    const versions = await query<{ version: number | null }>(
      this.#ctx.pool,
      'opening the vault',
      `SELECT max(version) AS version FROM ${this.#ctx.t.migrations}`,
    );
    const version = versions.rows[0]?.version ?? 0;
    if (version < VAULT_SCHEMA_VERSION) {
      throw new LetheError(
        ErrorCode.VAULT,
        `vault not initialised: run \`lethe init\` (schema "${this.schema}" is at version ${version}, ` +
          `this lethe needs ${VAULT_SCHEMA_VERSION})`,
        { details: { schema: this.schema, version } },
      );
    }
    if (version > VAULT_SCHEMA_VERSION) {
      throw new LetheError(
        ErrorCode.VAULT,
        `the vault schema "${this.schema}" is at version ${version}, newer than this lethe ` +
          `understands (${VAULT_SCHEMA_VERSION}): upgrade lethe`,
        { details: { schema: this.schema, version } },
      );
    }
    const format = await getFormatVersion(this.#ctx);
    if (format !== FORMAT_VERSION) {
      throw new LetheError(
        ErrorCode.VAULT,
        `the vault's data format is ${String(format)}, this lethe reads format ${FORMAT_VERSION}`,
      );
    }
  }

  /** Closes the pool if this Vault created it; a pool passed in is left to its owner. */
  async close(): Promise<void> {
    if (this.#ownsPool && !this.#ctx.pool.ended) await this.#ctx.pool.end();
  }

  // --- meta ---------------------------------------------------------------------------

  /** See {@link getMasterRecipient} in meta.ts: throws VAULT when unset. */
  getMasterRecipient(): Promise<string> {
    return getMasterRecipient(this.#ctx);
  }

  /** Records the master recipient once; a different value throws VAULT. */
  setMasterRecipient(recipient: string): Promise<void> {
    return setMasterRecipient(this.#ctx, recipient);
  }

  // --- master-key epochs (master-epochs.ts) ------------------------------------------

  /** Every master-key epoch, oldest first, with its live and destroyed key counts. */
  listMasterEpochs(): Promise<MasterEpoch[]> {
    return listMasterEpochs(this.#ctx);
  }

  /** The epoch new wraps go to; throws VAULT when the vault has none. */
  getCurrentMasterEpoch(): Promise<CurrentMasterEpoch> {
    return getCurrentMasterEpoch(this.#ctx);
  }

  /** Records epoch 1 on a vault without epochs; returns the current epoch. */
  recordFirstMasterEpoch(first: { provider: MasterProviderKind; reference: string; recipient: string }): Promise<CurrentMasterEpoch> {
    return recordFirstMasterEpoch(this.#ctx, first);
  }

  /** A new epoch and every live key re-wrapped to it, in one transaction. */
  rotateMasterEpoch(input: RotationInput): Promise<RotationResult> {
    return rotateMasterEpoch(this.#ctx, input);
  }

  /** Records a retired epoch's key as destroyed in its provider (with its audit entry). */
  recordMasterEpochDestroyed(input: { epoch: number; actor: string; reason: string; at: Date }): Promise<boolean> {
    return recordMasterEpochDestroyed(this.#ctx, input);
  }

  /** Wrapped identities with the epoch each is wrapped to (null: destroyed). */
  getWrappedDimensionKeysWithEpoch(ids: readonly string[]): Promise<Map<string, { epoch: number | null; wrapped: Uint8Array } | null>> {
    return getWrappedDimensionKeysWithEpoch(this.#ctx, ids);
  }

  /** The master epochs `ids` are (or were when destroyed) wrapped to. */
  masterEpochsOfKeys(ids: readonly string[]): Promise<number[]> {
    return masterEpochsOfKeys(this.#ctx, ids);
  }

  /** True when a destroyed key is still wrapped to the current epoch. */
  currentEpochHoldsDestroyedKeys(): Promise<boolean> {
    return currentEpochHoldsDestroyedKeys(this.#ctx);
  }

  // --- dimension keys -----------------------------------------------------------------

  /** Public facts of the dimension keys that exist among `ids`. */
  getDimensionKeys(ids: readonly string[]): Promise<Map<string, DimensionKeyInfo>> {
    return getDimensionKeys(this.#ctx, ids);
  }

  /** Inserts missing keys; every id maps to the stored (winning) recipient. */
  insertDimensionKeys(keys: readonly NewDimensionKey[]): Promise<Map<string, string>> {
    return insertDimensionKeys(this.#ctx, keys);
  }

  /** The ML-KEM-768 public key of each of `ids` that has one (keys.postQuantum). */
  getMlkemPublicKeys(ids: readonly string[]): Promise<Map<string, Uint8Array>> {
    return getMlkemPublicKeys(this.#ctx, ids);
  }

  /** Gives a live X25519-only key its ML-KEM half (see {@link addMlkemHalf}). */
  addMlkemHalf(id: string, mlkemPublic: Uint8Array, wrappedIdentity: Uint8Array, masterEpoch: number | null): Promise<boolean> {
    return addMlkemHalf(this.#ctx, id, mlkemPublic, wrappedIdentity, masterEpoch);
  }

  /** Public facts of every dimension key, by id order. */
  listDimensionKeys(): Promise<DimensionKeyInfo[]> {
    return listDimensionKeys(this.#ctx);
  }

  /** See {@link userKeysOf}: the `user:T/U` keys of one person in every tenant, destroyed ones included. */
  userKeysOf(user: string): Promise<DimensionKeyInfo[]> {
    return userKeysOf(this.#ctx, user);
  }

  /** Every dimension key with its wrapped identity, a page at a time (escrow export). */
  iterateWrappedDimensionKeys(
    options: { pageRows?: number; signal?: AbortSignal } = {},
  ): AsyncGenerator<WrappedDimensionKey> {
    return iterateWrappedDimensionKeys(this.#ctx, options);
  }

  /** Wrapped identities by id; null for a destroyed key; absent ids absent. */
  getWrappedDimensionIdentities(ids: readonly string[]): Promise<Map<string, Uint8Array | null>> {
    return getWrappedDimensionIdentities(this.#ctx, ids);
  }

  /** Crypto-shreds the keys; returns the ids this call destroyed. */
  destroyDimensionKeys(ids: readonly string[]): Promise<string[]> {
    return destroyDimensionKeys(this.#ctx, ids);
  }

  // --- tuples and encapsulations (no key material) ------------------------------------

  /** The facts of the tuples that exist among `ids`. */
  getCellKeys(ids: readonly string[]): Promise<Map<string, CellKey>> {
    return getCellKeys(this.#ctx, ids);
  }

  /** Records tuples not recorded yet. */
  insertCellKeys(keys: readonly CellKey[]): Promise<void> {
    return insertCellKeys(this.#ctx, keys);
  }

  /** Stores new key encapsulations (public halves). */
  insertEncapsulations(encapsulations: readonly Encapsulation[]): Promise<void> {
    return insertEncapsulations(this.#ctx, encapsulations);
  }

  /** The encapsulations that exist among `ids`. */
  getEncapsulations(ids: readonly string[]): Promise<Map<string, Encapsulation>> {
    return getEncapsulations(this.#ctx, ids);
  }

  /** Stores ML-KEM ciphertexts of hybrid encapsulations; one already stored is kept. */
  insertEncapsulationCiphertexts(rows: readonly EncapsulationCiphertext[]): Promise<void> {
    return insertEncapsulationCiphertexts(this.#ctx, rows);
  }

  /** The ML-KEM ciphertexts stored for these pairs, by `<encapsulation>\n<dimension key>`. */
  getEncapsulationCiphertexts(pairs: readonly { readonly encapsulation: string; readonly dimensionId: string }[]): Promise<Map<string, Uint8Array>> {
    return getEncapsulationCiphertexts(this.#ctx, pairs);
  }

  /** Every ML-KEM ciphertext of one encapsulation, by dimension key id. */
  listEncapsulationCiphertexts(id: string): Promise<Map<string, Uint8Array>> {
    return listEncapsulationCiphertexts(this.#ctx, id);
  }

  // --- signing keys (public halves only) ----------------------------------------------

  /** Every signing key's public half, oldest first. */
  listSigningKeys(): Promise<SigningPublicKey[]> {
    return listSigningKeys(this.#ctx);
  }

  /** Public halves (id → key) of the keys of these purposes, retired ones included. */
  getSigningPublicKeys(purposes: readonly SigningPurpose[]): Promise<Map<string, string>> {
    return getSigningPublicKeys(this.#ctx, purposes);
  }

  /** Makes `key` the active key for its purpose, retiring the previous one (see signing-keys.ts). */
  registerSigningKey(key: {
    id: string;
    purpose: Exclude<SigningPurpose, 'legacy'>;
    publicKey: string;
  }): Promise<{ changed: boolean; retired: string[] }> {
    return registerSigningKey(this.#ctx, key);
  }

  /** The id of the active key for `purpose`, or null. */
  activeSigningKeyId(purpose: Exclude<SigningPurpose, 'legacy'>): Promise<string | null> {
    return activeSigningKeyId(this.#ctx, purpose);
  }

  // --- objects lethe wrote to a store ---------------------------------------------------

  /** Records objects before they are uploaded (see store-objects.ts). */
  recordStoreObjects(store: string, objects: readonly StoreObject[]): Promise<void> {
    return recordStoreObjects(this.#ctx, store, objects);
  }

  /** Every object recorded as written by lethe to `store`, by key. */
  storeObjects(store: string): Promise<Map<string, StoreObject>> {
    return storeObjects(this.#ctx, store);
  }

  /** Forgets objects deleted from `store`. */
  forgetStoreObjects(store: string, keys: readonly string[]): Promise<void> {
    return forgetStoreObjects(this.#ctx, store, keys);
  }

  // --- snapshots ----------------------------------------------------------------------

  /** Records a new running snapshot. */
  beginSnapshot(run: {
    id: string;
    previousId: string | null;
    runOwner: string;
    store: string;
  }): Promise<SnapshotRecord> {
    return beginSnapshot(this.#ctx, run);
  }

  /** Records a batch of a running backup's cell changes (new copies, superseded ones, fingerprints). */
  recordCopyChanges(run: RunningSnapshot, changes: CopyChanges): Promise<void> {
    return recordCopyChanges(this.#ctx, run, changes);
  }

  /** The current copies (before `run`) of the cells among `cellIds`, by cell id. */
  currentCopies(run: RunningSnapshot, cellIds: readonly string[]): Promise<Map<string, CurrentCopy>> {
    return currentCopies(this.#ctx, run, cellIds);
  }

  /** The current copies (before `run`) of a few `segments`' cells, by segment then cell id. */
  currentCopiesOfSegments(run: RunningSnapshot, segments: readonly string[]): Promise<CurrentCopy[]> {
    return currentCopiesOfSegments(this.#ctx, run, segments);
  }

  /** Marks the current copies of `segments` superseded by `run`, except `keep`. */
  supersedeCopiesExcept(run: RunningSnapshot, segments: readonly string[], keep: readonly string[]): Promise<void> {
    return supersedeCopiesExcept(this.#ctx, run, segments, keep);
  }

  /** One page of the cells `run` holds in one segment so far, by cell id. */
  cellsOfNewSegment(run: RunningSnapshot, segment: string, afterCellId: string | null, limit: number): Promise<CurrentCopy[]> {
    return cellsOfNewSegment(this.#ctx, run, segment, afterCellId, limit);
  }

  /** The current segments (before `run`) of a table, by segment id. */
  currentSegments(run: RunningSnapshot, table: string): Promise<Map<string, SegmentRecord>> {
    return currentSegments(this.#ctx, run, table);
  }

  /** The current segments (before `run`) of tables not in `tables`. */
  currentSegmentsOutside(run: RunningSnapshot, tables: readonly string[]): Promise<SegmentRecord[]> {
    return currentSegmentsOutside(this.#ctx, run, tables);
  }

  /** Records a running backup's segment changes. */
  recordSegmentChanges(run: RunningSnapshot, changes: SegmentChanges): Promise<void> {
    return recordSegmentChanges(this.#ctx, run, changes);
  }

  /** The segments a snapshot holds, by table then segment id. */
  segmentsOfSnapshot(snapshotId: string): Promise<SegmentRecord[]> {
    return segmentsOfSnapshot(this.#ctx, snapshotId);
  }

  /** Deletes copies and segments no running or complete snapshot needs (held tenants' excepted). */
  pruneTrees(): Promise<{ copies: number; segments: number }> {
    return pruneTrees(this.#ctx);
  }

  /** running → complete in one statement; throws when not running. */
  completeSnapshot(
    id: string,
    done: { manifestKey: string; manifestSha256: string; stats: Readonly<Record<string, unknown>> },
  ): Promise<CompleteSnapshot> {
    return completeSnapshot(this.#ctx, id, done);
  }

  /** running → abandoned, cells deleted; only while holding the backup job lock. */
  abandonStaleSnapshots(): Promise<string[]> {
    return abandonStaleSnapshots(this.#ctx);
  }

  /** Marks a complete snapshot expired; false when it was not complete. */
  expireSnapshot(id: string): Promise<boolean> {
    return expireSnapshot(this.#ctx, id);
  }

  /** One running snapshot → abandoned, cells deleted; false if it was not running. */
  abandonSnapshot(id: string): Promise<boolean> {
    return abandonSnapshot(this.#ctx, id);
  }

  /** Newest first; complete only unless `includeIncomplete`. */
  listSnapshots(
    options: { includeIncomplete?: boolean; limit?: number } = {},
  ): Promise<SnapshotRecord[]> {
    return listSnapshots(this.#ctx, options);
  }

  /** The complete snapshot named (or `latest`); SNAPSHOT_NOT_FOUND otherwise. */
  getSnapshot(idOrLatest: string): Promise<CompleteSnapshot> {
    return getSnapshot(this.#ctx, idOrLatest);
  }

  /** The snapshot in any status, or null. */
  findSnapshot(id: string): Promise<SnapshotRecord | null> {
    return findSnapshot(this.#ctx, id);
  }

  /** The newest complete snapshot, or null before the first. */
  latestCompleteSnapshot(store?: string): Promise<CompleteSnapshot | null> {
    return latestCompleteSnapshot(this.#ctx, store);
  }



  /** The encapsulations each tuple's cells were written under (complete and expired snapshots). */
  encapsulationsOfKeys(keyIds: readonly string[]): Promise<Map<string, string[]>> {
    return encapsulationsOfKeys(this.#ctx, keyIds);
  }


  /** A snapshot's cells in (pack, offset) order, or table order, a page at a time. */
  iterateSnapshotCells(
    snapshotId: string,
    options: { pageRows?: number; signal?: AbortSignal; order?: CellOrder } = {},
  ): AsyncGenerator<SnapshotCell> {
    return iterateSnapshotCells(this.#ctx, snapshotId, options);
  }

  // --- verifications ------------------------------------------------------------------

  /** Records a verify / restore drill result. */
  recordVerification(run: VerificationInput): Promise<Verification> {
    return recordVerification(this.#ctx, run);
  }

  /** The latest verification of a snapshot, or null. */
  lastVerification(snapshotId: string): Promise<Verification | null> {
    return lastVerification(this.#ctx, snapshotId);
  }

  // --- audit --------------------------------------------------------------------------

  /** Appends a hash-chained entry (serialised across processes). */
  appendAudit(input: AuditInput): Promise<AuditEntry> {
    return appendAudit(this.#ctx, input);
  }

  /** Entries from `fromSeq` on, in order, a page at a time. */
  iterateAudit(
    fromSeq = 1,
    options: { pageRows?: number; signal?: AbortSignal } = {},
  ): AsyncGenerator<AuditEntry> {
    return iterateAudit(this.#ctx, fromSeq, options);
  }

  /** The newest audit entry's seq and hash, or null for an empty log. */
  auditHead(): Promise<{ seq: number; hash: string } | null> {
    return auditHead(this.#ctx);
  }

  /** Highest audit seq already copied to the bucket (0 if none). */
  auditExportedSeq(): Promise<number> {
    return auditExportedSeq(this.#ctx);
  }

  /** Records the audit export position; never moves it backwards. */
  setAuditExportedSeq(seq: number): Promise<void> {
    return setAuditExportedSeq(this.#ctx, seq);
  }

  /** Walks the whole chain; reports every break found. */
  verifyAuditChain(
    options: { anchors?: readonly AuditAnchor[]; signal?: AbortSignal } = {},
  ): Promise<AuditChainReport> {
    return verifyAuditChain(this.#ctx, options);
  }

  // --- lifecycle planning state (read-only; see lifecycle-state.ts) ------------------

  /** Every dimension key's public facts and whether it is destroyed, by id. */
  lifecycleDimensionKeys(): Promise<LifecycleDimensionKey[]> {
    return lifecycleDimensionKeys(this.#ctx);
  }

  /** Every cell key's tuple facts with its usage by complete snapshots, by id. */
  lifecycleCellKeys(): Promise<LifecycleCellKey[]> {
    return lifecycleCellKeys(this.#ctx);
  }

  /** Per live period key: what destroying it would make unreadable, aggregated in SQL. */
  lifecyclePeriodKeyUsage(): Promise<LifecycleKeyUsage[]> {
    return lifecyclePeriodKeyUsage(this.#ctx);
  }

  /** Every held (re-wrapped) cell key, without its wrapped bytes. */
  lifecycleHeldCellKeys(): Promise<LifecycleHeldCellKey[]> {
    return lifecycleHeldCellKeys(this.#ctx);
  }

  /** Every snapshot in every status, by id. */
  lifecycleSnapshots(): Promise<LifecycleSnapshot[]> {
    return lifecycleSnapshots(this.#ctx);
  }

  /** Per pack and segment object: the snapshots (any status) and tenants that need it. */
  lifecycleObjectRefs(): Promise<LifecycleObjectRefs[]> {
    return lifecycleObjectRefs(this.#ctx);
  }

  // --- lifecycle: destructions, holds, deletion requests ------------------------------

  /** Destruction records of those of `keyIds` that have one, by key id. */
  getDestructions(keyIds: readonly string[]): Promise<Map<string, DestructionRecord>> {
    return getDestructions(this.#ctx, keyIds);
  }

  /** Every destruction record, oldest first. */
  listDestructions(): Promise<DestructionRecord[]> {
    return listDestructions(this.#ctx);
  }

  /**
   * Shreds and records keys in one transaction (NULL identity, destructions row, `key.destroy`
   * audit entry); see destructions.ts. Use lifecycle's destroyKeys, which writes tombstones first.
   */
  recordKeyDestructions(keys: readonly KeyDestruction[]): Promise<RecordedDestruction[]> {
    return recordKeyDestructions(this.#ctx, keys);
  }

  /**
   * VACUUM FULL of the key tables, so no dead row keeps destroyed key bytes on disk, after
   * waiting (up to `waitMs`) for older transactions that would keep them; `clean` is false
   * when one was still running (the next apply vacuums again).
   */
  vacuumKeyTables(options: { waitMs?: number } = {}): Promise<{ clean: boolean }> {
    return vacuumKeyTables(this.#ctx, options);
  }

  /** Throws VAULT naming the fix unless this role may VACUUM the key tables (see destructions.ts). */
  checkKeyTablesVacuumable(): Promise<void> {
    return checkKeyTablesVacuumable(this.#ctx);
  }

  /** Cell keys wrapped to any of `dimensionKeyIds` (tuple facts only). */
  cellKeysNeeding(dimensionKeyIds: readonly string[]): Promise<CellKeyFacts[]> {
    return cellKeysNeeding(this.#ctx, dimensionKeyIds);
  }

  /** Every cell key of `tenant` (tuple facts only). */
  tenantCellKeys(tenant: string): Promise<CellKeyFacts[]> {
    return tenantCellKeys(this.#ctx, tenant);
  }

  /** Complete and expired snapshots with cells under `cellKeyIds`, with their cell counts. */
  snapshotsUsingCellKeys(cellKeyIds: readonly string[]): Promise<AffectedSnapshot[]> {
    return snapshotsUsingCellKeys(this.#ctx, cellKeyIds);
  }

  /** Every legal hold selector, released ones included, oldest first. */
  listHolds(): Promise<Hold[]> {
    return listHolds(this.#ctx);
  }

  /** Stores a placement's selectors and its audit entry in one transaction. */
  placeHolds(
    holds: readonly NewHold[],
    audit: (rows: readonly Hold[]) => AuditInput,
  ): Promise<{ holds: Hold[]; audit: AuditEntry }> {
    return placeHolds(this.#ctx, holds, audit);
  }

  /** Releases a case's active selectors with an audit entry; [] when none was active. */
  releaseCase(
    caseId: string,
    actor: string,
    audit: (rows: readonly Hold[]) => AuditInput,
    proof: SignedAct | null = null,
  ): Promise<{ holds: Hold[]; audit: AuditEntry | null }> {
    return releaseCase(this.#ctx, caseId, actor, audit, proof);
  }

  // --- people enrolled to approve (signed approvals) ---------------------------------

  /** Every enrolled key, revoked ones included, in enrolment order. */
  listApprovers(): Promise<Approver[]> {
    return listApprovers(this.#ctx);
  }

  /** The enrolled key with that fingerprint (revoked or not), or null. */
  getApprover(fingerprint: string): Promise<Approver | null> {
    return getApprover(this.#ctx, fingerprint);
  }

  /** Enrols a key with its audit entry; see approvers.ts for the refusals. */
  enrolApprover(input: NewApprover, audit: (approver: Approver) => AuditInput): Promise<{ approver: Approver; audit: AuditEntry }> {
    return enrolApprover(this.#ctx, input, audit);
  }

  /** Revokes an enrolled key with the revoker's signed act and its audit entry. */
  revokeApprover(fingerprint: string, by: SignedAct, audit: (approver: Approver) => AuditInput): Promise<{ approver: Approver; audit: AuditEntry }> {
    return revokeApprover(this.#ctx, fingerprint, by, audit);
  }

  /** Held (re-wrapped) wrappings of cell keys, by cell key id. */
  getHeldCellKeys(keyIds: readonly string[]): Promise<Map<string, HeldWrapping[]>> {
    return getHeldCellKeys(this.#ctx, keyIds);
  }

  /** Stores re-wrapped cell keys (ON CONFLICT DO NOTHING); returns how many were new. */
  insertHeldCellKeys(rows: readonly NewHeldCellKey[]): Promise<number> {
    return insertHeldCellKeys(this.#ctx, rows);
  }

  /** Deletes the held wrappings that need any of the case keys `caseKeyIds`. */
  deleteHeldForCase(caseKeyIds: readonly string[]): Promise<number> {
    return deleteHeldForCase(this.#ctx, caseKeyIds);
  }

  /** Records a pending deletion request (and its audit entry). */
  createEraseRequest(
    input: NewEraseRequest,
    audit: (request: StoredEraseRequest) => AuditInput,
  ): Promise<{ request: StoredEraseRequest; audit: AuditEntry }> {
    return createEraseRequest(this.#ctx, input, audit);
  }

  /** The request, or null. */
  getEraseRequest(id: string): Promise<StoredEraseRequest | null> {
    return getEraseRequest(this.#ctx, id);
  }

  /** Every deletion request, oldest first. */
  listEraseRequests(): Promise<StoredEraseRequest[]> {
    return listEraseRequests(this.#ctx);
  }

  /** pending → approved (two-person rule, `check` inside the transaction); see erase-requests.ts. */
  approveEraseRequest(
    id: string,
    actor: string,
    options: {
      check: (request: StoredEraseRequest) => Promise<void>;
      audit: (request: StoredEraseRequest) => AuditInput;
      proof?: SignedAct | null;
    },
  ): Promise<{ request: StoredEraseRequest; audit: AuditEntry }> {
    return approveEraseRequest(this.#ctx, id, actor, options);
  }

  /** approved → executed with its certificate; an executed request is returned unchanged. */
  markEraseRequestExecuted(
    id: string,
    done: { executedAt: Date; certificate: unknown },
    audit: (request: StoredEraseRequest) => AuditInput,
  ): Promise<StoredEraseRequest> {
    return markEraseRequestExecuted(this.#ctx, id, done, audit);
  }

  // --- the vault database's own copies ----------------------------------------------

  /**
   * What the vault database's server keeps of destroyed keys beyond lethe's reach (WAL
   * archiving, streaming clients, replication slots), one finding each; see durability.ts.
   * A permission error becomes an "unchecked" finding; DATABASE when the server is unreachable.
   */
  inspectDurability(options: { graceWindowDays: number }): Promise<DurabilityFinding[]> {
    return inspectVaultDurability(this.#ctx, options);
  }

  // --- vault backups (src/vaultbackup) -----------------------------------------------

  /**
   * Runs `fn` with one client inside a REPEATABLE READ READ ONLY transaction, so every table
   * it reads shows the same instant (the vault backup's dump). Always rolls back; the client
   * goes back to the pool when `fn` settles and must not be kept. Throws DATABASE.
   */
  async withReadSnapshot<T>(fn: (client: pg.PoolClient) => Promise<T>, purpose = 'a vault backup'): Promise<T> {
    const doing = `reading the vault schema "${this.schema}" for ${purpose}`;
    let client: pg.PoolClient;
    try {
      client = await this.#ctx.pool.connect();
    } catch (err) {
      throw new LetheError(ErrorCode.DATABASE, `${doing}: cannot connect`, { cause: err });
    }
    let broken: Error | undefined;
    try {
      await query(client, doing, 'BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
      return await fn(client);
    } finally {
      try {
        await client.query('ROLLBACK');
      } catch (err) {
        broken = err instanceof Error ? err : new Error(String(err));
      }
      client.release(broken);
    }
  }

  // --- jobs ---------------------------------------------------------------------------

  /** True when a session holds the job lock `name`. */
  jobLockHeld(name: string): Promise<boolean> {
    return jobLockHeld(this.#ctx, name);
  }

  /** Records the pending shards of a coordinated backup. */
  createBackupShards(snapshotId: string, shards: number, plan: JsonObject): Promise<void> {
    return createBackupShards(this.#ctx, snapshotId, shards, plan);
  }

  /** The newest running coordinated backup whose shard is still pending (not claimed); null when none. */
  offeredBackupShard(shard: number, shards: number): Promise<BackupShard | null> {
    return offeredBackupShard(this.#ctx, shard, shards);
  }

  /** Claims a pending shard of a running snapshot; false when it is no longer pending. */
  claimBackupShard(snapshotId: string, shard: number, owner: string): Promise<boolean> {
    return claimBackupShard(this.#ctx, snapshotId, shard, owner);
  }

  /** Records how a claimed shard ended. */
  finishBackupShard(snapshotId: string, shard: number, outcome: { result: JsonObject } | { error: string }): Promise<void> {
    return finishBackupShard(this.#ctx, snapshotId, shard, outcome);
  }

  /** The shards of a coordinated backup. */
  backupShards(snapshotId: string): Promise<BackupShard[]> {
    return backupShards(this.#ctx, snapshotId);
  }

  /** Decides which daemon runs which slot of `job` (see daemon-runs.ts). */
  claimDaemonSlot(claim: { job: DaemonJob; due: Date; missed: readonly Date[]; missedMore: boolean; owner: string; leaseSeconds: number }): Promise<SlotClaim> {
    return claimDaemonSlot(this.#ctx, claim);
  }

  /** Renews a daemon run's heartbeat; false when another daemon took it over. */
  heartbeatDaemonRun(run: { job: DaemonJob; slot: Date; owner: string }): Promise<boolean> {
    return heartbeatDaemonRun(this.#ctx, run);
  }

  /** Gives a claimed daemon slot back unrun, so it is due again. */
  releaseDaemonSlot(run: { job: DaemonJob; slot: Date; owner: string }): Promise<boolean> {
    return releaseDaemonSlot(this.#ctx, run);
  }

  /** The vault database's clock. */
  now(): Promise<Date> {
    return vaultNow(this.#ctx);
  }

  /** Records how a daemon run ended; false when it was taken over. */
  finishDaemonRun(
    run: { job: DaemonJob; slot: Date; owner: string },
    outcome: { state: 'ok' | 'failed' | 'skipped'; errorCode?: string; errorMessage?: string; details?: JsonObject },
  ): Promise<boolean> {
    return finishDaemonRun(this.#ctx, run, outcome);
  }

  /** The newest recorded slot of each daemon job. */
  lastDaemonSlots(): Promise<Map<DaemonJob, DaemonRun>> {
    return lastDaemonSlots(this.#ctx);
  }

  /** Daemon runs, newest slot first. */
  listDaemonRuns(options: { job?: DaemonJob; state?: DaemonRunState; since?: Date; limit?: number } = {}): Promise<DaemonRun[]> {
    return listDaemonRuns(this.#ctx, options);
  }

  /** Counts the daemon's metrics and status page show. */
  daemonFacts(): Promise<DaemonFacts> {
    return daemonFacts(this.#ctx);
  }

  /** Verifications (restore drills), newest first. */
  listVerifications(options: { limit?: number; since?: Date } = {}): Promise<Verification[]> {
    return listVerifications(this.#ctx, options);
  }

  /** Runs `fn` holding job lock `name`; JOB_LOCKED at once if another run holds it. */
  withJobLock<T>(
    name: string,
    fn: (signal: AbortSignal) => Promise<T>,
    options: { signal?: AbortSignal } = {},
  ): Promise<T> {
    return withJobLock(this.#ctx, name, fn, options);
  }
}
