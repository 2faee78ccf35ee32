import type { DurabilityFinding } from '../vault/index.ts';

/**
 * Prints Vault.inspectDurability findings for a person, on stderr (stdout stays the command's
 * output), each labelled with its code; nothing when there are none. Commands call it, without
 * `--json`, after keys were destroyed; `--json` output carries the findings as `vaultDurability`.
 */
export function printVaultDurabilityWarnings(
  findings: readonly DurabilityFinding[],
  write: (text: string) => void = (text) => process.stderr.write(text),
): void {
  if (findings.length === 0) return;
  write(
    "lethe: WARNING: the destroyed keys may survive in the vault database's own copies, outside lethe; " +
      'the shred is final only when these have expired (runbooks/deletion-request.md, "What is guaranteed"):\n',
  );
  for (const f of findings) write(`lethe: warning [${f.code}]: ${f.message}\n`);
}
