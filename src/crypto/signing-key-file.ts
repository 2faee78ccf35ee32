import { ErrorCode } from '../errors/index.ts';
import { createOwnerOnlyFile, readOwnerOnlyFile } from './private-file.ts';
import { generateSigningKey, publicKeyToPem, signingKeyFromPem, signingKeyToPem, type SigningKey } from './signing.ts';

/**
 * Creates a new Ed25519 signing key file at `path` (PKCS#8 PEM, mode 0600, exclusive, synced)
 * and returns the key. `label` names it in messages ("backup signing key file"). Throws
 * LetheError(SIGNING_KEY) when `path` exists (a key file is never overwritten) or cannot be
 * written.
 */
export async function writeSigningKeyFile(path: string, label: string): Promise<SigningKey> {
  const key = generateSigningKey();
  await createOwnerOnlyFile(path, signingKeyToPem(key), ErrorCode.SIGNING_KEY, label);
  return key;
}

/**
 * Reads an Ed25519 signing key from a PKCS#8 PEM file that only its owner can access. Throws
 * LetheError(SIGNING_KEY) naming the file and the fix; never its content.
 */
export async function readSigningKeyFile(path: string, label: string): Promise<SigningKey> {
  const text = await readOwnerOnlyFile(path, ErrorCode.SIGNING_KEY, label);
  return signingKeyFromPem(text, `${label} ${path}`);
}

/** The public half of `key` as the PEM text lethe writes beside a new key file (`<file>.pub`). */
export function publicKeyFileText(key: SigningKey): string {
  return publicKeyToPem(key.publicKey);
}
