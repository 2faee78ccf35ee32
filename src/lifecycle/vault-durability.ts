import type { Logger } from '../log/index.ts';
import type { DurabilityFinding } from '../vault/index.ts';

/**
 * Logs each finding of Vault.inspectDurability at warn level, with its code and facts, after
 * keys were destroyed: copies of the vault database's WAL outside lethe may still hold them.
 */
export function logVaultDurability(log: Logger, findings: readonly DurabilityFinding[]): void {
  for (const f of findings) log.warn({ finding: f.code, details: f.details, alsoInResult: true }, `vault database durability: ${f.message}`);
}
