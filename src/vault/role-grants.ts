/**
 * Who may do what in the vault: one PostgreSQL role per job, and per table (and where it
 * matters per column) the privileges each role gets. `lethe init --roles` turns this table
 * into GRANTs (roles.ts); nothing else grants anything, so this file is the whole policy.
 *
 * Kept beside migrations.ts on purpose: a migration that adds a table must add its row here
 * (test/integration/vault/roles.test.ts fails otherwise, and until then no job role can touch
 * the new table: the vault fails closed). Every entry below was derived from the queries in
 * src/vault/*.ts and from which job calls them (src/snapshot, src/restore, src/lifecycle,
 * src/vaultbackup, src/audit), and is exercised by running those jobs as their roles.
 *
 * The rules the table must obey are code, not prose: {@link grantRuleViolations} checks them,
 * and the SQL generator refuses a table that breaks one.
 */

/** The job roles, each a PostgreSQL role named `<prefix>_<job>`. */
export const VAULT_JOB_ROLES = ['backup', 'verify', 'lifecycle'] as const;
export type VaultJobRole = (typeof VAULT_JOB_ROLES)[number];

/**
 * Every role `lethe init --roles` manages: the job roles, `owner` (owns the schema and runs
 * `lethe init`, i.e. the migrations) and `daemon` (no privileges of its own: a member of the
 * three job roles, for `lethe daemon`, which runs every job).
 */
export const VAULT_ROLES = ['owner', ...VAULT_JOB_ROLES, 'daemon'] as const;
export type VaultRole = (typeof VAULT_ROLES)[number];

/** What each role is for, as printed by `lethe init --roles` and the docs. */
export const VAULT_ROLE_PURPOSE: Readonly<Record<VaultRole, string>> = {
  owner: 'owns the vault schema; runs `lethe init` (migrations) once the roles exist',
  backup: '`lethe backup` (also --coordinate / --shard)',
  verify: '`lethe verify`, `lethe restore`, `lethe export --case`, `lethe keys export`',
  lifecycle: '`lethe lifecycle plan|apply`, `lethe hold`, `lethe erase`, `lethe vault backup`, `lethe report`, `lethe keys rotate-master`',
  daemon: '`lethe daemon` (member of the backup, verify and lifecycle roles)',
};

/** Columns a privilege covers: the whole table, or only the columns listed. */
export type Columns = 'all' | readonly string[];

/** One role's privileges on one table or view. */
export interface Access {
  readonly select?: Columns;
  readonly insert?: Columns;
  readonly update?: Columns;
  readonly delete?: true;
}

/**
 * What a table holds, for the rules: `key` tables hold key material or what a key is derived
 * from (UPDATE or DELETE there destroys keys); `decision` tables hold legal holds, deletion
 * requests and destruction records (what lifecycle decides and proves); `log` is the
 * append-only audit chain; `record` is everything else.
 */
export type TableClass = 'key' | 'decision' | 'log' | 'record';

/** A row-level security policy (only `meta` has them): a role may touch only some rows. */
export interface RowPolicy {
  /** Suffix of the policy's name, `<prefix>_<name>`. */
  readonly name: string;
  readonly command: 'SELECT' | 'INSERT' | 'UPDATE';
  readonly roles: readonly VaultJobRole[];
  /** SQL condition on existing rows (SELECT, UPDATE). */
  readonly using?: string;
  /** SQL condition on new rows (INSERT, UPDATE). */
  readonly check?: string;
}

export interface VaultObject {
  readonly kind: 'table' | 'view';
  /** The vault migration that first created it; a vault below that version does not have it yet. */
  readonly since: number;
  readonly class: TableClass;
  /**
   * Columns holding a secret (a wrapped private key, a sealed tuple key). The backup role
   * may read none of them.
   */
  readonly secretColumns?: readonly string[];
  /**
   * `lifecycle` for the tables lifecycle rewrites with VACUUM FULL after a shred, so no dead
   * row keeps a destroyed key on disk: before PostgreSQL 17 only a table's owner may VACUUM
   * it. Everything else is owned by the owner role.
   */
  readonly ownedBy?: 'lifecycle';
  readonly access: Readonly<Partial<Record<VaultJobRole, Access>>>;
  /** Sequences its columns draw from, and the roles that insert (so call nextval). */
  readonly sequences?: Readonly<Record<string, readonly VaultJobRole[]>>;
  readonly policies?: readonly RowPolicy[];
  /**
   * Columns a later migration added to this table, with that migration: their column grants
   * are made only once the column exists, so an older vault still gets the rest.
   */
  readonly columnsSince?: Readonly<Record<string, number>>;
  /** Why the roles get what they get, for the reader of this table. */
  readonly why: string;
}

const READ: Access = { select: 'all' };
const READ_APPEND: Access = { select: 'all', insert: 'all' };

/** The audit export position: the only `meta` row a job writes. */
const AUDIT_MARK = "key = 'audit_exported_seq'";

/**
 * The grant table: vault object → role → privileges. A role absent from an object's
 * `access` gets nothing on it.
 */
export const VAULT_GRANTS: Readonly<Record<string, VaultObject>> = {
  migrations: {
    kind: 'table',
    since: 1,
    class: 'record',
    access: { backup: READ, verify: READ, lifecycle: READ },
    why: 'every job checks the schema version when it opens the vault',
  },
  meta: {
    kind: 'table',
    since: 1,
    class: 'record',
    access: {
      backup: { select: 'all', insert: ['key', 'value'], update: ['value'] },
      verify: READ,
      lifecycle: READ,
    },
    policies: [
      { name: 'meta_read', command: 'SELECT', roles: ['backup', 'verify', 'lifecycle'], using: 'true' },
      { name: 'meta_audit_mark_insert', command: 'INSERT', roles: ['backup'], check: AUDIT_MARK },
      { name: 'meta_audit_mark_update', command: 'UPDATE', roles: ['backup'], using: AUDIT_MARK, check: AUDIT_MARK },
    ],
    why:
      'format version and master recipient for all; the backup moves the audit export position ' +
      '(audit_exported_seq) and, by row policy, no other row: it cannot replace the master recipient',
  },
  dimension_keys: {
    kind: 'table',
    since: 1,
    class: 'key',
    secretColumns: ['wrapped_identity'],
    ownedBy: 'lifecycle',
    access: {
      backup: {
        select: ['id', 'kind', 'tenant', 'recipient', 'destroyed_at', 'master_epoch', 'mlkem_public'],
        insert: ['id', 'kind', 'tenant', 'recipient', 'wrapped_identity', 'master_epoch', 'mlkem_public'],
      },
      verify: READ,
      lifecycle: { select: 'all', insert: 'all', update: ['wrapped_identity', 'destroyed_at', 'master_epoch'] },
    },
    columnsSince: { master_epoch: 11, mlkem_public: 12 },
    why:
      'the backup reads public recipients and creates missing keys (wrapped to the KEK) but never reads a ' +
      'wrapped identity; verify and restore unwrap them; only lifecycle destroys one (wrapped_identity = NULL)',
  },
  master_epochs: {
    kind: 'table',
    since: 11,
    class: 'key',
    access: {
      backup: READ,
      verify: READ,
      lifecycle: { select: 'all', insert: 'all', update: ['retired_at', 'destroyed_at', 'reason'] },
    },
    why:
      'public facts only (epoch, provider, reference, recipient): the backup wraps new keys to the current epoch; ' +
      'verify and restore pick the master key of a wrap\'s epoch; lifecycle (apply, keys rotate-master) opens, retires and destroys epochs',
  },
  cell_keys: {
    kind: 'table',
    since: 1,
    class: 'key',
    access: { backup: READ_APPEND, verify: READ, lifecycle: READ },
    why: 'tuple facts (which dimension keys a cell needs), no key material; the backup records new tuples',
  },
  signing_keys: {
    kind: 'table',
    since: 1,
    class: 'record',
    access: { backup: READ, verify: READ, lifecycle: READ },
    why: 'public halves only; registering one is `lethe init` (the owner)',
  },
  snapshots: {
    kind: 'table',
    since: 1,
    class: 'record',
    access: {
      backup: {
        select: 'all',
        insert: ['id', 'previous_id', 'run_owner', 'store'],
        update: ['status', 'completed_at', 'manifest_key', 'manifest_sha256', 'stats'],
      },
      verify: READ,
      lifecycle: { select: 'all', update: ['status', 'expired_at'] },
    },
    sequences: { snapshot_seq: ['backup'] },
    why: 'the backup begins, completes and abandons runs; lifecycle expires snapshots; verify reads',
  },
  verifications: {
    kind: 'table',
    since: 1,
    class: 'record',
    access: { verify: READ_APPEND, lifecycle: READ },
    sequences: { verifications_id_seq: ['verify'] },
    why: 'verify records each drill',
  },
  audit_log: {
    kind: 'table',
    since: 1,
    class: 'log',
    access: { backup: READ_APPEND, verify: READ_APPEND, lifecycle: READ_APPEND },
    why: 'every job appends (and reads the head to chain to); nobody updates or deletes, and the trigger refuses it even for the owner',
  },
  destructions: {
    kind: 'table',
    since: 3,
    class: 'decision',
    access: { verify: READ, lifecycle: READ_APPEND },
    why: 'lifecycle records each destroyed key; verify reads them to account for shredded cells',
  },
  holds: {
    kind: 'table',
    since: 3,
    class: 'decision',
    // Table-level UPDATE: approving an erasure locks holds (LOCK ... IN SHARE MODE), which
    // PostgreSQL allows only with table-level UPDATE, DELETE or TRUNCATE.
    access: { verify: READ, lifecycle: { select: 'all', insert: 'all', update: 'all' } },
    sequences: { holds_id_seq: ['lifecycle'] },
    why: 'lifecycle places and releases holds; verify reads them for `export --case`',
  },
  held_cell_keys: {
    kind: 'table',
    since: 3,
    class: 'key',
    secretColumns: ['wrapped'],
    ownedBy: 'lifecycle',
    access: { verify: READ, lifecycle: { select: 'all', insert: 'all', delete: true } },
    why: 'sealed tuple keys of held cells: lifecycle re-wraps and deletes them, verify reads them; the backup sees none',
  },
  erase_requests: {
    kind: 'table',
    since: 3,
    class: 'decision',
    access: {
      lifecycle: {
        select: 'all',
        insert: 'all',
        update: [
          'status',
          'approved_by',
          'approved_at',
          'executed_at',
          'certificate',
          'approved_key',
          'approval_statement',
          'approval_signature',
        ],
      },
    },
    columnsSince: { approved_key: 9, approval_statement: 9, approval_signature: 9 },
    why: 'deletion requests are lifecycle\'s alone',
  },
  store_objects: {
    kind: 'table',
    since: 4,
    class: 'record',
    // SELECT for the backup: INSERT ... ON CONFLICT (store, key) needs it on the key columns.
    access: { backup: READ_APPEND, lifecycle: { select: 'all', insert: 'all', delete: true } },
    why: 'the backup records what it writes; lifecycle records vault backups and forgets what it deleted',
  },
  encapsulations: {
    kind: 'table',
    since: 5,
    class: 'key',
    access: { backup: READ_APPEND, verify: READ, lifecycle: READ_APPEND },
    why: 'public ephemeral keys: the backup adds one per snapshot and tenant, lifecycle one per hold re-wrap',
  },
  encapsulation_ciphertexts: {
    kind: 'table',
    since: 12,
    class: 'key',
    access: { backup: READ_APPEND, verify: READ, lifecycle: READ_APPEND },
    why: 'public ML-KEM ciphertexts of post-quantum encapsulations: added with them by the backup and the hold re-wrap',
  },
  cell_copies: {
    kind: 'table',
    since: 6,
    class: 'record',
    ownedBy: 'lifecycle',
    access: {
      backup: { select: 'all', insert: 'all', update: ['superseding', 'to_seq', 'fingerprint'], delete: true },
      verify: READ,
      lifecycle: { select: 'all', update: ['digest', 'fingerprint'], delete: true },
    },
    sequences: { cell_copies_id_seq: ['backup'] },
    why:
      'the cell index: the backup adds copies, supersedes old ones and forgets its abandoned runs; lifecycle ' +
      'deletes the digests of shredded cells (then VACUUM FULL) and prunes dead copies',
  },
  segments: {
    kind: 'table',
    since: 6,
    class: 'record',
    access: {
      backup: { select: 'all', insert: 'all', update: ['superseding', 'to_seq', 'fingerprint'], delete: true },
      verify: READ,
      lifecycle: { select: 'all', update: ['fingerprint'], delete: true },
    },
    why: 'as cell_copies, per segment object',
  },
  snapshot_cells: {
    kind: 'view',
    // A table until migration 6 made it a view; the same grants serve both.
    since: 1,
    class: 'record',
    access: { backup: READ, verify: READ, lifecycle: READ },
    why: 'the cells a snapshot holds (a view over cell_copies and snapshots, read with its owner\'s rights)',
  },
  backup_shards: {
    kind: 'table',
    since: 7,
    class: 'record',
    access: {
      backup: { select: 'all', insert: 'all', update: ['status', 'owner', 'claimed_at', 'finished_at', 'result', 'error'] },
      lifecycle: READ,
    },
    why: 'the coordinator and workers of a sharded backup',
  },
  approvers: {
    kind: 'table',
    since: 9,
    class: 'decision',
    access: {
      verify: READ,
      lifecycle: {
        select: 'all',
        insert: 'all',
        update: ['revoked_at', 'revoked_by', 'revoke_statement', 'revoke_signature'],
      },
    },
    why:
      'the SSH keys of the people who request, approve, place and release: lifecycle enrols (with an enrolled ' +
      'person\'s signature) and revokes; an enrolment is never rewritten, only revoked; verify reads them for reports',
  },
  daemon_runs: {
    kind: 'table',
    since: 8,
    class: 'record',
    access: {
      backup: { select: 'all', insert: 'all', update: 'all', delete: true },
      verify: { select: 'all', insert: 'all', update: 'all', delete: true },
      lifecycle: { select: 'all', insert: 'all', update: 'all', delete: true },
    },
    why: 'each scheduled slot of `lethe daemon`, claimed, finished or given back unrun by whichever job role runs it',
  },
};

/** Functions in the vault schema: owned by the owner role, executable by nobody else. */
export const VAULT_FUNCTIONS: readonly { readonly signature: string; readonly since: number; readonly why: string }[] = [
  {
    signature: 'audit_log_append_only()',
    since: 1,
    why: 'the audit log\'s trigger function; a trigger runs it without EXECUTE, so PUBLIC loses EXECUTE',
  },
];

/** True when `access` lets the role write (insert, update or delete) anything. */
function writes(access: Access | undefined): boolean {
  return access !== undefined && (access.insert !== undefined || access.update !== undefined || access.delete === true);
}

function reads(columns: Columns | undefined, column: string): boolean {
  return columns === 'all' || (columns !== undefined && columns.includes(column));
}

/**
 * The rules of least privilege the grant table must obey; returns one line per breach ([]
 * when it obeys them all):
 * - the backup role reads no secret column (no wrapped identity, no sealed tuple key);
 * - only lifecycle updates or deletes in key tables (destroys keys) or owns them;
 * - only lifecycle writes decisions (holds, deletion requests, destruction records);
 * - nobody updates or deletes the audit log.
 */
export function grantRuleViolations(grants: Readonly<Record<string, VaultObject>> = VAULT_GRANTS): string[] {
  const out: string[] = [];
  for (const [name, object] of Object.entries(grants)) {
    const backup = object.access.backup;
    for (const column of object.secretColumns ?? []) {
      if (reads(backup?.select, column)) out.push(`${name}: the backup role may read the secret column ${column}`);
    }
    for (const role of VAULT_JOB_ROLES) {
      const access = object.access[role];
      if (object.class === 'key' && role !== 'lifecycle' && (access?.update !== undefined || access?.delete === true)) {
        out.push(`${name}: the ${role} role may update or delete in a key table`);
      }
      if (object.class === 'decision' && role !== 'lifecycle' && writes(access)) {
        out.push(`${name}: the ${role} role may write a decision table`);
      }
      if (object.class === 'log' && (access?.update !== undefined || access?.delete === true)) {
        out.push(`${name}: the ${role} role may update or delete the audit log`);
      }
    }
  }
  return out;
}
