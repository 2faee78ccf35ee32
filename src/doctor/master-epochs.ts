import type { Config } from '../config/index.ts';
import { readMasterKeyFile } from '../crypto/index.ts';
import { AwsKmsMasterKeys, FileMasterKeys, Pkcs11MasterKeys, sdkKmsApi } from '../keys/index.ts';
import type { MasterEpoch, Vault } from '../vault/index.ts';
import type { DoctorJob } from './types.ts';
import { describeError } from './database.ts';
import { check, fixIn, type Check } from './types.ts';

const DAY_MS = 86_400_000;

/**
 * The master-key epochs against the file provider (keys/master.ts): the current epoch's key
 * file is there and is the key the vault wraps to; every epoch that still wraps a live key
 * has its file; a retired epoch past its grace window is waiting for a `lifecycle apply`
 * (warn); a destroyed epoch's file must not be back (fail: it would open every copy of the
 * keys erased under it). `epochs` is the vault's list, non-empty.
 */
export async function masterEpochChecks(config: Config, file: string, epochs: readonly MasterEpoch[], now: Date): Promise<Check[]> {
  const keys = new FileMasterKeys(file);
  const checks: Check[] = [];
  const current = epochs.find((e) => e.retiredAt === null);
  if (current === undefined) {
    return [check('masterKey.vault', 'master key: matches the vault', 'fail', 'the vault has epochs but none is current', 'run `lethe keys rotate-master --reason "no current epoch"`')];
  }
  const currentFile = keys.path(current.epoch);
  try {
    const { recipient } = await readMasterKeyFile(currentFile);
    checks.push(check('masterKey.file', 'master key', 'ok', `${currentFile} (epoch ${current.epoch}): owner-only, one age identity`));
    checks.push(
      recipient === current.recipient
        ? check('masterKey.vault', 'master key: matches the vault', 'ok', `the vault wraps keys to epoch ${current.epoch}, ${recipient}`)
        : check(
            'masterKey.vault',
            'master key: matches the vault',
            'fail',
            `${currentFile} is the key of ${recipient}, but the vault's epoch ${current.epoch} wraps to ${current.recipient}`,
            `restore epoch ${current.epoch}'s key file from escrow to ${currentFile}`,
          ),
    );
  } catch (err) {
    const message = describeError(err);
    // A key others can read needs `chmod 600`, not a copy from escrow: keep the message's command.
    checks.push(check('masterKey.file', 'master key', 'fail', `current epoch ${current.epoch}: ${message}`, fixIn(message, `restore ${currentFile} from escrow (mode 0600)`)));
  }
  const grace = config.retention.graceWindowDays;
  for (const e of epochs) {
    if (e === current) continue;
    const id = `masterKey.epoch.${e.epoch}`;
    const title = `master key: epoch ${e.epoch}`;
    const present = await keys.exists(e.epoch).catch(() => false);
    if (e.destroyedAt !== null) {
      checks.push(
        present
          ? check(id, title, 'fail', `epoch ${e.epoch} was destroyed ${e.destroyedAt.toISOString()}, yet ${keys.path(e.epoch)} exists: it opens every copy of the keys erased under it`, `remove ${keys.path(e.epoch)} (and every copy of it), then sync the directory`)
          : check(id, title, 'ok', `destroyed ${e.destroyedAt.toISOString()}; its file is gone`),
      );
      continue;
    }
    if (e.liveKeys > 0) {
      checks.push(
        present
          ? check(id, title, 'warn', `retired, yet ${e.liveKeys} live keys are still wrapped to it (a rotation did not finish)`, 'run `lethe keys rotate-master --reason "finish rotation"`')
          : check(id, title, 'fail', `${e.liveKeys} live keys are wrapped to epoch ${e.epoch}, whose key ${keys.path(e.epoch)} is missing`, `restore ${keys.path(e.epoch)} from escrow`),
      );
      continue;
    }
    const destroyAfter = new Date((e.retiredAt ?? now).getTime() + grace * DAY_MS);
    checks.push(
      destroyAfter <= now
        ? check(id, title, 'warn', `retired ${e.retiredAt?.toISOString() ?? '?'}, past its ${grace}-day grace window, and not destroyed yet`, 'run `lethe lifecycle apply`, which destroys it')
        : check(id, title, 'ok', `retired, wraps nothing live; \`lethe lifecycle apply\` destroys it after ${destroyAfter.toISOString()}`),
    );
  }
  return checks;
}

/**
 * The master key in an HSM or KMS: for a job that unwraps keys, that the token opens with the
 * configured PIN and holds the current epoch's key (and no destroyed epoch's); for the backup,
 * that the config need not name it at all (the backup never talks to the HSM).
 */
export async function providerChecks(config: Config, job: DoctorJob, vault: Vault | null): Promise<Check[]> {
  const master = config.master;
  if (master === undefined || master.provider === 'file') return [];
  if (job === 'backup' || job === 'vault-backup') {
    return [check('masterKey.file', 'master key', 'warn', `the config names the ${master.provider} master, and the ${job} job never uses it`, 'remove `master` from this host\'s config: the backup needs only the public recipient the vault records')];
  }
  if (master.provider === 'aws-kms') {
    const keys = new AwsKmsMasterKeys(master, sdkKmsApi(master), config.vault.schema, config.retention.graceWindowDays);
    try {
      return await kmsChecks(keys, vault === null ? [] : await vault.listMasterEpochs());
    } catch (err) {
      return [check('masterKey.file', 'master key', 'fail', describeError(err), 'check `master.region`, the credentials and the role\'s KMS permissions (docs/operations.md, "AWS KMS master")')];
    }
  }
  const keys = new Pkcs11MasterKeys(master);
  try {
    const epochs = vault === null ? [] : await vault.listMasterEpochs();
    const current = epochs.find((e) => e.retiredAt === null);
    const checks: Check[] = [];
    if (current === undefined) {
      await keys.exists(1); // opens the token: module, label and PIN
      checks.push(check('masterKey.file', 'master key', 'ok', `PKCS#11 token ${master.token} opens with the configured PIN`));
      return checks;
    }
    checks.push(
      (await keys.exists(current.epoch))
        ? check('masterKey.file', 'master key', 'ok', `PKCS#11 token ${master.token} holds epoch ${current.epoch} (${keys.reference(current.epoch)})`)
        : check('masterKey.file', 'master key', 'fail', `PKCS#11 token ${master.token} has no key for the current epoch ${current.epoch}`, `restore ${keys.reference(current.epoch)} to the token from its backup`),
    );
    for (const e of epochs) {
      if (e === current) continue;
      const present = await keys.exists(e.epoch);
      if (e.destroyedAt !== null && present) {
        checks.push(check(`masterKey.epoch.${e.epoch}`, `master key: epoch ${e.epoch}`, 'fail', `epoch ${e.epoch} was destroyed, yet the token holds ${keys.reference(e.epoch)}`, `destroy ${keys.reference(e.epoch)} in the token`));
      } else if (e.destroyedAt === null && e.liveKeys > 0 && !present) {
        checks.push(check(`masterKey.epoch.${e.epoch}`, `master key: epoch ${e.epoch}`, 'fail', `${e.liveKeys} live keys are wrapped to epoch ${e.epoch}, which the token no longer holds`, `restore ${keys.reference(e.epoch)} to the token`));
      } else {
        checks.push(check(`masterKey.epoch.${e.epoch}`, `master key: epoch ${e.epoch}`, 'ok', e.destroyedAt !== null ? 'destroyed; not in the token' : `retired; ${present ? 'in the token' : 'not in the token'}`));
      }
    }
    return checks;
  } catch (err) {
    const message = describeError(err);
    return [check('masterKey.file', 'master key', 'fail', message, 'check `master.module`, `master.token` and `master.pin`')];
  } finally {
    keys.close();
  }
}

/**
 * The AWS KMS master: the current epoch's key exists, is Enabled and is the key the vault
 * wraps to (its public key is the vault's recipient); a live epoch's key is usable; and a
 * destroyed epoch's key is scheduled for deletion or gone. A destroyed epoch whose key is
 * Enabled or Disabled again means someone cancelled the deletion (CancelKeyDeletion): the
 * shred it made is undone until the key is scheduled again, so doctor warns. `epochs` is the
 * vault's list (empty before `lethe init`).
 */
export async function kmsChecks(keys: AwsKmsMasterKeys, epochs: readonly MasterEpoch[]): Promise<Check[]> {
  try {
    const current = epochs.find((e) => e.retiredAt === null);
    const checks: Check[] = [];
    if (current === undefined) {
      const first = await keys.state(1);
      checks.push(
        first === null
          ? check('masterKey.file', 'master key', 'ok', `KMS answers; no key ${keys.keyId(1)} yet (\`lethe init\` creates it)`)
          : check('masterKey.file', 'master key', 'ok', `KMS key ${first.arn} is ${first.state}`),
      );
      return checks;
    }
    const key = await keys.state(current.epoch);
    if (key === null || key.state !== 'Enabled') {
      checks.push(check('masterKey.file', 'master key', 'fail', `the current epoch ${current.epoch}'s KMS key ${keys.keyId(current.epoch)} is ${key === null ? 'missing' : key.state}`, key?.state === 'PendingDeletion' ? `cancel its deletion (aws kms cancel-key-deletion) and enable it, then run \`lethe keys rotate-master\`` : 'enable the key, or check `master.region` and `master.keyIds`'));
    } else {
      checks.push(check('masterKey.file', 'master key', 'ok', `KMS key ${key.arn} holds epoch ${current.epoch}`));
    }
    for (const e of epochs) {
      if (e === current) continue;
      const id = `masterKey.epoch.${e.epoch}`;
      const title = `master key: epoch ${e.epoch}`;
      const state = await keys.state(e.epoch);
      const usable = state !== null && state.state !== 'PendingDeletion' && state.state !== 'PendingReplicaDeletion';
      if (e.destroyedAt !== null && usable) {
        checks.push(check(id, title, 'warn', `epoch ${e.epoch} was destroyed, yet its KMS key ${state.arn} is ${state.state}: its deletion was cancelled, and every copy of the keys shredded under it opens again`, `schedule its deletion again: aws kms schedule-key-deletion --key-id ${state.arn} --pending-window-in-days 7`));
      } else if (e.destroyedAt === null && e.liveKeys > 0 && !usable) {
        checks.push(check(id, title, 'fail', `${e.liveKeys} live keys are wrapped to epoch ${e.epoch}, whose KMS key is ${state === null ? 'gone' : state.state}`, 'cancel the key\'s deletion (aws kms cancel-key-deletion) while it is pending'));
      } else {
        checks.push(check(id, title, 'ok', e.destroyedAt !== null ? (state === null ? 'destroyed; KMS deleted the key' : `destroyed; KMS deletes the key on ${state.deletionDate?.toISOString() ?? '?'}`) : `retired; key ${usable ? state.state : 'not usable'}`));
      }
    }
    return checks;
  } catch (err) {
    return [check('masterKey.file', 'master key', 'fail', describeError(err), 'check `master.region`, the credentials and the role\'s KMS permissions (docs/operations.md, "AWS KMS master")')];
  }
}
