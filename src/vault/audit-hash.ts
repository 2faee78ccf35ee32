import { createHash } from 'node:crypto';
import { canonicalJson, type JsonObject } from './canonical-json.ts';

/** `prevHash` of the first entry: there is nothing before it. */
export const GENESIS_HASH = '0'.repeat(64);

/** What a caller records; the vault adds `seq`, `at` and the chain hashes. */
export interface AuditInput {
  /** Who: a job name, an operator, `lethe daemon@host`. */
  readonly actor: string;
  /** What, as a stable dotted verb: `backup.complete`, `key.destroy`, `hold.place`. */
  readonly action: string;
  /** The thing acted on: a snapshot id, a key id, a case id. */
  readonly subject: string;
  /** Structured facts; never secret values. Stored as JSON (see canonicalJson). */
  readonly details?: Readonly<Record<string, unknown>>;
}

/** One entry of the hash-chained audit log. */
export interface AuditEntry {
  readonly seq: number;
  /** Millisecond precision, so it survives timestamptz and Date round trips exactly. */
  readonly at: Date;
  readonly actor: string;
  readonly action: string;
  readonly subject: string;
  readonly details: JsonObject;
  /** `hash` of entry `seq - 1`, or {@link GENESIS_HASH} for seq 1. */
  readonly prevHash: string;
  readonly hash: string;
}

/**
 * The hash an entry must carry: lower-case hex SHA-256 of the canonical JSON of
 * `{seq, at (ISO 8601), actor, action, subject, details, prevHash}`. Pure, so an auditor
 * can recompute it from an exported entry with any JSON library that sorts keys.
 */
export function auditEntryHash(entry: Omit<AuditEntry, 'hash'>): string {
  const body = canonicalJson({
    seq: entry.seq,
    at: entry.at.toISOString(),
    actor: entry.actor,
    action: entry.action,
    subject: entry.subject,
    details: entry.details,
    prevHash: entry.prevHash,
  });
  return createHash('sha256').update(body, 'utf8').digest('hex');
}
