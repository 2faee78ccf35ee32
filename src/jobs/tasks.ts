import { access } from 'node:fs/promises';
import type { SigningPurpose } from '../config/index.ts';
import { ErrorCode, LetheError, isLetheError } from '../errors/index.ts';
import { publicKeyFileText, readMasterKeyFile, signingKeyId, writeMasterKeyFile, writeSigningKeyFile, type SigningKey } from '../crypto/index.ts';
import { AwsKmsMasterKeys, FileMasterKeys, Pkcs11MasterKeys, addMlkemHalves, sdkKmsApi, currentWrapTarget, destroyRetiredEpochs, readConfiguredSigningKey, rotateMaster, type MasterKeyProvider, type SecretObserver } from '../keys/index.ts';
import { writeFile } from 'node:fs/promises';
import { runRestore, runVerify, type LoadProgress, type RestoreResult, type VerifyResult } from '../restore/index.ts';
import {
  runBackup,
  runBackupCoordinator,
  runBackupShard,
  type BackupOptions,
  type BackupProgress,
  type BackupResult,
  type ShardResult,
} from '../snapshot/index.ts';
import { migrateVault, type Vault } from '../vault/index.ts';
import { runLifecycleApply, type ApplyOptions, type ApplyResult } from '../lifecycle/apply.ts';
import { planLifecycle, type Plan } from '../lifecycle/plan.ts';
import { loadPlanInput } from '../lifecycle/state.ts';
import { exportCase, type ExportOptions, type ExportResult } from '../lifecycle/export.ts';
import { writeVaultBackup, type VaultBackupResult, type VaultTableProgress } from '../vaultbackup/index.ts';
import { checkCoverage } from '../mapping/index.ts';
import type { Runtime } from './runtime.ts';

/**
 * The jobs, wired from config. The CLI commands and the demo call these, so `lethe demo`
 * runs exactly what `lethe init`, `lethe backup` and `lethe verify` run.
 */

export interface InitResult {
  readonly vaultSchema: string;
  readonly migrationsApplied: number[];
  /** The config's master key file; null when the config has none (a backup-only host). */
  readonly masterKeyFile: string | null;
  readonly masterKeyCreated: boolean;
  readonly masterRecipient: string;
  /** The signing keys the config names, with what init did about each. */
  readonly signingKeys: readonly InitSigningKey[];
  readonly storage: string;
  /** The mapping checked against the chat store before anything changed: how many tables it backs up. */
  readonly mappingChecked: { readonly tables: number };
  /** keys.postQuantum: live keys made before the option that init gave their ML-KEM-768 half. */
  readonly mlkemHalvesAdded: number;
}

export interface InitSigningKey {
  readonly purpose: SigningPurpose;
  readonly id: string;
  /** The key file, when the key comes from one. */
  readonly file: string | null;
  /** True when init wrote the key file (and `<file>.pub`, its public half for the DR escrow). */
  readonly created: boolean;
  /** True when init registered it in the vault now (a first key, or a rotation). */
  readonly registered: boolean;
  /** Keys this registration retired (a rotation). */
  readonly retired: readonly string[];
}

async function exists(path: string): Promise<boolean> {
  try {
    await access(path);
    return true;
  } catch {
    return false;
  }
}

/**
 * Creates (or brings up to date) the vault, the master key file (mode 0600, never
 * overwritten) and each signing key the config names: a missing key file is created (mode
 * 0600, with its public half beside it as `<file>.pub`), and the key's public half is
 * registered in the vault as the active key for its purpose, retiring the one before (a
 * rotation: replace the file, run init). The vault never holds a private signing key.
 * A filesystem store is created and marked here, and only here (see Runtime.store).
 * Idempotent: a second run changes nothing.
 */
export async function initialize(rt: Runtime, actor: string): Promise<InitResult> {
  const { config } = rt;
  // The same check backup runs, before init changes anything: a mapping that backup would
  // refuse (missing tables or columns, non-unique joins, unmapped tables) fails here, exit 2.
  const { tables } = await checkCoverage(await rt.chatStoreUrl(), rt.mapping());
  const { applied } = await migrateVault(await rt.vaultUrl(), config.vault.schema);
  const provider = config.master !== undefined || config.masterKey !== undefined ? masterKeys(rt, '`lethe init`') : null;
  const keyFile = provider === null ? null : provider instanceof FileMasterKeys ? provider.file : provider.reference(1);
  let masterKeyCreated = false;
  let masterRecipient: string;
  let vault;
  if (provider === null) {
    // A backup-only host: the vault must already know the master recipient (from the init
    // of a host that holds the key); this init only brings the rest up to date.
    vault = await rt.vault();
    try {
      masterRecipient = await vault.getMasterRecipient();
    } catch (err) {
      if (!isLetheError(err, ErrorCode.VAULT)) throw err;
      rt.masterKeyFile('the first `lethe init` of a vault');
      throw err;
    }
  } else {
    vault = await rt.vault();
    const epochs = await vault.listMasterEpochs();
    if (epochs.length > 0) {
      // A vault with epochs: epoch 1 (the configured file, or token object) may have been
      // destroyed on purpose. Never re-create it; the current epoch's key must exist.
      masterRecipient = await vault.getMasterRecipient();
      const current = await vault.getCurrentMasterEpoch();
      if (current.provider !== provider.kind) {
        throw new LetheError(ErrorCode.CONFIG_INVALID, `the vault's master keys live in provider ${current.provider}, but the config names ${provider.kind}: configure \`master\` for ${current.provider}`);
      }
      if (!(await provider.exists(current.epoch))) {
        throw new LetheError(
          ErrorCode.MASTER_KEY,
          `the vault's current master epoch ${current.epoch} wraps its keys to ${provider.reference(current.epoch)}, which does not exist: restore it from escrow`,
        );
      }
    } else {
      if (provider instanceof FileMasterKeys) {
        masterKeyCreated = !(await exists(provider.file));
        masterRecipient = masterKeyCreated
          ? (await writeMasterKeyFile(provider.file)).recipient
          : (await readMasterKeyFile(provider.file)).recipient;
      } else {
        masterKeyCreated = !(await provider.exists(1));
        masterRecipient = await provider.create(1);
      }
      await vault.setMasterRecipient(masterRecipient);
      await vault.recordFirstMasterEpoch({ provider: provider.kind, reference: provider.reference(1), recipient: masterRecipient });
    }
  }
  const signingKeys: InitSigningKey[] = [];
  for (const purpose of ['backup', 'lifecycle'] as const) {
    const source = config.signingKeys[purpose];
    if (source === undefined) continue;
    const file = 'file' in source ? source.file : null;
    let key: SigningKey;
    let created = false;
    if (file !== null && !(await exists(file))) {
      key = await writeSigningKeyFile(file, `${purpose} signing key file`);
      await writeFile(`${file}.pub`, publicKeyFileText(key), { mode: 0o644 });
      created = true;
    } else {
      key = await readConfiguredSigningKey(source, purpose);
    }
    const id = signingKeyId(key.publicKey);
    const { changed, retired } = await vault.registerSigningKey({ id, purpose, publicKey: key.publicKey });
    signingKeys.push({ purpose, id, file, created, registered: changed, retired });
  }
  // keys.postQuantum: keys made before the option get their ML-KEM halves (needs the master key).
  const mlkemHalvesAdded =
    config.keys.postQuantum && provider !== null ? (await addMlkemHalves(vault, provider, masterRecipient, { actor })).length : 0;
  const changedKeys = signingKeys.filter((k) => k.created || k.registered);
  if (applied.length > 0 || masterKeyCreated || changedKeys.length > 0) {
    await vault.appendAudit({
      actor,
      action: 'init',
      subject: config.vault.schema,
      details: {
        migrations: applied,
        masterKeyCreated,
        masterRecipient,
        signingKeys: changedKeys.map((k) => ({ purpose: k.purpose, id: k.id, created: k.created, retired: [...k.retired] })),
      },
    });
  }
  return {
    vaultSchema: config.vault.schema,
    migrationsApplied: applied,
    masterKeyFile: keyFile,
    masterKeyCreated,
    masterRecipient,
    signingKeys,
    mlkemHalvesAdded,
    storage: (await rt.createStore()).description,
    mappingChecked: { tables: tables.length },
  };
}

/**
 * `lethe backup` with the config's settings. Needs the master key's public recipient only
 * (from the vault), never its identity. `observeSecrets` is a test hook (see BackupOptions).
 */
export async function backup(
  rt: Runtime,
  options: { actor: string; fullRead?: boolean; signal?: AbortSignal; onProgress?: (p: BackupProgress) => void; observeSecrets?: SecretObserver },
): Promise<BackupResult> {
  return runBackup(await backupOptions(rt, options));
}

/** `lethe backup --coordinate K`: the coordinator of a backup written by K workers. */
export async function backupCoordinate(
  rt: Runtime,
  options: { actor: string; shards: number; waitMs?: number; fullRead?: boolean; signal?: AbortSignal; onProgress?: (p: BackupProgress) => void },
): Promise<BackupResult> {
  return runBackupCoordinator(await backupOptions(rt, options), {
    shards: options.shards,
    ...(options.waitMs === undefined ? {} : { waitMs: options.waitMs }),
  });
}

/** `lethe backup --shard I/K`: one worker of a coordinated backup. */
export async function backupShard(
  rt: Runtime,
  options: { actor: string; index: number; of: number; waitMs?: number; signal?: AbortSignal; onProgress?: (p: BackupProgress) => void },
): Promise<ShardResult> {
  return runBackupShard(await backupOptions(rt, options), {
    index: options.index,
    of: options.of,
    ...(options.waitMs === undefined ? {} : { waitMs: options.waitMs }),
  });
}

async function backupOptions(
  rt: Runtime,
  options: { actor: string; fullRead?: boolean; signal?: AbortSignal; onProgress?: (p: BackupProgress) => void; observeSecrets?: SecretObserver },
): Promise<BackupOptions> {
  const { backup: settings, storage } = rt.config;
  return {
    chatStoreUrl: await rt.chatStoreUrl(),
    mapping: rt.mapping(),
    vault: await rt.vault(),
    store: await rt.store(),
    granularity: settings.granularity,
    packSizeBytes: settings.packSizeMiB * 1024 * 1024,
    cellBufferBytes: settings.cellBufferMiB * 1024 * 1024,
    fullEvery: settings.fullEvery,
    blobStores: rt.config.chatStore.blobStores,
    postQuantum: rt.config.keys.postQuantum,
    ...(options.fullRead === true ? { fullRead: true } : {}),
    ...(storage.objectLock === undefined ? {} : { lockDays: { mode: storage.objectLock.mode, days: storage.objectLock.retainDays } }),
    log: rt.log,
    actor: options.actor,
    signer: await rt.signer('backup'),
    ...(options.signal === undefined ? {} : { signal: options.signal }),
    ...(options.onProgress === undefined ? {} : { onProgress: options.onProgress }),
    ...(options.observeSecrets === undefined ? {} : { observeSecrets: options.observeSecrets }),
  };
}

/** `lethe verify` with the config's settings. */
export async function verify(
  rt: Runtime,
  options: { snapshot: string; actor: string; signal?: AbortSignal; onProgress?: (p: LoadProgress) => void },
): Promise<VerifyResult> {
  const master = masterKeys(rt, '`lethe verify`');
  return runVerify({
    vault: await rt.vault(),
    store: await rt.store(),
    masterIdentity: master,
    snapshot: options.snapshot,
    scratchServerUrl: await rt.scratchServerUrl(),
    concurrency: rt.config.verify.concurrency,
    actor: options.actor,
    log: rt.log,
    ...(options.signal === undefined ? {} : { signal: options.signal }),
    ...(options.onProgress === undefined ? {} : { onProgress: options.onProgress }),
  });
}

/** `lethe restore` with the config's settings. */
export async function restore(
  rt: Runtime,
  options: {
    snapshot: string;
    targetUrl: string;
    targetSchema?: string;
    tenant?: string;
    replace: boolean;
    blobTarget?: string;
    actor: string;
    signal?: AbortSignal;
    onProgress?: (p: LoadProgress) => void;
  },
): Promise<RestoreResult> {
  const master = masterKeys(rt, '`lethe restore`');
  return runRestore({
    ...options,
    vault: await rt.vault(),
    store: await rt.store(),
    masterIdentity: master,
    concurrency: rt.config.verify.concurrency,
    blobStores: rt.config.chatStore.blobStores,
    log: rt.log,
  });
}

/** `lethe lifecycle plan`: what apply would do at `now`; reads, never changes anything. */
export async function lifecyclePlan(rt: Runtime, options: { now: Date }): Promise<Plan> {
  return planLifecycle(await loadPlanInput(await rt.vault(), await rt.store(), rt.config, options.now));
}

/** `lethe lifecycle apply` with the config's rules, on the clock given (the real one from the CLI). */
export async function lifecycleApply(
  rt: Runtime,
  options: { actor: string; now: () => Date; signal?: AbortSignal; onProgress?: ApplyOptions['onProgress'] },
): Promise<ApplyResult> {
  const vault = await rt.vault();
  const master = masterKeys(rt, '`lethe lifecycle apply`');
  return runLifecycleApply({
    vault,
    store: await rt.store(),
    config: rt.config,
    masterIdentity: master,
    masterRecipient: await vault.getMasterRecipient(),
    masterKeys: master,
    signer: await rt.signer('lifecycle'),
    actor: options.actor,
    now: options.now,
    log: rt.log,
    ...(options.signal === undefined ? {} : { signal: options.signal }),
    ...(options.onProgress === undefined ? {} : { onProgress: options.onProgress }),
  });
}

/** `lethe export --case`: the case's held data as NDJSON per table. */
export async function exportHeld(
  rt: Runtime,
  options: { caseId: string; outDir: string; actor: string; signal?: AbortSignal; onProgress?: ExportOptions['onProgress'] },
): Promise<ExportResult> {
  const master = masterKeys(rt, '`lethe export`');
  return exportCase({
    vault: await rt.vault(),
    store: await rt.store(),
    mapping: rt.mapping(),
    masterIdentity: master,
    caseId: options.caseId,
    outDir: options.outDir,
    actor: options.actor,
    ...(options.signal === undefined ? {} : { signal: options.signal }),
    ...(options.onProgress === undefined ? {} : { onProgress: options.onProgress }),
  });
}

/**
 * `lethe vault backup` with the config's settings: the vault, encrypted to the master key's
 * public recipient (never its identity), signed by the lifecycle key, locked like the bucket.
 */
export async function vaultBackup(
  rt: Runtime,
  options: { actor: string; signal?: AbortSignal; onProgress?: (p: VaultTableProgress) => void },
): Promise<VaultBackupResult> {
  const vault = await rt.vault();
  const lock = rt.config.storage.objectLock;
  return writeVaultBackup({
    vault,
    store: await rt.store(),
    masterRecipient: await vaultBackupRecipient(vault),
    signer: await rt.signer('lifecycle'),
    graceWindowDays: rt.config.retention.graceWindowDays,
    ...(lock === undefined ? {} : { lockMode: lock.mode }),
    now: new Date(),
    actor: options.actor,
    ...(options.signal === undefined ? {} : { signal: options.signal }),
    ...(options.onProgress === undefined ? {} : { onProgress: options.onProgress }),
  });
}

const TOKEN_SESSIONS = new WeakMap<Runtime, Pkcs11MasterKeys>();
const KMS_KEYS = new WeakMap<Runtime, AwsKmsMasterKeys>();

/**
 * The master key provider of the config (`what` names the command that needs it): `master`
 * (file, pkcs11, aws-kms) or `masterKey: { file }`. Throws CONFIG_INVALID when the config has neither.
 */
export function masterKeys(rt: Runtime, what: string): MasterKeyProvider {
  const master = rt.config.master;
  if (master?.provider === 'pkcs11') {
    // One token session per runtime (the daemon's lives as long as it does), not one per job.
    let keys = TOKEN_SESSIONS.get(rt);
    if (keys === undefined) {
      keys = new Pkcs11MasterKeys(master);
      TOKEN_SESSIONS.set(rt, keys);
    }
    return keys;
  }
  if (master?.provider === 'aws-kms') {
    // One provider per runtime too: it caches each epoch's public key.
    let keys = KMS_KEYS.get(rt);
    if (keys === undefined) {
      keys = new AwsKmsMasterKeys(master, sdkKmsApi(master), rt.config.vault.schema, rt.config.retention.graceWindowDays);
      KMS_KEYS.set(rt, keys);
    }
    return keys;
  }
  return new FileMasterKeys(rt.masterKeyFile(what));
}

/**
 * The recipient a vault backup is encrypted to: the current master epoch's, so that a vault
 * backup dies with its epoch like every wrap in it (the vault's first recipient on a vault
 * without epochs).
 */
export async function vaultBackupRecipient(vault: Vault): Promise<string> {
  return (await currentWrapTarget(vault, await vault.getMasterRecipient())).recipient;
}

export interface RotateMasterResult {
  /** The new current epoch. */
  readonly epoch: number;
  readonly recipient: string;
  readonly retired: readonly number[];
  readonly rewrapped: number;
  /** How long the re-wrap transaction took (unwrap, wrap and write every live key). */
  readonly rewrapMs: number;
  readonly auditSeq: number;
  /** The vault backup written after the rotation (encrypted to the new epoch). */
  readonly vaultBackup: string;
  /** Epochs destroyed in the provider by this run (only with `destroyOldNow`). */
  readonly destroyed: readonly number[];
  /** Retired epochs waiting for the grace window, with when `lifecycle apply` destroys each. */
  readonly pending: readonly { readonly epoch: number; readonly destroyAfter: Date }[];
}

/**
 * `lethe keys rotate-master`: under the backup job lock, creates the next epoch's master key,
 * re-wraps every live dimension key to it in one vault transaction (no bucket object is
 * touched: snapshots are encrypted to dimension keys, never to the master), writes a vault
 * backup encrypted to the new epoch, and, with `destroyOldNow` (a suspected compromise),
 * destroys every retired epoch at once instead of after the grace window.
 */
export async function rotateMasterKey(
  rt: Runtime,
  options: { actor: string; reason: string; destroyOldNow: boolean; now: () => Date; signal?: AbortSignal },
): Promise<RotateMasterResult> {
  const vault = await rt.vault();
  const keys = masterKeys(rt, '`lethe keys rotate-master`');
  const store = await rt.store();
  const signer = await rt.signer('lifecycle');
  const { config } = rt;
  return vault.withJobLock(
    'backup',
    async (signal) => {
      const started = performance.now();
      const rotation = await rotateMaster(vault, keys, { actor: options.actor, reason: options.reason, signal });
      const rewrapMs = Math.round(performance.now() - started);
      const current = await vault.getCurrentMasterEpoch();
      const lock = config.storage.objectLock;
      // Before any old epoch goes: the newest vault backup must open with the new one.
      const written = await writeVaultBackup({
        vault,
        store,
        masterRecipient: current.recipient,
        signer,
        graceWindowDays: config.retention.graceWindowDays,
        ...(lock === undefined ? {} : { lockMode: lock.mode }),
        now: options.now(),
        actor: options.actor,
        signal,
      });
      const { destroyed, pending } = await destroyRetiredEpochs(vault, keys, {
        actor: options.actor,
        graceWindowDays: config.retention.graceWindowDays,
        now: options.now(),
        immediately: options.destroyOldNow,
      });
      return {
        epoch: rotation.epoch,
        recipient: current.recipient,
        retired: rotation.retired,
        rewrapped: rotation.rewrapped,
        rewrapMs,
        auditSeq: rotation.auditSeq,
        vaultBackup: written.key,
        destroyed,
        pending,
      };
    },
    options.signal === undefined ? {} : { signal: options.signal },
  );
}
