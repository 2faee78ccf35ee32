import { access } from 'node:fs/promises';
import type { SigningPurpose } from '../config/index.ts';
import { ErrorCode, isLetheError } from '../errors/index.ts';
import { publicKeyFileText, readMasterKeyFile, signingKeyId, writeMasterKeyFile, writeSigningKeyFile, type SigningKey } from '../crypto/index.ts';
import { readConfiguredSigningKey, type SecretObserver } from '../keys/index.ts';
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
import { migrateVault } from '../vault/index.ts';
import { runLifecycleApply, type ApplyOptions, type ApplyResult } from '../lifecycle/apply.ts';
import { planLifecycle, type Plan } from '../lifecycle/plan.ts';
import { loadPlanInput } from '../lifecycle/state.ts';
import { exportCase, type ExportOptions, type ExportResult } from '../lifecycle/export.ts';
import { writeVaultBackup, type VaultBackupResult, type VaultTableProgress } from '../vaultbackup/index.ts';
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
  const { applied } = await migrateVault(await rt.vaultUrl(), config.vault.schema);
  const keyFile = config.masterKey?.file ?? null;
  let masterKeyCreated = false;
  let masterRecipient: string;
  let vault;
  if (keyFile === null) {
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
    masterKeyCreated = !(await exists(keyFile));
    masterRecipient = masterKeyCreated
      ? (await writeMasterKeyFile(keyFile)).recipient
      : (await readMasterKeyFile(keyFile)).recipient;
    vault = await rt.vault();
    await vault.setMasterRecipient(masterRecipient);
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
    storage: (await rt.createStore()).description,
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
  const master = await readMasterKeyFile(rt.masterKeyFile('`lethe verify`'));
  return runVerify({
    vault: await rt.vault(),
    store: await rt.store(),
    masterIdentity: master.identity,
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
    actor: string;
    signal?: AbortSignal;
    onProgress?: (p: LoadProgress) => void;
  },
): Promise<RestoreResult> {
  const master = await readMasterKeyFile(rt.masterKeyFile('`lethe restore`'));
  return runRestore({
    ...options,
    vault: await rt.vault(),
    store: await rt.store(),
    masterIdentity: master.identity,
    concurrency: rt.config.verify.concurrency,
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
  const master = await readMasterKeyFile(rt.masterKeyFile('`lethe lifecycle apply`'));
  return runLifecycleApply({
    vault: await rt.vault(),
    store: await rt.store(),
    config: rt.config,
    masterIdentity: master.identity,
    masterRecipient: master.recipient,
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
  const master = await readMasterKeyFile(rt.masterKeyFile('`lethe export`'));
  return exportCase({
    vault: await rt.vault(),
    store: await rt.store(),
    mapping: rt.mapping(),
    masterIdentity: master.identity,
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
    masterRecipient: await vault.getMasterRecipient(),
    signer: await rt.signer('lifecycle'),
    graceWindowDays: rt.config.retention.graceWindowDays,
    ...(lock === undefined ? {} : { lockMode: lock.mode }),
    now: new Date(),
    actor: options.actor,
    ...(options.signal === undefined ? {} : { signal: options.signal }),
    ...(options.onProgress === undefined ? {} : { onProgress: options.onProgress }),
  });
}
