import { ErrorCode, LetheError } from '../errors/index.ts';
import type { Vault } from '../vault/index.ts';

/**
 * A per-run lookup of tenants' digest (MAC) keys, each read from the vault once
 * (`''` stands for system cells). Throws VAULT for a tenant with no digest key.
 */
export function digestKeyLookup(vault: Vault): (tenant: string | null) => Promise<Uint8Array> {
  const cache = new Map<string, Uint8Array>();
  return async (tenant) => {
    const name = tenant ?? '';
    let key = cache.get(name);
    if (key === undefined) {
      key = (await vault.getDigestKeys([name])).get(name);
      if (key === undefined) throw new LetheError(ErrorCode.VAULT, `the vault has no digest key for tenant "${name}"`);
      cache.set(name, key);
    }
    return key;
  };
}
