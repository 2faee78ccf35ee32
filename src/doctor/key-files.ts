import { lstat } from 'node:fs/promises';
import type { Config, SigningPurpose } from '../config/index.ts';
import { readMasterKeyFile, readSigningKeyFile, signingKeyId, type SigningKey } from '../crypto/index.ts';
import { readSecretFile } from '../jobs/runtime.ts';
import { readConfiguredSigningKey } from '../keys/index.ts';
import type { Vault } from '../vault/index.ts';
import { describeError } from './database.ts';
import { masterEpochChecks, providerChecks } from './master-epochs.ts';
import { check, fixIn, type Check, type DoctorJob } from './types.ts';

/** The signing keys a job signs with. */
const SIGNING_NEEDS: Readonly<Record<DoctorJob, readonly SigningPurpose[]>> = {
  all: ['backup', 'lifecycle'],
  backup: ['backup'],
  verify: [],
  lifecycle: ['lifecycle'],
  'vault-backup': ['lifecycle'],
};

/** Whether a job reads the master key (verify, restore, export, lifecycle apply do; backup never). */
function needsMasterKey(job: DoctorJob): boolean {
  return job !== 'backup' && job !== 'vault-backup';
}

/** The uid this process runs as, or undefined where there are no uids. */
function currentUid(): number | undefined {
  return typeof process.getuid === 'function' ? process.getuid() : undefined;
}

/**
 * Who owns a key file, as a check: a key the job's user does not own is either unreadable to
 * it or readable by someone else. Undefined when it is ours (nothing to report).
 */
async function ownerCheck(id: string, title: string, path: string): Promise<Check | undefined> {
  const uid = currentUid();
  if (uid === undefined) return undefined;
  let owner: number;
  try {
    owner = (await lstat(path)).uid;
  } catch {
    return undefined; // the read check reports a missing file
  }
  if (owner === uid) return undefined;
  return check(
    id,
    title,
    'warn',
    `${path} is owned by uid ${owner}, and lethe runs as uid ${uid} here`,
    `run doctor as the user the jobs run as, or \`chown ${uid} ${path}\` so that user owns the key`,
  );
}

/**
 * The key files of the config: the master key (mode and owner, that it parses, and that it
 * is the key the vault wraps to), the signing keys the job signs with (mode and owner, and
 * that the vault lists each as the active key for its purpose), and the other secret files
 * (the embedded server's password, the daemon's token, webhook secrets). `vault` is null when it could not be opened (its own checks say why).
 * A key present on a host whose job never reads it is a warning: it should not be there.
 */
export async function checkKeyFiles(config: Config, job: DoctorJob, vault: Vault | null): Promise<Check[]> {
  const checks: Check[] = [];
  checks.push(...(await masterKeyChecks(config, job, vault)));
  for (const purpose of ['backup', 'lifecycle'] as const) {
    checks.push(...(await signingKeyChecks(config, job, purpose, vault)));
  }
  // Secrets read with the runtime's own rule (readSecretFile: owner-only, not empty).
  const secretFiles: [string, string, string][] = [];
  if (config.embedded !== undefined) {
    secretFiles.push(['embedded.passwordFile', 'embedded PostgreSQL: password file', config.embedded.passwordFile]);
  }
  const token = config.daemon?.token;
  if (token !== undefined && 'file' in token) secretFiles.push(['daemon.token.file', 'daemon: token file', token.file]);
  for (const [index, hook] of (config.alerts?.webhooks ?? []).entries()) {
    if ('file' in hook.secret) secretFiles.push([`alerts.webhooks.${index}.secret.file`, `alerts: webhook ${index + 1} secret`, hook.secret.file]);
  }
  for (const [id, title, path] of secretFiles) checks.push(...(await secretFileChecks(id, title, path)));
  return checks;
}

async function secretFileChecks(id: string, title: string, path: string): Promise<Check[]> {
  try {
    await readSecretFile(path, id);
  } catch (err) {
    const message = describeError(err);
    return [check(id, title, 'fail', message, fixIn(message, `fix \`${id}\``))];
  }
  const owner = await ownerCheck(`${id}.owner`, `${title}: owner`, path);
  return [check(id, title, 'ok', `${path}: owner-only`), ...(owner === undefined ? [] : [owner])];
}

async function masterKeyChecks(config: Config, job: DoctorJob, vault: Vault | null): Promise<Check[]> {
  const id = 'masterKey.file';
  const title = 'master key';
  const master = config.master;
  if (master?.provider === 'pkcs11' || master?.provider === 'aws-kms') return providerChecks(config, job, vault);
  const file = config.masterKey?.file ?? master?.file;
  if (file === undefined) {
    return needsMasterKey(job)
      ? [
          check(
            id,
            title,
            job === 'all' ? 'warn' : 'fail',
            `the config has no masterKey: verify, restore, export and lifecycle apply cannot run with it`,
            'add `masterKey: { file: PATH }` (the age identity file `lethe init` created, mode 0600)',
          ),
        ]
      : [check(id, title, 'ok', `not configured: the ${job} job never reads it`)];
  }
  // A vault with master-key epochs: the current epoch's file is the one jobs read, and the
  // configured file (epoch 1) may have been destroyed on purpose.
  if (vault !== null && needsMasterKey(job)) {
    const epochs = await vault.listMasterEpochs().catch(() => []);
    if (epochs.length > 0) return masterEpochChecks(config, file, epochs, new Date());
  }
  let recipient: string;
  try {
    recipient = (await readMasterKeyFile(file)).recipient;
  } catch (err) {
    const message = describeError(err);
    if (!needsMasterKey(job) && /does not exist/.test(message)) {
      return [check(id, title, 'ok', `${file} is not on this host: the ${job} job never reads it`)];
    }
    return [check(id, title, 'fail', message, fixIn(message, 'fix `masterKey.file` or run `lethe init`, which creates it'))];
  }
  const checks: Check[] = [];
  if (!needsMasterKey(job)) {
    checks.push(
      check(
        id,
        title,
        'warn',
        `${file} is readable here, and the ${job} job never reads the master key`,
        `keep the master key off this host: remove \`masterKey\` from this config and the file (the escrowed copy stays)`,
      ),
    );
  } else {
    checks.push(check(id, title, 'ok', `${file}: owner-only, one age identity`));
  }
  const owner = await ownerCheck(`${id}.owner`, `${title}: owner`, file);
  if (owner !== undefined) checks.push(owner);
  if (vault !== null) {
    try {
      const expected = await vault.getMasterRecipient();
      checks.push(
        expected === recipient
          ? check('masterKey.vault', 'master key: matches the vault', 'ok', `the vault wraps keys to ${recipient}`)
          : check(
              'masterKey.vault',
              'master key: matches the vault',
              'fail',
              `${file} is the key of ${recipient}, but the vault wraps keys to ${expected}`,
              `point \`masterKey.file\` at the vault's master key (public key ${expected})`,
            ),
      );
    } catch (err) {
      checks.push(check('masterKey.vault', 'master key: matches the vault', 'unknown', describeError(err)));
    }
  }
  return checks;
}

async function signingKeyChecks(config: Config, job: DoctorJob, purpose: SigningPurpose, vault: Vault | null): Promise<Check[]> {
  const id = `signingKeys.${purpose}`;
  const title = `${purpose} signing key`;
  const source = config.signingKeys[purpose];
  const needed = SIGNING_NEEDS[job].includes(purpose);
  if (source === undefined) {
    if (!needed) return [];
    return [
      check(
        id,
        title,
        job === 'all' ? 'warn' : 'fail',
        `the config has no signingKeys.${purpose}: the jobs that sign with it cannot run`,
        `add \`signingKeys.${purpose}: { file: ${purpose}-signing.key }\` and run \`lethe init\`, which creates it`,
      ),
    ];
  }
  let key: SigningKey;
  try {
    key = 'file' in source ? await readSigningKeyFile(source.file, `${purpose} signing key file`) : await readConfiguredSigningKey(source, purpose);
  } catch (err) {
    const message = describeError(err);
    if (!needed && 'file' in source && /does not exist/.test(message)) return [];
    return [check(id, title, 'fail', message, fixIn(message, `fix \`signingKeys.${purpose}\` or run \`lethe init\`, which creates the file`))];
  }
  const where = 'file' in source ? source.file : 'from the environment';
  const checks: Check[] = [];
  if (!needed) {
    checks.push(
      check(id, title, 'warn', `${where} is readable here, and the ${job} job does not sign with it`, `remove \`signingKeys.${purpose}\` from this config and keep the key on the hosts that sign`),
    );
  } else {
    checks.push(check(id, title, 'ok', 'file' in source ? `${where}: owner-only` : where));
  }
  if ('file' in source) {
    const owner = await ownerCheck(`${id}.owner`, `${title}: owner`, source.file);
    if (owner !== undefined) checks.push(owner);
  }
  if (vault !== null && needed) {
    const keyId = signingKeyId(key.publicKey);
    try {
      const active = await vault.activeSigningKeyId(purpose);
      checks.push(
        active === keyId
          ? check(`${id}.vault`, `${title}: registered`, 'ok', `the vault's active ${purpose} key (${keyId})`)
          : check(
              `${id}.vault`,
              `${title}: registered`,
              'fail',
              `${keyId} is not the vault's active ${purpose} key${active === null ? ' (it has none)' : ` (${active} is)`}`,
              'run `lethe init` with this config to register it, or configure the current key',
            ),
      );
    } catch (err) {
      checks.push(check(`${id}.vault`, `${title}: registered`, 'unknown', describeError(err)));
    }
  }
  return checks;
}
