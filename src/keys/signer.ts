import type { SecretSource, SigningPurpose } from '../config/index.ts';
import { deriveFromSigningKey, readSigningKeyFile, sign, signingKeyFromPem, signingKeyId, type SigningKey } from '../crypto/index.ts';
import { ErrorCode, LetheError } from '../errors/index.ts';
import type { Vault } from '../vault/index.ts';

/**
 * A job's own signing key, loaded from its config and checked against the vault: the vault
 * must list its public half as the active key for the job's purpose. Signing never needs
 * the vault to hold a secret.
 */
export interface Signer {
  readonly id: string;
  readonly purpose: SigningPurpose;
  /** base64 of the raw Ed25519 public key. */
  readonly publicKey: string;
  /** base64 Ed25519 signature of `message`. */
  sign(message: Uint8Array): string;
  /** A 32-byte secret for another use, derived from this key under the domain tag `label`. */
  derive(label: string): Uint8Array;
}

/** Where the signing key of `purpose` is configured, for messages. */
export function signingKeyField(purpose: SigningPurpose): string {
  return `signingKeys.${purpose}`;
}

/**
 * Reads the signing key a config names (a 0600 PEM file, or a PEM value from `${ENV}`).
 * Throws SIGNING_KEY when none is configured (naming the setting to add) or it cannot be
 * read; never puts the key in a message.
 */
export async function readConfiguredSigningKey(source: SecretSource | undefined, purpose: SigningPurpose): Promise<SigningKey> {
  const field = signingKeyField(purpose);
  if (source === undefined) {
    throw new LetheError(
      ErrorCode.SIGNING_KEY,
      `this job signs with the ${purpose} signing key, but the config has no \`${field}\`: add ` +
        `\`${field}: { file: ${purpose}-signing.key }\` (or \`value: \${ENV_VARIABLE}\`) and run \`lethe init\`, which creates the file`,
    );
  }
  if ('file' in source) return readSigningKeyFile(source.file, `${purpose} signing key file`);
  try {
    return signingKeyFromPem(source.value, `\`${field}.value\``);
  } catch (err) {
    throw new LetheError(ErrorCode.SIGNING_KEY, (err as Error).message);
  }
}

/**
 * A signer for `key` without asking the vault: for the vault restore, which runs before
 * there is a vault to ask (it registers the key in the restored vault itself).
 */
export function signerFromKey(key: SigningKey, purpose: SigningPurpose): Signer {
  return {
    id: signingKeyId(key.publicKey),
    purpose,
    publicKey: key.publicKey,
    sign: (message) => sign(key.privateKey, message),
    derive: (label) => deriveFromSigningKey(key, label),
  };
}

/**
 * The signer for `purpose`: the configured key, once the vault confirms it is the active
 * key for that purpose. Throws SIGNING_KEY when it is not (never registered: run `lethe
 * init`; retired by a rotation: use the new key), VAULT/DATABASE as the vault raises them.
 */
export async function loadSigner(source: SecretSource | undefined, purpose: SigningPurpose, vault: Vault): Promise<Signer> {
  const key = await readConfiguredSigningKey(source, purpose);
  const id = signingKeyId(key.publicKey);
  const active = await vault.activeSigningKeyId(purpose);
  if (active !== id) {
    const known = (await vault.listSigningKeys()).find((k) => k.id === id);
    const where = source !== undefined && 'file' in source ? source.file : `\`${signingKeyField(purpose)}\``;
    const problem =
      known?.retiredAt != null
        ? `was retired on ${known.retiredAt.toISOString()}${active === null ? '' : ` (the active ${purpose} key is ${active})`}: configure the current key`
        : known !== undefined
          ? `is registered as a ${known.purpose} key, not a ${purpose} key: each job needs a key of its own`
          : `is not registered in the vault${active === null ? '' : ` (the active ${purpose} key is ${active})`}: run \`lethe init\` with this config to register it`;
    throw new LetheError(ErrorCode.SIGNING_KEY, `the ${purpose} signing key ${id} in ${where} ${problem}`);
  }
  return signerFromKey(key, purpose);
}
