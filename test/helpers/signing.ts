import { generateSigningKey } from '../../src/crypto/index.ts';
import { signerFromKey, type Signer } from '../../src/keys/index.ts';
import type { Vault } from '../../src/vault/index.ts';

/**
 * A fresh Ed25519 signer for `purpose`, registered in `vault` as the active key for it (what
 * `lethe init` does with a configured key file), for tests that call the domain directly.
 */
export async function registeredSigner(vault: Vault, purpose: 'backup' | 'lifecycle'): Promise<Signer> {
  const key = generateSigningKey();
  const signer = signerFromKey(key, purpose);
  await vault.registerSigningKey({ id: signer.id, purpose, publicKey: key.publicKey });
  return signer;
}
