import type { SnapshotStatus } from '../vault/snapshots.ts';

/**
 * The lifecycle's vocabulary, shared by the planner, apply, holds, deletion requests and the
 * CLI. Plain data only: everything here round-trips through JSON.
 */

/** One selector of a legal hold. Null fields mean "any". */
export interface Hold {
  /** Vault row id (one case may have several selectors). */
  readonly id: number;
  readonly caseId: string;
  readonly tenant: string;
  readonly user: string | null;
  readonly conversation: string | null;
  readonly from: Date | null;
  readonly to: Date | null;
  readonly reason: string;
  readonly placedBy: string;
  readonly placedAt: Date;
  /** Null while active. */
  readonly releasedAt: Date | null;
  readonly releasedBy: string | null;
}

export type EraseScope = 'user' | 'conversation' | 'tenant';

export interface EraseRequest {
  /** `er-` followed by lower-case letters and digits. */
  readonly id: string;
  /**
   * The chat-store tenant; null for a person across every tenant (scope `user` only:
   * `erase request --subject U --all-tenants`), whose tenants are found from the vault's
   * `user:T/U` keys when it is requested and again when it is executed.
   */
  readonly tenant: string | null;
  readonly scope: EraseScope;
  /** The user or conversation id; null for a whole tenant. */
  readonly subject: string | null;
  readonly reason: string;
  readonly requestedBy: string;
  readonly requestedAt: Date;
  readonly status: 'pending' | 'approved' | 'executed';
  readonly approvedBy: string | null;
  readonly approvedAt: Date | null;
  readonly executedAt: Date | null;
}

/** Why a dimension key was (or is to be) destroyed; stored with the destruction record. */
export type DestructionCause =
  | {
      readonly kind: 'retention';
      readonly class: string;
      readonly period: string;
      /** The rule as written in the config, e.g. `365d`. */
      readonly maxAge: string;
      /** ISO-8601 instant from which the period was past retention. */
      readonly dueSince: string;
    }
  | { readonly kind: 'erasure'; readonly request: string; readonly scope: EraseScope }
  | { readonly kind: 'hold-release'; readonly case: string };

/** A destroyed dimension key's record, as verify reports it next to a shredded cell. */
export interface DestructionRecord {
  readonly keyId: string;
  readonly destroyedAt: Date;
  readonly actor: string;
  readonly reason: string;
  readonly cause: DestructionCause;
  readonly auditSeq: number;
}

/** The tuple facts of a cell key that holds and retention decide on. */
export interface CellKeyFacts {
  readonly id: string;
  readonly tenant: string | null;
  readonly class: string;
  /** Period label, or `-` for rows without a timestamp. */
  readonly period: string | null;
  /** The subjects' canonical text (src/mapping/subjects.ts); read the ids with subjectsOf. */
  readonly author: string | null;
  readonly conversation: string | null;
  /** Innermost first, as wrapped. */
  readonly dimensionIds: readonly string[];
}

/** Cells of complete snapshots using a cell key. */
export interface CellKeyUsage {
  /** Cell rows (one per table, per snapshot). */
  readonly cells: number;
  readonly bytesPlain: number;
  /** Complete snapshots holding at least one cell of this key. */
  readonly snapshots: number;
}

/** A cell key re-wrapped for a case (a `held_cell_keys` row, without the wrapped bytes). */
export interface HeldCellKeyFacts {
  readonly caseId: string;
  readonly keyId: string;
  /** Innermost first; the case key takes the destroyed key's place. */
  readonly dimensionIds: readonly string[];
}

/** What destroying one dimension key makes unreadable, as the vault counted it. */
export interface KeyUsage {
  readonly keyId: string;
  readonly cellKeys: number;
  readonly cells: number;
  readonly bytesPlain: number;
  /** The largest number of complete snapshots one affected cell key appears in. */
  readonly snapshots: number;
}

/** A snapshot as lifecycle planning sees it, in any status. */
export interface SnapshotFacts {
  readonly id: string;
  readonly status: SnapshotStatus;
  readonly startedAt: Date;
  readonly completedAt: Date | null;
  readonly manifestKey: string | null;
}
