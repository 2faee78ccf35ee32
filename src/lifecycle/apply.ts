import { ErrorCode, LetheError, isLetheError, throwIfAborted } from '../errors/index.ts';
import { KeyOpener, sealShreds, type MasterKeyProvider, type MasterKeyring, type SealResult, type Signer } from '../keys/index.ts';
import type { Logger } from '../log/index.ts';
import type { Config } from '../config/index.ts';
import type { ObjectStore } from '../storage/index.ts';
import type { DurabilityFinding, Vault } from '../vault/index.ts';
import { failpoint } from '../util/failpoint.ts';
import { writeVaultBackup } from '../vaultbackup/index.ts';
import { destroyKeys, tombstoneLock, type ForeignTombstone } from './destroy.ts';
import { configSubjectColumns, executeApprovedRequest } from './erase.ts';
import { planLifecycle, type Plan, type PlanAction } from './plan.ts';
import { rewrapForHolds, type RewrapAction } from './rewrap.ts';
import { loadPlanInput } from './state.ts';
import { logVaultDurability } from './vault-durability.ts';

export interface ApplyOptions {
  readonly vault: Vault;
  readonly store: ObjectStore;
  readonly config: Config;
  /** Opens dimension-key wraps: a keyring by master epoch (keys/master.ts), or one age identity. */
  readonly masterIdentity: string | MasterKeyring;
  readonly masterRecipient: string;
  /**
   * The master key provider. With it, apply makes shreds final: when a destroyed key is still
   * wrapped to the current master epoch, every surviving key is re-wrapped to a new epoch, and
   * retired epochs past the grace window are destroyed in the provider (keys/master.ts
   * sealShreds). Without it (older callers), master epochs are left as they are.
   */
  readonly masterKeys?: MasterKeyProvider;
  /** The lifecycle signing key: tombstones, certificates and vault backups are signed with it. */
  readonly signer: Signer;
  readonly actor: string;
  /** The clock. The CLI passes the real one; tests move it forward. */
  readonly now: () => Date;
  readonly log: Logger;
  readonly signal?: AbortSignal;
  readonly onProgress?: (p: { done: number; total: number; action: PlanAction['kind'] }) => void;
}

export interface ApplyResult {
  /** The plan that was carried out (made at the start, from the vault and the bucket). */
  readonly plan: Plan;
  readonly requestsFinished: number;
  /** Approved deletion requests a legal hold placed since keeps waiting (with why). */
  readonly requestsWaiting: readonly { requestId: string; reason: string }[];
  readonly cellsRewrapped: number;
  readonly keysDestroyed: number;
  /** Keys destroyed by the deletion requests this run finished (not counted in `keysDestroyed`). */
  readonly requestKeysDestroyed: number;
  readonly snapshotsExpired: number;
  readonly locksExtended: number;
  readonly objectsDeleted: number;
  readonly bytesDeleted: number;
  /**
   * Vault rows of snapshot trees no running or complete snapshot needs any more (cell copies
   * and segments of expired snapshots, held tenants' excepted), deleted at the end of the run.
   */
  readonly pruned: { readonly copies: number; readonly segments: number };
  /** The vault backup this run wrote after its key changes. */
  readonly vaultBackup: string;
  /** Objects found where a tombstone belongs that lethe did not write: reported, never trusted. */
  readonly foreignTombstones: readonly ForeignTombstone[];
  /**
   * What the vault database's server keeps of its WAL beyond lethe's reach, seen at the end
   * of the run (Vault.inspectDurability); always present, logged at warn when keys were destroyed.
   */
  readonly vaultDurability: readonly DurabilityFinding[];
  /** What happened to master epochs (null without `masterKeys`). */
  readonly master: SealResult | null;
  readonly durationMs: number;
}

/**
 * `lethe lifecycle apply`: plans from the vault and the bucket as they are now, then carries
 * the plan out in its order: finish approved deletion requests, re-wrap held cells, destroy
 * keys, write a fresh vault backup (so the newest one no longer holds what was destroyed),
 * expire snapshots (manifest first, then the vault's record), extend locks of objects live
 * snapshots still need, and delete what nothing live references and no lock protects.
 * Last it looks at what the vault database keeps of its WAL (archiving, replicas, slots):
 * the result carries the findings, and they are logged at warn when keys were destroyed.
 *
 * Runs under the backup job lock, so a backup never reuses a pack this run deletes. Every
 * step is idempotent and the plan is remade from the state at each run, so a run killed at
 * any point is finished by the next one, and nothing still referenced is ever deleted: the
 * plan only deletes objects that no live snapshot references at planning time, and no
 * snapshot can start referencing them while the lock is held.
 */
export async function runLifecycleApply(input: ApplyOptions): Promise<ApplyResult> {
  const { vault, store, config, log, actor } = input;
  // The lock's signal also fires when the connection holding it is lost: another run may
  // then take the lock, so this one stops at its next step.
  return vault.withJobLock('backup', async (signal) => {
    const options: ApplyOptions = { ...input, signal };
    const started = Date.now();
    const now = options.now();
    const plan = planLifecycle(await loadPlanInput(vault, store, config, now));
    const runLog = log.child({ job: 'lifecycle' });
    runLog.info({ actions: plan.actions.length }, 'lifecycle apply: plan made');
    const opener = new KeyOpener(vault, options.masterKeys ?? options.masterIdentity);
    const lock = config.storage.objectLock;
    const counts = { requestsFinished: 0, cellsRewrapped: 0, keysDestroyed: 0, snapshotsExpired: 0, locksExtended: 0, objectsDeleted: 0, bytesDeleted: 0 };
    /** The vault backup this run wrote; set once, before the first expiry or deletion. */
    const backup: { key: string | null } = { key: null };
    const requestsWaiting: { requestId: string; reason: string }[] = [];
    const foreignTombstones: ForeignTombstone[] = [];
    const tombstoneLockNow = (): ReturnType<typeof tombstoneLock> => tombstoneLock(lock, config.retention.graceWindowDays, options.now());
    const reportForeign = (found: ForeignTombstone): void => {
      foreignTombstones.push(found);
      runLog.warn({ object: found.key, problem: found.problem, alsoInResult: true }, 'an object where a tombstone belongs is not one lethe wrote; wrote the tombstone under another name');
    };
    let requestKeysDestroyed = 0;
    const total = plan.actions.length;
    let done = 0;
    const progress = (action: PlanAction['kind'], n: number): void => {
      done += n;
      options.onProgress?.({ done, total, action });
    };

    const writeBackup = async (): Promise<void> => {
      const current = options.masterKeys === undefined ? null : await vault.getCurrentMasterEpoch();
      const written = await writeVaultBackup({
        vault,
        store,
        // The current epoch's: a vault backup dies with the epoch its wraps belong to.
        masterRecipient: current?.recipient ?? options.masterRecipient,
        signer: options.signer,
        graceWindowDays: config.retention.graceWindowDays,
        ...(lock === undefined ? {} : { lockMode: lock.mode }),
        now: options.now(),
      });
      backup.key = written.key;
      failpoint('apply.after-vault-backup');
    };

    let i = 0;
    while (i < plan.actions.length) {
      throwIfAborted(options.signal, 'applying the lifecycle plan');
      const action = plan.actions[i] as PlanAction;
      switch (action.kind) {
        case 'finish-request': {
          try {
            const requestLock = tombstoneLockNow();
            const certificate = await executeApprovedRequest(
              {
                vault,
                store,
                graceWindowDays: config.retention.graceWindowDays,
                now: options.now,
                signer: options.signer,
                ...(requestLock === undefined ? {} : { lock: requestLock }),
                onForeignTombstone: reportForeign,
                subjectColumns: configSubjectColumns(config.chatStore.mapping),
              },
              action.requestId,
            );
            counts.requestsFinished += 1;
            requestKeysDestroyed += certificate.keysDestroyed.length;
          } catch (err) {
            // A hold placed after the approval (before a crash let it finish) wins: the
            // request waits, approved, until the case is released; the rest of the plan runs.
            if (!isLetheError(err) || err.code !== ErrorCode.REFUSED) throw err;
            requestsWaiting.push({ requestId: action.requestId, reason: err.message });
            runLog.warn({ requestId: action.requestId, alsoInResult: true }, 'approved deletion request waits: a legal hold covers it');
          }
          failpoint('apply.after-request');
          progress(action.kind, 1);
          i += 1;
          break;
        }
        case 'rewrap': {
          // Consecutive re-wraps go together: one key lookup and one insert per batch.
          const run: RewrapAction[] = [];
          while (i < plan.actions.length && plan.actions[i]?.kind === 'rewrap') run.push(plan.actions[i++] as RewrapAction);
          counts.cellsRewrapped += await rewrapForHolds(
            { vault, opener, masterRecipient: options.masterRecipient, actor, postQuantum: config.keys.postQuantum, ...(options.signal === undefined ? {} : { signal: options.signal }) },
            run,
          );
          failpoint('apply.after-rewrap');
          progress(action.kind, run.length);
          break;
        }
        case 'destroy-key': {
          // Keys destroyed for the same cause go in one call: one transaction, one VACUUM.
          const run: Extract<PlanAction, { kind: 'destroy-key' }>[] = [];
          const cause = JSON.stringify(action.cause);
          while (i < plan.actions.length) {
            const next = plan.actions[i] as PlanAction;
            if (next.kind !== 'destroy-key' || JSON.stringify(next.cause) !== cause) break;
            run.push(next);
            i += 1;
          }
          const destroyLock = tombstoneLockNow();
          const { destroyed, foreignTombstones: foreign } = await destroyKeys(vault, store, {
            keyIds: run.map((a) => a.keyId),
            actor,
            reason: action.reason,
            cause: action.cause,
            signer: options.signer,
            ...(destroyLock === undefined ? {} : { tombstoneLock: destroyLock }),
          });
          foreign.forEach(reportForeign);
          counts.keysDestroyed += destroyed.length;
          failpoint('apply.after-destroy');
          progress(action.kind, run.length);
          break;
        }
        case 'expire-snapshot': {
          if (backup.key === null) await writeBackup();
          // The manifest goes first: a snapshot without its manifest can never be mistaken
          // for a readable one, whereas a vault record without a manifest is just finished next run.
          await store.delete(action.manifestKey);
          failpoint('apply.after-manifest-delete');
          if (await vault.expireSnapshot(action.snapshotId)) {
            await vault.appendAudit({ actor, action: 'snapshot.expire', subject: action.snapshotId, details: { manifest: action.manifestKey, reason: action.reason } });
          }
          counts.snapshotsExpired += 1;
          progress(action.kind, 1);
          i += 1;
          break;
        }
        case 'extend-lock': {
          if (lock === undefined) throw new LetheError(ErrorCode.INTERNAL, 'the plan extends a lock but storage.objectLock is not set');
          await store.extendRetention(action.objectKey, { mode: lock.mode, retainUntil: new Date(action.retainUntil) });
          await vault.appendAudit({ actor, action: 'lock.extend', subject: action.objectKey, details: { retainUntil: action.retainUntil, reason: action.reason } });
          counts.locksExtended += 1;
          progress(action.kind, 1);
          i += 1;
          break;
        }
        case 'delete-object': {
          if (backup.key === null) await writeBackup();
          await store.delete(action.objectKey);
          await vault.forgetStoreObjects(store.description, [action.objectKey]);
          await vault.appendAudit({ actor, action: 'object.delete', subject: action.objectKey, details: { kind: action.objectKind, size: action.size, reason: action.reason } });
          failpoint('apply.after-object-delete');
          counts.objectsDeleted += 1;
          counts.bytesDeleted += action.size;
          progress(action.kind, 1);
          i += 1;
          break;
        }
      }
    }
    // Master epochs: rotate away from an epoch that wrapped a destroyed key, destroy retired
    // epochs past the grace window. A rotation re-wraps the vault, so the vault backup that
    // follows is encrypted to (and holds wraps of) the new epoch only.
    let master: SealResult | null = null;
    if (options.masterKeys !== undefined) {
      master = await sealShreds(vault, options.masterKeys, {
        actor,
        graceWindowDays: config.retention.graceWindowDays,
        now: options.now(),
        ...(options.signal === undefined ? {} : { signal: options.signal }),
      });
      if (master.rotatedTo !== null) backup.key = null;
      if (master.rotatedTo !== null || master.destroyed.length > 0) {
        runLog.info({ rotatedTo: master.rotatedTo, rewrapped: master.rewrapped, destroyedEpochs: master.destroyed }, 'master-key epochs sealed');
      }
    }
    if (backup.key === null) await writeBackup();
    const pruned = await vault.pruneTrees();
    // Destroyed keys' old row versions that a long transaction kept alive last time go now.
    const vacuum = await vault.vacuumKeyTables({ waitMs: 10_000 });
    if (!vacuum.clean) runLog.warn('a long-running transaction may still keep old row versions of destroyed keys; the next apply vacuums again');
    if (plan.unknownObjects.length > 0) {
      runLog.warn({ objects: plan.unknownObjects.length, first: plan.unknownObjects[0]?.objectKey, alsoInResult: true }, 'objects lethe has no record of writing to this store were left alone');
    }
    // The shred is final only once the vault database's own copies of its WAL are gone too.
    const vaultDurability = await vault.inspectDurability({ graceWindowDays: config.retention.graceWindowDays });
    if (counts.keysDestroyed + requestKeysDestroyed > 0) logVaultDurability(runLog, vaultDurability);
    const result: ApplyResult = {
      plan,
      ...counts,
      requestKeysDestroyed,
      requestsWaiting,
      pruned,
      vaultBackup: backup.key ?? '',
      foreignTombstones,
      vaultDurability,
      master,
      durationMs: Date.now() - started,
    };
    await vault.appendAudit({
      actor,
      action: 'lifecycle.apply',
      subject: plan.now,
      details: {
        ...counts,
        pruned,
        vaultBackup: result.vaultBackup,
        ...(master === null ? {} : { masterRotatedTo: master.rotatedTo, masterEpochsDestroyed: master.destroyed }),
        durationMs: result.durationMs,
      },
    });
    runLog.info(counts, 'lifecycle apply done');
    return result;
  }, input.signal === undefined ? {} : { signal: input.signal });
}
