import type { ObjectLock, ObjectStore } from '../storage/index.ts';
import type { Vault } from '../vault/index.ts';

/** Object key of an audit entry: zero-padded so keys sort in chain order. */
export function auditObjectKey(seq: number): string {
  return `audit/${String(seq).padStart(12, '0')}.json`;
}

/**
 * Copies audit entries not yet in the bucket to `audit/<seq>.json` (WORM when a lock is
 * given), so the chain outlives the vault and an auditor can read it with bucket access
 * alone. Jobs whose credentials cannot write the bucket (verify, restore) only append to
 * the vault; the next job that can write (backup) exports what they recorded.
 * Returns how many entries were written.
 */
export async function exportAudit(vault: Vault, store: ObjectStore, lock?: ObjectLock): Promise<number> {
  let written = 0;
  let last = await vault.auditExportedSeq();
  for await (const entry of vault.iterateAudit(last + 1)) {
    await store.put(auditObjectKey(entry.seq), Buffer.from(`${JSON.stringify(entry)}\n`, 'utf8'), lock === undefined ? {} : { lock });
    last = entry.seq;
    written += 1;
    if (written % 100 === 0) await vault.setAuditExportedSeq(last);
  }
  if (written > 0) await vault.setAuditExportedSeq(last);
  return written;
}
