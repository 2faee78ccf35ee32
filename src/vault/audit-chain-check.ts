import { GENESIS_HASH, auditEntryHash, type AuditEntry } from './audit-hash.ts';

/** One break in the audit chain. */
export interface AuditFinding {
  /** The entry the problem is seen at (for a gap, the first missing seq). */
  readonly seq: number;
  readonly problem: string;
}

/**
 * A (seq, hash) pair known from outside the vault: an entry exported to the bucket, or the
 * chain position printed on a destruction certificate. Anchors catch what the chain alone
 * cannot: the newest entries deleted, or the whole chain rewritten from some point on.
 */
export interface AuditAnchor {
  readonly seq: number;
  readonly hash: string;
}

/** The outcome of walking the chain: every finding, not just the first. */
export interface AuditChainReport {
  readonly ok: boolean;
  /** Entries read. */
  readonly entries: number;
  readonly findings: AuditFinding[];
  /** The last entry read, to anchor the next check; null for an empty log. */
  readonly head: AuditAnchor | null;
}

/**
 * Checks a stream of audit entries, fed in ascending seq order, one at a time, so the
 * whole log is never in memory. Pure: no I/O, which keeps it testable without a database.
 *
 * Each entry is compared with its predecessor as *stored*, so one modified entry is one
 * finding (its own hash), not a cascade; a re-hashed entry shows at the next link; a
 * deleted entry shows as a seq gap; swapped entries show as hash and link mismatches.
 */
export class AuditChainChecker {
  readonly #anchors: Map<number, string>;
  readonly #findings: AuditFinding[] = [];
  #expectedSeq = 1;
  #prevHash = GENESIS_HASH;
  #entries = 0;
  #head: AuditAnchor | null = null;

  constructor(anchors: readonly AuditAnchor[] = []) {
    this.#anchors = new Map(anchors.map((a) => [a.seq, a.hash]));
  }

  /** Checks the next entry. */
  add(entry: AuditEntry): void {
    this.#entries++;
    const { seq } = entry;
    if (seq < this.#expectedSeq) {
      this.#find(seq, `out of order: seq ${seq} comes after seq ${this.#expectedSeq - 1}`);
    } else if (seq > this.#expectedSeq) {
      const range =
        seq - 1 === this.#expectedSeq
          ? `entry ${this.#expectedSeq} is`
          : `entries ${this.#expectedSeq}..${seq - 1} are`;
      this.#find(this.#expectedSeq, `${range} missing (deleted?): seq jumps to ${seq}`);
    } else if (entry.prevHash !== this.#prevHash) {
      this.#find(
        seq,
        seq === 1
          ? 'prev_hash of the first entry is not the genesis hash (entries before it removed?)'
          : `prev_hash does not match the hash of entry ${seq - 1}: entries were replaced, reordered or re-hashed`,
      );
    }
    if (auditEntryHash(entry) !== entry.hash) {
      this.#find(seq, 'hash does not match the entry: the entry was modified after it was written');
    }
    const anchored = this.#anchors.get(seq);
    if (anchored !== undefined && anchored !== entry.hash) {
      this.#find(seq, `hash differs from the anchored hash ${anchored}: the chain was rewritten`);
    }
    this.#prevHash = entry.hash;
    this.#expectedSeq = Math.max(this.#expectedSeq, seq + 1);
    this.#head = { seq, hash: entry.hash };
  }

  /** The report so far; anchors past the last entry read are findings (log truncated). */
  finish(): AuditChainReport {
    const truncated = [...this.#anchors.keys()]
      .filter((seq) => seq >= this.#expectedSeq)
      .sort((a, b) => a - b)
      .map((seq) => ({
        seq,
        problem: `anchored entry ${seq} is missing: the log ends at ${this.#expectedSeq - 1} (truncated?)`,
      }));
    const findings = [...this.#findings, ...truncated];
    return { ok: findings.length === 0, entries: this.#entries, findings, head: this.#head };
  }

  #find(seq: number, problem: string): void {
    this.#findings.push({ seq, problem });
  }
}
