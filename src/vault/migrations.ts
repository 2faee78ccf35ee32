/**
 * The vault's schema, as an ordered list of migrations. Each runs once, in the migration
 * transaction, with `search_path` set to the vault schema (so the SQL is unqualified).
 *
 * Never edit a migration that has shipped: add a new one. `format_version` in `meta` is a
 * different thing: it changes only when the meaning of stored bytes changes (for example
 * the wrapping scheme), which needs a data migration, not just DDL.
 */
export interface Migration {
  readonly version: number;
  readonly name: string;
  readonly sql: string;
}

const initial = `
-- Small facts about this vault: format version, master key recipient, creation time.
CREATE TABLE meta (
  key   text PRIMARY KEY,
  value jsonb NOT NULL
);
INSERT INTO meta (key, value) VALUES
  ('format_version', '1'::jsonb),
  ('created_at', to_jsonb(now()));

-- One row per shred key. The identity is age-encrypted to the master key (KEK); it is set
-- to NULL when the key is destroyed, and that is the crypto-shred.
CREATE TABLE dimension_keys (
  id               text PRIMARY KEY,
  kind             text NOT NULL
                   CHECK (kind IN ('tenant', 'user', 'conversation', 'period', 'case', 'system')),
  tenant           text,
  recipient        text NOT NULL UNIQUE,
  wrapped_identity bytea,
  created_at       timestamptz NOT NULL DEFAULT now(),
  destroyed_at     timestamptz,
  -- 'user:T/U' must be a user key: a key filed under the wrong kind would be shredded
  -- (or kept) by the wrong rule.
  CONSTRAINT dimension_keys_id_names_kind CHECK (id = kind OR starts_with(id, kind || ':')),
  CONSTRAINT dimension_keys_tenant_unless_system CHECK ((kind = 'system') = (tenant IS NULL)),
  CONSTRAINT dimension_keys_destroyed_means_no_identity
    CHECK ((wrapped_identity IS NULL) = (destroyed_at IS NOT NULL))
);

-- One row per cell tuple. The identity is AND-wrapped: nested age, innermost dimension key
-- first, so that destroying any one of dimension_ids makes it unreadable.
CREATE TABLE cell_keys (
  id               text PRIMARY KEY,
  tenant           text,
  data_class       text NOT NULL,
  period           text,
  author           text,
  dimension_ids    text[] NOT NULL CHECK (cardinality(dimension_ids) > 0),
  recipient        text NOT NULL UNIQUE,
  wrapped_identity bytea NOT NULL,
  created_at       timestamptz NOT NULL DEFAULT now()
);
-- Lifecycle asks "which cells need dimension key X" for holds and certificates.
CREATE INDEX cell_keys_by_dimension ON cell_keys USING gin (dimension_ids);

-- Per-tenant MAC keys for the keyed digests that detect unchanged cells ('' = system).
-- Secret, though they open nothing.
CREATE TABLE digest_keys (
  tenant     text PRIMARY KEY,
  key        bytea NOT NULL CHECK (length(key) >= 16),
  created_at timestamptz NOT NULL DEFAULT now()
);

-- Manifest signing keys. Retired keys stay, so old manifests still verify.
CREATE TABLE signing_keys (
  id          text PRIMARY KEY,
  public_key  text NOT NULL UNIQUE,
  private_key bytea NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT now(),
  retired_at  timestamptz
);
-- At most one active key, so two first runs converge on one instead of signing with two.
CREATE UNIQUE INDEX signing_keys_one_active ON signing_keys ((true)) WHERE retired_at IS NULL;

CREATE TABLE snapshots (
  id              text PRIMARY KEY CHECK (id <> '' AND id <> 'latest'),
  status          text NOT NULL DEFAULT 'running'
                  CHECK (status IN ('running', 'complete', 'abandoned')),
  started_at      timestamptz NOT NULL DEFAULT now(),
  completed_at    timestamptz,
  previous_id     text REFERENCES snapshots (id) ON DELETE SET NULL,
  manifest_key    text,
  manifest_sha256 text,
  run_owner       text NOT NULL,
  stats           jsonb,
  CONSTRAINT snapshots_complete_has_manifest CHECK (
    status <> 'complete' OR (completed_at IS NOT NULL AND manifest_key IS NOT NULL
                             AND manifest_sha256 IS NOT NULL AND stats IS NOT NULL))
);
CREATE INDEX snapshots_newest_first ON snapshots (started_at DESC, id DESC);

-- The cell index: the backup reads the previous snapshot's rows (not the bucket) to find
-- unchanged cells; restore and verify read it in pack order.
CREATE TABLE snapshot_cells (
  snapshot_id text NOT NULL REFERENCES snapshots (id) ON DELETE CASCADE,
  table_name  text NOT NULL,
  cell_id     text NOT NULL,
  tenant      text,
  data_class  text NOT NULL,
  period      text,
  author      text,
  key_id      text NOT NULL REFERENCES cell_keys (id),
  pack        text NOT NULL,
  pack_offset bigint NOT NULL CHECK (pack_offset >= 0),
  pack_length bigint NOT NULL CHECK (pack_length > 0),
  sha256      text NOT NULL,
  digest      text NOT NULL,
  row_count   bigint NOT NULL CHECK (row_count >= 0),
  bytes_plain bigint NOT NULL CHECK (bytes_plain >= 0),
  reused      boolean NOT NULL,
  PRIMARY KEY (snapshot_id, table_name, cell_id)
);
-- Keyset pagination in pack order (ranged GETs walk each pack front to back).
CREATE INDEX snapshot_cells_pack_order
  ON snapshot_cells (snapshot_id, pack, pack_offset, table_name, cell_id);
-- Lifecycle: "does any snapshot still reference pack P", "which cells use key K".
CREATE INDEX snapshot_cells_by_pack ON snapshot_cells (pack);
CREATE INDEX snapshot_cells_by_key ON snapshot_cells (key_id);

CREATE TABLE verifications (
  id          bigserial PRIMARY KEY,
  snapshot_id text NOT NULL REFERENCES snapshots (id) ON DELETE CASCADE,
  started_at  timestamptz NOT NULL,
  duration_ms bigint NOT NULL CHECK (duration_ms >= 0),
  ok          boolean NOT NULL,
  result      jsonb NOT NULL
);
CREATE INDEX verifications_latest ON verifications (snapshot_id, started_at DESC, id DESC);

-- Hash-chained, append-only. The trigger stops accidents and casual edits; the chain is
-- what catches an owner who disables it.
CREATE TABLE audit_log (
  seq       bigint PRIMARY KEY CHECK (seq >= 1),
  at        timestamptz NOT NULL,
  actor     text NOT NULL,
  action    text NOT NULL,
  subject   text NOT NULL,
  details   jsonb NOT NULL,
  prev_hash text NOT NULL CHECK (prev_hash ~ '^[0-9a-f]{64}$'),
  hash      text NOT NULL CHECK (hash ~ '^[0-9a-f]{64}$')
);
CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'audit_log is append-only (% refused)', TG_OP;
END
$$;
CREATE TRIGGER audit_log_no_update_delete BEFORE UPDATE OR DELETE ON audit_log
  FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
  FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();
`;

const keyFiles = `
-- Cell keys are also stored in the bucket, in key files (keys/<snapshot>.ndjson) written by
-- the backup that first needs them in that store, so a snapshot can be read without the
-- vault's cell keys. Per store: after a switch of bucket or backend, the new store gets
-- its own key files.
CREATE TABLE key_files (
  store       text NOT NULL,
  key         text NOT NULL,
  sha256      text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
  snapshot_id text NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (store, key)
);
CREATE TABLE key_file_entries (
  store    text NOT NULL,
  key_id   text NOT NULL REFERENCES cell_keys (id),
  key_file text NOT NULL,
  PRIMARY KEY (store, key_id),
  FOREIGN KEY (store, key_file) REFERENCES key_files (store, key)
);
`;

const lifecycle = `
-- A cell's tuple may name a conversation: its key is then AND-wrapped to conversation:T/C
-- too, so one conversation can be erased without touching its authors' other cells.
ALTER TABLE cell_keys ADD COLUMN conversation text;
CREATE INDEX cell_keys_by_tenant ON cell_keys (tenant, data_class, period);

-- A snapshot retention has removed: its manifest is gone from the bucket (or goes as soon
-- as its lock allows), it is no longer verified or restored, and its cells stop pinning packs.
ALTER TABLE snapshots DROP CONSTRAINT snapshots_status_check;
ALTER TABLE snapshots ADD CONSTRAINT snapshots_status_check
  CHECK (status IN ('running', 'complete', 'abandoned', 'expired'));
ALTER TABLE snapshots ADD COLUMN expired_at timestamptz;
ALTER TABLE snapshots ADD CONSTRAINT snapshots_expired_has_time
  CHECK ((status = 'expired') = (expired_at IS NOT NULL));

-- Why and by whom each dimension key was destroyed. Verify reports a cell whose key needs a
-- destroyed dimension key as shredded only when that key has a row here.
CREATE TABLE destructions (
  key_id       text PRIMARY KEY REFERENCES dimension_keys (id),
  destroyed_at timestamptz NOT NULL,
  actor        text NOT NULL CHECK (actor <> ''),
  reason       text NOT NULL CHECK (reason <> ''),
  -- {"kind": "retention", "class": ..., "period": ..., "maxAge": ...}
  -- | {"kind": "erasure", "request": ...} | {"kind": "hold-release", "case": ...}
  cause        jsonb NOT NULL,
  audit_seq    bigint NOT NULL CHECK (audit_seq >= 1)
);

-- Legal holds. One case may pin several selectors (custodians); each row is one selector.
-- Null user / conversation / time bound = any.
CREATE TABLE holds (
  id           bigserial PRIMARY KEY,
  case_id      text NOT NULL CHECK (case_id ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$'),
  tenant       text NOT NULL,
  user_id      text,
  conversation text,
  from_ts      timestamptz,
  to_ts        timestamptz,
  reason       text NOT NULL CHECK (reason <> ''),
  placed_by    text NOT NULL CHECK (placed_by <> ''),
  placed_at    timestamptz NOT NULL DEFAULT now(),
  released_by  text,
  released_at  timestamptz,
  CONSTRAINT holds_range CHECK (from_ts IS NULL OR to_ts IS NULL OR from_ts <= to_ts),
  CONSTRAINT holds_release_complete CHECK ((released_by IS NULL) = (released_at IS NULL))
);
CREATE INDEX holds_active ON holds (tenant) WHERE released_at IS NULL;

-- Cell keys re-wrapped for a case before a dimension key they needed (a period past
-- retention) was destroyed: the same cell identity, AND-wrapped to dimension_ids, where the
-- case key case:T/CASE takes the destroyed key's place. Destroying the case key (on release)
-- ends them.
CREATE TABLE held_cell_keys (
  case_id          text NOT NULL,
  key_id           text NOT NULL REFERENCES cell_keys (id),
  dimension_ids    text[] NOT NULL CHECK (cardinality(dimension_ids) > 0),
  wrapped_identity bytea NOT NULL,
  created_at       timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (case_id, key_id)
);
CREATE INDEX held_cell_keys_by_key ON held_cell_keys (key_id);

-- Deletion requests: requested by one person, approved (and so executed) by another.
CREATE TABLE erase_requests (
  id           text PRIMARY KEY CHECK (id ~ '^er-[0-9a-z]{8,32}$'),
  tenant       text NOT NULL,
  scope        text NOT NULL CHECK (scope IN ('user', 'conversation', 'tenant')),
  subject      text,
  reason       text NOT NULL CHECK (reason <> ''),
  requested_by text NOT NULL CHECK (requested_by <> ''),
  requested_at timestamptz NOT NULL DEFAULT now(),
  -- approved: the second person said yes and the keys are being destroyed; executed: the
  -- keys are gone and the certificate is written. An approved request left by a crash is
  -- finished by the next approve or lifecycle apply.
  status       text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'approved', 'executed')),
  approved_by  text,
  approved_at  timestamptz,
  executed_at  timestamptz,
  certificate  jsonb,
  CONSTRAINT erase_requests_subject CHECK ((scope = 'tenant') = (subject IS NULL)),
  CONSTRAINT erase_requests_two_people CHECK (approved_by IS NULL OR approved_by <> requested_by),
  CONSTRAINT erase_requests_approved CHECK ((status = 'pending') = (approved_by IS NULL AND approved_at IS NULL)),
  CONSTRAINT erase_requests_executed CHECK ((status = 'executed') = (executed_at IS NOT NULL AND certificate IS NOT NULL))
);
`;

const trust = `
-- Signing keys: the vault keeps public halves only. A key whose private half was stored
-- here (every key before this migration) could be used by anyone who read the vault, so it
-- becomes 'legacy': retired, it only verifies what it signed before. Each job now brings its
-- own key (config signingKeys.backup / signingKeys.lifecycle); lethe init registers them.
ALTER TABLE signing_keys ADD COLUMN purpose text;
UPDATE signing_keys SET purpose = 'legacy', retired_at = coalesce(retired_at, now());
ALTER TABLE signing_keys ALTER COLUMN purpose SET NOT NULL;
ALTER TABLE signing_keys ADD CONSTRAINT signing_keys_purpose
  CHECK (purpose IN ('backup', 'lifecycle', 'legacy'));
ALTER TABLE signing_keys ADD CONSTRAINT signing_keys_legacy_retired
  CHECK (purpose <> 'legacy' OR retired_at IS NOT NULL);
ALTER TABLE signing_keys ADD CONSTRAINT signing_keys_public_key_form
  CHECK (public_key ~ '^[A-Za-z0-9+/]{43}=$');
DROP INDEX signing_keys_one_active;
CREATE UNIQUE INDEX signing_keys_one_active ON signing_keys (purpose) WHERE retired_at IS NULL;
ALTER TABLE signing_keys DROP COLUMN private_key;

-- Keyed digests leave the bucket and the per-cell history: a digest of shredded data must
-- not outlive its keys, or anyone with the digest key could confirm a guess of the content.
-- The backup derives its digest key from its own signing key; the vault keeps only the
-- newest digest of each cell, with the copy it describes, and destroying a dimension key
-- deletes the digests of every cell that needed it.
DROP TABLE digest_keys;
ALTER TABLE snapshot_cells DROP COLUMN digest;
CREATE TABLE cell_digests (
  table_name  text NOT NULL,
  cell_id     text NOT NULL,
  key_id      text NOT NULL REFERENCES cell_keys (id),
  pack        text NOT NULL,
  pack_offset bigint NOT NULL CHECK (pack_offset >= 0),
  digest      text NOT NULL CHECK (digest ~ '^[0-9a-f]{64}$'),
  PRIMARY KEY (table_name, cell_id)
);
CREATE INDEX cell_digests_by_key ON cell_digests (key_id);

-- Every object lethe writes to a store that lifecycle may later delete, recorded before the
-- upload starts. Lifecycle deletes only objects recorded here for the store it works on: an
-- object lethe has no record of writing there (a copy, a file someone else put in the
-- bucket) is reported, never deleted.
CREATE TABLE store_objects (
  store       text NOT NULL,
  key         text NOT NULL,
  kind        text NOT NULL CHECK (kind IN ('pack', 'key-file', 'manifest', 'vault-backup')),
  snapshot_id text,
  created_at  timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (store, key)
);
INSERT INTO store_objects (store, key, kind, snapshot_id)
SELECT DISTINCT ON (s.stats->>'store', c.pack) s.stats->>'store', c.pack, 'pack', c.snapshot_id
  FROM snapshot_cells c JOIN snapshots s ON s.id = c.snapshot_id
 WHERE s.stats ? 'store'
 ORDER BY s.stats->>'store', c.pack, c.snapshot_id;
INSERT INTO store_objects (store, key, kind, snapshot_id)
SELECT store, key, 'key-file', snapshot_id FROM key_files
ON CONFLICT DO NOTHING;
INSERT INTO store_objects (store, key, kind, snapshot_id)
SELECT stats->>'store', manifest_key, 'manifest', id FROM snapshots
 WHERE manifest_key IS NOT NULL AND stats ? 'store'
ON CONFLICT DO NOTHING;
-- Vault backups were not recorded per store: those the audit log names are filed under the
-- store of the newest complete snapshot, the store the deployment last wrote to.
INSERT INTO store_objects (store, key, kind)
SELECT st.store, a.subject, 'vault-backup'
  FROM audit_log a,
       (SELECT stats->>'store' AS store FROM snapshots
         WHERE status = 'complete' AND stats ? 'store'
         ORDER BY completed_at DESC LIMIT 1) st
 WHERE a.action = 'vault.backup'
ON CONFLICT DO NOTHING;
`;

const encapsulation = `
-- Cell keys are no longer stored: each snapshot draws one ephemeral X25519 key per tenant
-- (an encapsulation), and a cell's key is derived from the shared secrets of that key with
-- each of its dimension keys (docs/format.md). A vault of the first format holds one
-- AND-wrapped key per cell and dimension keys in another form; this lethe cannot read it.
DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM dimension_keys) OR EXISTS (SELECT 1 FROM snapshots) THEN
    RAISE EXCEPTION USING
      ERRCODE = 'object_not_in_prerequisite_state',
      MESSAGE = 'this vault was written by a lethe that stored one AND-wrapped key per cell (vault format 1); '
        || 'this lethe derives cell keys from one key encapsulation per snapshot and tenant (format 2) and cannot read it',
      HINT = 'keep the lethe that wrote this vault to read its snapshots until they expire; give this version a new vault '
        || '(another vault.schema or vault.database) and a new storage prefix, then run lethe init';
  END IF;
END
$$;
UPDATE meta SET value = '2'::jsonb WHERE key = 'format_version';

-- cell_keys keeps only the facts of each tuple: which dimension keys its cells need.
ALTER TABLE cell_keys DROP COLUMN recipient, DROP COLUMN wrapped_identity;
DROP TABLE key_file_entries;
DROP TABLE key_files;

-- One per (snapshot, tenant) that wrote cells, and one per (hold re-wrap run, tenant): the
-- ephemeral public key E. Its private half is never stored anywhere.
CREATE TABLE encapsulations (
  id          text PRIMARY KEY CHECK (id <> ''),
  purpose     text NOT NULL CHECK (purpose IN ('snapshot', 'hold')),
  snapshot_id text REFERENCES snapshots (id) ON DELETE CASCADE,
  tenant      text,
  kem         text NOT NULL CHECK (kem = 'x25519'),
  ephemeral   bytea NOT NULL CHECK (length(ephemeral) = 32),
  created_at  timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT encapsulations_snapshot CHECK ((purpose = 'snapshot') = (snapshot_id IS NOT NULL))
);

ALTER TABLE snapshot_cells ADD COLUMN encapsulation text NOT NULL REFERENCES encapsulations (id);

-- A legal hold keeps a tuple key (one per tuple and encapsulation) readable after a period
-- key goes: the tuple key, sealed under a key derived from a hold re-encapsulation to the
-- case key and the tuple's other dimension keys.
DROP TABLE held_cell_keys;
CREATE TABLE held_cell_keys (
  case_id         text NOT NULL,
  key_id          text NOT NULL REFERENCES cell_keys (id),
  encapsulation   text NOT NULL REFERENCES encapsulations (id) ON DELETE CASCADE,
  rewrap          text NOT NULL REFERENCES encapsulations (id),
  dimension_ids   text[] NOT NULL CHECK (cardinality(dimension_ids) > 0),
  wrapped         bytea NOT NULL CHECK (length(wrapped) = 48),
  created_at      timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (case_id, key_id, encapsulation)
);
CREATE INDEX held_cell_keys_by_key ON held_cell_keys (key_id);
`;

const segments = `
-- Snapshots as trees (docs/format.md, manifest v4): a snapshot's manifest names segments
-- (one per table, tenant and period), each segment object lists its cells, and a snapshot
-- references the unchanged segments of the one before it. The vault records what each
-- snapshot changed, never one row per cell per snapshot: a copy of a cell (and a segment)
-- lives from the snapshot that wrote it (from_seq) until the first complete snapshot of the
-- same store without it (to_seq, NULL while current). A snapshot holds exactly the copies
-- whose interval contains its seq; the view snapshot_cells spells that out.

-- Snapshots get an order (seq, drawn when a run begins: backups of one vault are serial)
-- and the store they were written to.
ALTER TABLE snapshots ADD COLUMN store text, ADD COLUMN seq bigint;
UPDATE snapshots SET store = stats->>'store';
UPDATE snapshots SET status = 'abandoned' WHERE status = 'running';
WITH o AS (SELECT id, row_number() OVER (ORDER BY started_at, id) AS n FROM snapshots)
UPDATE snapshots s SET seq = o.n FROM o WHERE o.id = s.id;
CREATE SEQUENCE snapshot_seq OWNED BY snapshots.seq;
SELECT setval('snapshot_seq', (SELECT coalesce(max(seq), 0) + 1 FROM snapshots), false);
ALTER TABLE snapshots ALTER COLUMN seq SET DEFAULT nextval('snapshot_seq'), ALTER COLUMN seq SET NOT NULL;
CREATE UNIQUE INDEX snapshots_by_seq ON snapshots (seq);
CREATE INDEX snapshots_by_store ON snapshots (store, seq);

CREATE TABLE cell_copies (
  id            bigserial PRIMARY KEY,
  store         text NOT NULL,
  from_seq      bigint NOT NULL,
  to_seq        bigint CHECK (to_seq IS NULL OR to_seq > from_seq),
  -- The running snapshot that leaves this copy out; becomes to_seq when it completes.
  superseding   text,
  segment       text NOT NULL,
  table_name    text NOT NULL,
  cell_id       text NOT NULL,
  tenant        text,
  data_class    text NOT NULL,
  period        text,
  author        text,
  key_id        text NOT NULL REFERENCES cell_keys (id),
  encapsulation text NOT NULL REFERENCES encapsulations (id),
  pack          text NOT NULL,
  pack_offset   bigint NOT NULL CHECK (pack_offset >= 0),
  pack_length   bigint NOT NULL CHECK (pack_length > 0),
  sha256        text NOT NULL,
  row_count     bigint NOT NULL CHECK (row_count >= 0),
  bytes_plain   bigint NOT NULL CHECK (bytes_plain >= 0),
  -- Keyed (HMAC under the backup's digest key), deleted with a key the cell needs.
  digest        text CHECK (digest ~ '^[0-9a-f]{64}$'),
  fingerprint   text CHECK (fingerprint ~ '^[0-9a-f]{64}$')
);
CREATE INDEX cell_copies_current ON cell_copies (store, cell_id) WHERE to_seq IS NULL;
CREATE INDEX cell_copies_current_by_segment ON cell_copies (store, segment, cell_id) WHERE to_seq IS NULL;
CREATE INDEX cell_copies_by_interval ON cell_copies (store, from_seq);
-- A run writes a cell at most once.
CREATE UNIQUE INDEX cell_copies_one_per_run ON cell_copies (store, from_seq, cell_id);
CREATE INDEX cell_copies_by_key ON cell_copies (key_id);
CREATE INDEX cell_copies_by_pack ON cell_copies (pack);
CREATE INDEX cell_copies_superseding ON cell_copies (superseding) WHERE superseding IS NOT NULL;

-- Each distinct copy of the old per-snapshot index: from the first snapshot that had it to
-- the next snapshot of its store after the last that had it.
WITH chain AS (
  SELECT id, store, seq, lead(seq) OVER (PARTITION BY store ORDER BY seq) AS next_seq
    FROM snapshots WHERE status IN ('complete', 'expired') AND store IS NOT NULL)
INSERT INTO cell_copies (store, from_seq, to_seq, segment, table_name, cell_id, tenant, data_class, period, author,
                         key_id, encapsulation, pack, pack_offset, pack_length, sha256, row_count, bytes_plain, digest)
SELECT ch.store, min(ch.seq), (array_agg(ch.next_seq ORDER BY ch.seq DESC))[1],
       split_part(c.cell_id, '/', 1) || '/' || split_part(c.cell_id, '/', 2) || '/' || split_part(c.cell_id, '/', 3),
       c.table_name, c.cell_id, min(c.tenant), min(c.data_class), min(c.period), min(c.author), min(c.key_id),
       min(c.encapsulation), c.pack, c.pack_offset, min(c.pack_length), min(c.sha256), min(c.row_count),
       min(c.bytes_plain), min(d.digest)
  FROM snapshot_cells c JOIN chain ch ON ch.id = c.snapshot_id
  LEFT JOIN cell_digests d ON d.table_name = c.table_name AND d.cell_id = c.cell_id AND d.key_id = c.key_id
                          AND d.pack = c.pack AND d.pack_offset = c.pack_offset
 GROUP BY ch.store, c.table_name, c.cell_id, c.pack, c.pack_offset;
DROP TABLE snapshot_cells;
DROP TABLE cell_digests;

-- One row per segment object: its cells' packs and encapsulations (what lifecycle counts
-- references with) and the keyed fingerprint of the rows it was read from.
CREATE TABLE segments (
  store          text NOT NULL,
  key            text NOT NULL,
  segment        text NOT NULL,
  table_name     text NOT NULL,
  tenant         text,
  period         text NOT NULL,
  sha256         text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
  size           bigint NOT NULL CHECK (size > 0),
  cells          bigint NOT NULL CHECK (cells >= 0),
  row_count      bigint NOT NULL CHECK (row_count >= 0),
  bytes_plain    bigint NOT NULL CHECK (bytes_plain >= 0),
  shredded       bigint NOT NULL DEFAULT 0 CHECK (shredded >= 0),
  packs          text[] NOT NULL,
  encapsulations text[] NOT NULL,
  fingerprint    text CHECK (fingerprint ~ '^[0-9a-f]{64}$'),
  snapshot_id    text NOT NULL,
  from_seq       bigint NOT NULL,
  to_seq         bigint CHECK (to_seq IS NULL OR to_seq > from_seq),
  superseding    text,
  PRIMARY KEY (store, key)
);
CREATE INDEX segments_current ON segments (store, segment) WHERE to_seq IS NULL;
CREATE INDEX segments_by_interval ON segments (store, from_seq);
CREATE INDEX segments_superseding ON segments (superseding) WHERE superseding IS NOT NULL;

-- What every reader of "the cells of snapshot S" asks: the copies whose interval holds S.
CREATE VIEW snapshot_cells AS
SELECT s.id AS snapshot_id, c.table_name, c.cell_id, c.tenant, c.data_class, c.period, c.author, c.key_id,
       c.encapsulation, c.pack, c.pack_offset, c.pack_length, c.sha256, c.row_count, c.bytes_plain,
       c.from_seq <> s.seq AS reused
  FROM cell_copies c
  JOIN snapshots s ON s.store = c.store AND s.seq >= c.from_seq AND (c.to_seq IS NULL OR s.seq < c.to_seq)
 WHERE s.status <> 'abandoned';

ALTER TABLE store_objects DROP CONSTRAINT store_objects_kind_check;
ALTER TABLE store_objects ADD CONSTRAINT store_objects_kind_check
  CHECK (kind IN ('pack', 'key-file', 'manifest', 'segment', 'vault-backup'));
`;

const shards = `
-- A backup written by several workers (lethe backup --coordinate K / --shard I/K): the
-- coordinator records one row per shard with the plan every worker follows (the exported
-- PostgreSQL snapshot to import, the tables and their columns, the previous snapshot);
-- each worker claims its shard, writes its tenants' cells and segments into the same
-- running snapshot, and reports. The coordinator writes the manifest once all are done.
CREATE TABLE backup_shards (
  snapshot_id text NOT NULL REFERENCES snapshots (id) ON DELETE CASCADE,
  shard       integer NOT NULL CHECK (shard >= 0),
  shards      integer NOT NULL CHECK (shards > 0 AND shard < shards),
  plan        jsonb NOT NULL,
  status      text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'running', 'done', 'failed')),
  owner       text,
  claimed_at  timestamptz,
  finished_at timestamptz,
  result      jsonb,
  error       text,
  PRIMARY KEY (snapshot_id, shard)
);
`;

const daemonRuns = `
-- Scheduled runs of lethe daemon: one row per (job, scheduled slot), so that several
-- daemons on one vault run each slot once. The daemon that inserts the row runs the slot;
-- slots that came due while the job was busy or no daemon was up are recorded as skipped
-- by the run that stands in for them. A running row is kept alive by heartbeat_at; one
-- whose heartbeat is older than the daemons' lease is taken over (attempts counts them).
CREATE TABLE daemon_runs (
  job           text NOT NULL CHECK (job IN ('backup', 'verify', 'verifyOlder', 'lifecycle', 'vaultBackup')),
  slot          timestamptz NOT NULL,
  state         text NOT NULL CHECK (state IN ('running', 'ok', 'failed', 'skipped')),
  owner         text NOT NULL CHECK (owner <> ''),
  started_at    timestamptz NOT NULL DEFAULT now(),
  heartbeat_at  timestamptz NOT NULL DEFAULT now(),
  finished_at   timestamptz,
  attempts      integer NOT NULL DEFAULT 1 CHECK (attempts > 0),
  taken_over_at timestamptz,
  error_code    text,
  error_message text,
  details       jsonb,
  PRIMARY KEY (job, slot),
  CONSTRAINT daemon_runs_finished CHECK ((state = 'running') = (finished_at IS NULL)),
  CONSTRAINT daemon_runs_failed_has_code CHECK (state <> 'failed' OR error_code IS NOT NULL)
);
CREATE UNIQUE INDEX daemon_runs_one_running ON daemon_runs (job) WHERE state = 'running';
CREATE INDEX daemon_runs_recent ON daemon_runs (finished_at DESC);
`;

const signedApprovals = `
-- People who may request, approve, place and release: each by an enrolled SSH Ed25519 key
-- (signatures from \`ssh-keygen -Y sign -n lethe-approval\`). The first is enrolled by
-- \`lethe init --enrol\` (enrolled_by NULL); every later one needs the statement an enrolled
-- person signed. A revoked key stays, so old signatures keep their signer.
CREATE TABLE approvers (
  fingerprint      text PRIMARY KEY CHECK (fingerprint ~ '^SHA256:[A-Za-z0-9+/]{43}$'),
  name             text NOT NULL CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}$'),
  public_key       text NOT NULL UNIQUE CHECK (starts_with(public_key, 'ssh-ed25519 ')),
  enrolled_at      timestamptz NOT NULL DEFAULT now(),
  enrolled_by      text,
  enrol_statement  text,
  enrol_signature  text,
  revoked_at       timestamptz,
  revoked_by       text,
  revoke_statement text,
  revoke_signature text,
  CONSTRAINT approvers_enrolment_signed
    CHECK ((enrolled_by IS NULL) = (enrol_statement IS NULL) AND (enrol_statement IS NULL) = (enrol_signature IS NULL)),
  CONSTRAINT approvers_revocation_complete
    CHECK ((revoked_at IS NULL) = (revoked_by IS NULL) AND (revoked_by IS NULL) = (revoke_signature IS NULL))
);
-- One active key per name (case-insensitive): a name in a certificate names one key.
CREATE UNIQUE INDEX approvers_active_name ON approvers (lower(name)) WHERE revoked_at IS NULL;

-- Each act keeps the statement its signer signed and the SSHSIG (NULL: a typed name, from
-- before this migration or under approvals.allowUnsigned).
ALTER TABLE erase_requests
  ADD COLUMN requested_key      text,
  ADD COLUMN request_statement  text,
  ADD COLUMN request_signature  text,
  ADD COLUMN approved_key       text,
  ADD COLUMN approval_statement text,
  ADD COLUMN approval_signature text,
  -- The two-person rule on keys: one key cannot both request and approve.
  ADD CONSTRAINT erase_requests_two_keys CHECK (approved_key IS NULL OR requested_key IS NULL OR approved_key <> requested_key),
  ADD CONSTRAINT erase_requests_request_signed
    CHECK ((requested_key IS NULL) = (request_signature IS NULL) AND (request_signature IS NULL) = (request_statement IS NULL)),
  ADD CONSTRAINT erase_requests_approval_signed
    CHECK ((approved_key IS NULL) = (approval_signature IS NULL) AND (approval_signature IS NULL) = (approval_statement IS NULL));

ALTER TABLE holds
  ADD COLUMN placed_key        text,
  ADD COLUMN place_statement   text,
  ADD COLUMN place_signature   text,
  ADD COLUMN released_key      text,
  ADD COLUMN release_statement text,
  ADD COLUMN release_signature text,
  ADD CONSTRAINT holds_place_signed
    CHECK ((placed_key IS NULL) = (place_signature IS NULL) AND (place_signature IS NULL) = (place_statement IS NULL)),
  ADD CONSTRAINT holds_release_signed
    CHECK ((released_key IS NULL) = (release_signature IS NULL) AND (release_signature IS NULL) = (release_statement IS NULL));
`;

// A deletion request for a person across every tenant (`erase request --subject U
// --all-tenants`): the tenant is NULL, and only a user request may leave it so. Which
// tenants it reaches is found again at execution (user:T/U keys in dimension_keys), since
// data may have reached a new tenant after the request.
const allTenantErasure = `
ALTER TABLE erase_requests
  ALTER COLUMN tenant DROP NOT NULL,
  ADD CONSTRAINT erase_requests_all_tenants_user_only CHECK (tenant IS NOT NULL OR (scope = 'user' AND subject IS NOT NULL));
`;

// Master-key epochs: every dimension key's wrap names the master epoch it is wrapped to, so a
// shred can be made final by destroying that epoch's master key in its provider (a file, an
// HSM object, a KMS key): every copy of the erased keys' wrapped bytes (WAL, archives,
// replicas, base backups, vault backups) is then wrapped to a key that exists nowhere. A vault
// from before this migration becomes epoch 1 of the file provider, its recipient the one in
// meta. `reference` names where the provider keeps the key (no secret); lethe never takes a
// path or object to destroy from it, only from its config.
const masterEpochs = `
CREATE TABLE master_epochs (
  epoch        integer PRIMARY KEY CHECK (epoch > 0),
  provider     text NOT NULL CHECK (provider IN ('file', 'pkcs11', 'aws-kms')),
  reference    text NOT NULL CHECK (reference <> ''),
  recipient    text NOT NULL UNIQUE CHECK (recipient <> ''),
  created_at   timestamptz NOT NULL DEFAULT now(),
  retired_at   timestamptz,
  destroyed_at timestamptz,
  reason       text,
  CONSTRAINT master_epochs_destroyed_after_retired CHECK (destroyed_at IS NULL OR retired_at IS NOT NULL),
  CONSTRAINT master_epochs_retired_has_reason CHECK (retired_at IS NULL OR reason IS NOT NULL)
);
-- Exactly one current epoch (the one new wraps go to) once the first exists.
CREATE UNIQUE INDEX master_epochs_one_current ON master_epochs ((true)) WHERE retired_at IS NULL;
INSERT INTO master_epochs (epoch, provider, reference, recipient)
  SELECT 1, 'file', 'masterKey.file', value #>> '{}' FROM meta WHERE key = 'master_recipient';
ALTER TABLE dimension_keys ADD COLUMN master_epoch integer REFERENCES master_epochs (epoch);
UPDATE dimension_keys SET master_epoch = 1 WHERE EXISTS (SELECT 1 FROM master_epochs WHERE epoch = 1);
CREATE INDEX dimension_keys_by_epoch ON dimension_keys (master_epoch) WHERE wrapped_identity IS NOT NULL;
`;

// Post-quantum option (keys.postQuantum): a dimension key may have an ML-KEM-768 half,
// whose public key is here (the backup encapsulates to it) and whose seed is inside the same
// master-wrapped secret as the X25519 private key (docs/format.md). An encapsulation of kem
// x25519-mlkem768 has, besides E, one ML-KEM ciphertext per dimension key its cells use; a
// cell's key then needs both secrets of every one of its dimension keys.
const postQuantum = `
ALTER TABLE dimension_keys
  ADD COLUMN mlkem_public bytea CHECK (mlkem_public IS NULL OR length(mlkem_public) = 1184);
ALTER TABLE encapsulations
  DROP CONSTRAINT encapsulations_kem_check,
  ADD CONSTRAINT encapsulations_kem_check CHECK (kem IN ('x25519', 'x25519-mlkem768'));
CREATE TABLE encapsulation_ciphertexts (
  encapsulation text NOT NULL REFERENCES encapsulations (id) ON DELETE CASCADE,
  dimension_key text NOT NULL REFERENCES dimension_keys (id),
  ciphertext    bytea NOT NULL CHECK (length(ciphertext) = 1088),
  PRIMARY KEY (encapsulation, dimension_key)
);
`;

/** Every migration, in version order. */
export const MIGRATIONS: readonly Migration[] = [
  { version: 1, name: 'initial', sql: initial },
  { version: 2, name: 'key files', sql: keyFiles },
  { version: 3, name: 'lifecycle: holds, erasure, destructions', sql: lifecycle },
  { version: 4, name: 'trust: public signing keys only, digests that die with their keys, recorded objects', sql: trust },
  { version: 5, name: 'one key encapsulation per snapshot and tenant', sql: encapsulation },
  { version: 6, name: 'snapshots as trees: segments, cell copies by interval', sql: segments },
  { version: 7, name: 'backups written by several workers', sql: shards },
  { version: 8, name: 'daemon: scheduled runs, once per slot across replicas', sql: daemonRuns },
  { version: 9, name: 'signed approvals: enrolled SSH keys, signed requests, approvals and holds', sql: signedApprovals },
  { version: 10, name: 'deletion requests for a person across every tenant', sql: allTenantErasure },
  { version: 11, name: 'master-key epochs: which master key each dimension key is wrapped to', sql: masterEpochs },
  { version: 12, name: 'post-quantum option: ML-KEM-768 halves of dimension keys, hybrid encapsulations', sql: postQuantum },
];

/** The schema version this build of lethe reads and writes. */
export const VAULT_SCHEMA_VERSION = MIGRATIONS.reduce((max, m) => Math.max(max, m.version), 0);
