import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../../../src/config/index.ts';
import { ErrorCode, isLetheError } from '../../../src/errors/index.ts';
import { Runtime } from '../../../src/jobs/runtime.ts';
import { describeSchemaChange } from '../../../src/mapping/index.ts';
import { backup, initialize, restore, verify } from '../../../src/jobs/tasks.ts';
import { createLogger } from '../../../src/log/index.ts';
import type { BackupResult } from '../../../src/snapshot/index.ts';
import type { VerifyResult } from '../../../src/restore/index.ts';
import { createLetheEnv, expectExit, filesUnder, jsonOut, type LetheEnv, type TestDatabase } from '../../helpers/lethe-env.ts';
import { readTree, type TreeManifest } from '../../helpers/tree.ts';
import { createTestDatabase } from '../../helpers/postgres.ts';

/**
 * Must hold (issue 12, item 3): the chat store's schema changes under the backup. After
 * ADD COLUMN (with and without a default), a rename of a column the mapping does not use,
 * a rename of one it does (refused, naming the column and the fix, until the mapping is
 * updated), a new table (refused as unmapped, naming it, until it is mapped), DROP COLUMN
 * and a type change, every backup works; no segment of a table whose column list changed is
 * referenced from a snapshot taken with the old list; every snapshot restores with the
 * schema it was taken with and exactly the rows it saw; verify names each snapshot's schema
 * and what changed since the one before.
 */

interface TableState {
  readonly columns: string[];
  readonly rows: number;
  readonly md5: string | null;
}

/**
 * Every table of `schema`: its columns as `name type` in attnum order and an md5 of its rows'
 * text forms (sorted), computed by PostgreSQL, independent of lethe.
 */
async function storeState(url: string, schema = 'public'): Promise<Record<string, TableState>> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    // Types of the schema print unqualified, as in the source.
    await client.query(`SET search_path TO ${client.escapeIdentifier(schema)}`);
    const tables = await client.query<{ name: string; columns: string[] }>(
      `SELECT c.relname AS name,
              array_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod) ORDER BY a.attnum) AS columns
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
        WHERE n.nspname = $1 AND c.relkind = 'r'
        GROUP BY c.relname ORDER BY c.relname`,
      [schema],
    );
    const out: Record<string, TableState> = {};
    for (const t of tables.rows) {
      const q = `${client.escapeIdentifier(schema)}.${client.escapeIdentifier(t.name)}`;
      const { rows } = await client.query<{ n: string; h: string | null }>(`SELECT count(*) AS n, md5(string_agg(x::text, E'\\n' ORDER BY x::text)) AS h FROM ${q} x`);
      out[t.name] = { columns: t.columns, rows: Number(rows[0]?.n ?? -1), md5: rows[0]?.h ?? null };
    }
    return out;
  } finally {
    await client.end();
  }
}

async function sql(url: string, text: string): Promise<void> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    await client.query(text);
  } finally {
    await client.end();
  }
}

/**
 * A chat store of its own (five tables, an enum, foreign keys, a dozen rows over two months),
 * so that the test does not move with the reference schema.
 */
const STORE_SQL = `
CREATE TYPE public.channel_kind AS ENUM ('public', 'private');
CREATE TABLE public.tenants (id bigint PRIMARY KEY, name text NOT NULL);
CREATE TABLE public.users (id bigint PRIMARY KEY, tenant_id bigint NOT NULL REFERENCES public.tenants, handle text NOT NULL,
  locale text NOT NULL DEFAULT 'en');
CREATE TABLE public.channels (id bigint PRIMARY KEY, tenant_id bigint NOT NULL REFERENCES public.tenants,
  kind public.channel_kind NOT NULL, created_at timestamptz NOT NULL);
CREATE TABLE public.members (channel_id bigint NOT NULL REFERENCES public.channels, user_id bigint NOT NULL REFERENCES public.users,
  joined_at timestamptz NOT NULL, PRIMARY KEY (channel_id, user_id));
CREATE TABLE public.posts (id bigint PRIMARY KEY, channel_id bigint NOT NULL REFERENCES public.channels,
  author_id bigint NOT NULL REFERENCES public.users, body text NOT NULL, created_at timestamptz NOT NULL,
  edited boolean NOT NULL DEFAULT false);
INSERT INTO public.tenants VALUES (1, 'Acme'), (2, 'Globex');
INSERT INTO public.users VALUES (11, 1, 'ada', 'en'), (12, 1, 'bob', 'fr'), (21, 2, 'cy', 'en');
INSERT INTO public.channels VALUES (101, 1, 'public', '2025-12-01 10:00+00'), (102, 1, 'private', '2026-01-02 10:00+00'),
  (201, 2, 'public', '2026-01-03 10:00+00');
INSERT INTO public.members VALUES (101, 11, '2025-12-01 10:00+00'), (101, 12, '2025-12-01 11:00+00'),
  (102, 11, '2026-01-02 10:00+00'), (201, 21, '2026-01-03 10:00+00');
INSERT INTO public.posts VALUES
  (1001, 101, 11, 'hello', '2025-12-05 09:00+00', false),
  (1002, 101, 12, E'tab\\there and a newline\\n', '2025-12-05 09:05+00', true),
  (1003, 101, 11, 'january', '2026-01-05 09:00+00', false),
  (1004, 102, 11, 'private note', '2026-01-06 09:00+00', false),
  (1005, 201, 21, 'globex news', '2026-01-07 09:00+00', false);
`;

/** The mapping of STORE_SQL, as a config document an operator would change. */
function mappingDoc(): { schema: string; tables: Record<string, Record<string, unknown>> } {
  const channel = [{ table: 'channels', as: 'c', on: { channel_id: 'id' } }];
  return {
    schema: 'public',
    tables: {
      tenants: { class: 'metadata', primaryKey: ['id'], tenant: 'id' },
      users: { class: 'profiles', primaryKey: ['id'], tenant: 'tenant_id', author: 'id' },
      channels: { class: 'metadata', primaryKey: ['id'], tenant: 'tenant_id', conversation: 'id', timestamp: { column: 'created_at', type: 'timestamptz' } },
      members: {
        class: 'metadata',
        primaryKey: ['channel_id', 'user_id'],
        joins: channel,
        tenant: 'c.tenant_id',
        author: 'user_id',
        conversation: 'channel_id',
        timestamp: { column: 'joined_at', type: 'timestamptz' },
      },
      posts: {
        class: 'messages',
        primaryKey: ['id'],
        joins: channel,
        tenant: 'c.tenant_id',
        author: 'author_id',
        conversation: 'channel_id',
        timestamp: { column: 'created_at', type: 'timestamptz' },
      },
    },
  };
}

interface Step {
  readonly name: string;
  readonly result: BackupResult;
  readonly state: Record<string, TableState>;
}

describe('backups across schema changes in the chat store', () => {
  let template: TestDatabase;
  let env: LetheEnv;
  const runtimes: Runtime[] = [];
  const steps: Step[] = [];
  const refused: { name: string; err: unknown; filesBefore: string[]; filesAfter: string[]; snapshotsBefore: number; snapshotsAfter: number }[] = [];
  const trees = new Map<string, TreeManifest>();
  /** A config file with the last mapping, for the CLI. */
  let cliConfig = '';

  /** A runtime over the environment's config with `mapping` instead of the built-in one. */
  const runtimeWith = (mapping: unknown): Runtime => {
    const raw = { ...env.raw, chatStore: { ...(env.raw['chatStore'] as Record<string, unknown>), mapping } };
    const rt = new Runtime(parseConfig(raw, env.dir), createLogger('warn'));
    runtimes.push(rt);
    return rt;
  };
  const take = async (rt: Runtime, name: string, fullRead = false): Promise<void> => {
    const state = await storeState(env.chat.url);
    const result = await backup(rt, { actor: 'e2e', fullRead });
    steps.push({ name, result, state });
    trees.set(name, await readTree(env.storePath ?? '', result.manifest));
  };
  const refuse = async (rt: Runtime, name: string): Promise<void> => {
    const vault = await env.rt.vault();
    const filesBefore = await filesUnder(env.storePath ?? '');
    const snapshotsBefore = (await vault.listSnapshots({ includeIncomplete: true })).length;
    const err = await backup(rt, { actor: 'e2e' }).then(
      () => null,
      (e: unknown) => e,
    );
    refused.push({ name, err, filesBefore, filesAfter: await filesUnder(env.storePath ?? ''), snapshotsBefore, snapshotsAfter: (await vault.listSnapshots({ includeIncomplete: true })).length });
  };
  const step = (name: string): Step => {
    const s = steps.find((x) => x.name === name);
    if (s === undefined) throw new Error(`no step ${name}`);
    return s;
  };

  beforeAll(async () => {
    template = await createTestDatabase('schema_change_tpl');
    await sql(template.url, STORE_SQL);
    env = await createLetheEnv({ template: template.name });
    const url = env.chat.url;
    const first = runtimeWith(mappingDoc());
    await initialize(first, 'e2e');
    await take(first, 'before');

    // (a) new columns: one without a default (NULL in old rows), one with; on tables whose rows are otherwise unchanged.
    await sql(url, `ALTER TABLE public.posts ADD COLUMN pinned boolean;
                    ALTER TABLE public.users ADD COLUMN bio text NOT NULL DEFAULT 'hello';
                    ALTER TABLE public.tenants ADD COLUMN region text`);
    await take(first, 'add-column');

    // (b) a rename the mapping does not see, then one it does.
    await sql(url, 'ALTER TABLE public.posts RENAME COLUMN body TO text');
    await take(first, 'rename-unmapped');
    await sql(url, 'ALTER TABLE public.channels RENAME COLUMN created_at TO opened_at');
    await refuse(first, 'rename-mapped');
    const renamed = mappingDoc();
    (renamed.tables['channels'] as { timestamp: { column: string } }).timestamp.column = 'opened_at';
    await take(runtimeWith(renamed), 'rename-mapped');

    // (c) a new table: refused while unmapped, backed up once mapped.
    await sql(url, `CREATE TABLE public.reactions (post_id bigint NOT NULL REFERENCES public.posts, user_id bigint NOT NULL,
                      emoji text NOT NULL, PRIMARY KEY (post_id, user_id, emoji));
                    INSERT INTO public.reactions VALUES (1001, 12, '+1'), (1003, 12, 'heart'), (1005, 21, 'eyes')`);
    await refuse(runtimeWith(renamed), 'new-table');
    const withReactions = mappingDoc();
    withReactions.tables = {
      ...renamed.tables,
      reactions: {
        class: 'messages',
        primaryKey: ['post_id', 'user_id', 'emoji'],
        joins: [
          { table: 'posts', as: 'p', on: { post_id: 'id' } },
          { table: 'channels', as: 'c', from: 'p', on: { channel_id: 'id' } },
        ],
        tenant: 'c.tenant_id',
        author: 'user_id',
        conversation: 'p.channel_id',
      },
    };
    const mapped = runtimeWith(withReactions);
    cliConfig = await env.writeConfig('mapped.yaml', { ...env.raw, chatStore: { ...(env.raw['chatStore'] as Record<string, unknown>), mapping: withReactions } });
    await take(mapped, 'new-table');

    // (d) a dropped column, and a type change that leaves every value's text as it was.
    await sql(url, `ALTER TABLE public.posts DROP COLUMN edited;
                    ALTER TABLE public.users ALTER COLUMN locale TYPE varchar(20)`);
    await take(mapped, 'drop-column');
    // A row written after the changes, and a full read of everything.
    await sql(url, `INSERT INTO public.posts (id, channel_id, author_id, text, created_at, pinned)
                    VALUES (1006, 102, 12, 'after the changes', '2026-01-21 08:00+00', true)`);
    await take(mapped, 'full-read', true);
  }, 120_000);

  afterAll(async () => {
    for (const rt of runtimes) await rt.close();
    await env.cleanup();
    await template.drop();
  });

  it('backs up after every change, incrementally and by a full read', () => {
    expect(steps.map((s) => s.name)).toEqual(['before', 'add-column', 'rename-unmapped', 'rename-mapped', 'new-table', 'drop-column', 'full-read']);
    expect(step('full-read').result.fullRead).toBe(true);
    expect(step('add-column').result.fullRead).toBe(false);
    expect(step('new-table').state['reactions']?.rows).toBe(3);
  });

  it('never references a segment of a table whose column list changed', () => {
    const changedTables: Record<string, string[]> = {
      'add-column': ['posts', 'users', 'tenants'],
      'rename-unmapped': ['posts'],
      'rename-mapped': ['channels'],
      'new-table': ['reactions'],
      'drop-column': ['posts'],
    };
    for (const [name, tables] of Object.entries(changedTables)) {
      const tree = trees.get(name);
      const id = step(name).result.snapshotId;
      if (tree === undefined) throw new Error(name);
      for (const table of tables) {
        const segments = tree.segments.filter((s) => s.table === table);
        expect(segments.length, `${name}: ${table}`).toBeGreaterThan(0);
        expect(segments.filter((s) => s.snapshot !== id).map((s) => s.id), `${name}: ${table}`).toEqual([]);
        expect(tree.cells.filter((c) => c.table === table && c.reused).map((c) => c.id), `${name}: ${table}`).toEqual([]);
      }
      // Tables that did not change are referenced, not rewritten.
      const untouched = tree.segments.filter((s) => s.table === 'members');
      expect(untouched.length).toBeGreaterThan(0);
      expect(untouched.every((s) => s.snapshot !== id), `${name}: members referenced`).toBe(true);
    }
    // The type change keeps every value's text, so the users segments are still those of the snapshot before.
    const drop = trees.get('drop-column');
    const users = drop?.segments.filter((s) => s.table === 'users') ?? [];
    expect(users.length).toBeGreaterThan(0);
    expect(users.filter((s) => s.snapshot === step('drop-column').result.snapshotId)).toEqual([]);
  });

  it('refuses a rename of a mapped column, naming the column and the fix, and writes nothing', () => {
    const r = refused.find((x) => x.name === 'rename-mapped');
    expect(isLetheError(r?.err, ErrorCode.MAPPING_INVALID)).toBe(true);
    const message = (r?.err as Error).message;
    expect(message).toContain('tables.channels.timestamp.column');
    expect(message).toContain('"created_at"');
    expect(message).toContain('opened_at');
    expect(r?.filesAfter).toEqual(r?.filesBefore);
    expect(r?.snapshotsAfter).toBe(r?.snapshotsBefore);
  });

  it('refuses a new unmapped table, naming it, and writes nothing', () => {
    const r = refused.find((x) => x.name === 'new-table');
    expect(isLetheError(r?.err, ErrorCode.TABLE_UNMAPPED)).toBe(true);
    expect((r?.err as Error).message).toContain('reactions');
    expect(r?.filesAfter).toEqual(r?.filesBefore);
    expect(r?.snapshotsAfter).toBe(r?.snapshotsBefore);
  });

  it('restores every snapshot with the schema it was taken with and exactly its rows', async () => {
    const target = await env.database('schema_change_restore');
    for (const [i, s] of steps.entries()) {
      const schema = `s${i}`;
      await sql(target.url, `CREATE SCHEMA ${schema}`);
      await restore(env.rt, { snapshot: s.result.snapshotId, targetUrl: target.url, targetSchema: schema, replace: false, blobTarget: env.blobTarget(), actor: 'e2e' });
      expect(await storeState(target.url, schema), s.name).toEqual(s.state);
    }
    // The restore of the first snapshot has the old columns, as they were.
    const first = step('before').state;
    expect(first['posts']?.columns).toEqual(['id bigint', 'channel_id bigint', 'author_id bigint', 'body text', 'created_at timestamp with time zone', 'edited boolean']);
    expect(step('full-read').state['posts']?.columns).toEqual(['id bigint', 'channel_id bigint', 'author_id bigint', 'text text', 'created_at timestamp with time zone', 'pinned boolean']);
    expect(first['reactions']).toBeUndefined();
    expect(step('drop-column').state['users']?.columns).toContain('locale character varying(20)');
  }, 60_000);

  it('verifies every snapshot and says which schema it has and what changed since the one before', async () => {
    const results: VerifyResult[] = [];
    for (const s of steps) results.push(await verify(env.rt, { snapshot: s.result.snapshotId, actor: 'e2e' }));
    expect(results.map((r) => [r.ok, r.findings])).toEqual(steps.map(() => [true, []]));
    const changes = results.map((r) => (r.schema?.changes ?? null)?.map(describeSchemaChange) ?? null);
    expect(changes).toEqual([
      null,
      ['posts: + column pinned boolean', 'tenants: + column region text', 'users: + column bio text'],
      ['posts: - column body text', 'posts: + column text text'],
      ['channels: - column created_at timestamp with time zone', 'channels: + column opened_at timestamp with time zone'],
      ['+ table reactions (3 columns)'],
      ['posts: - column edited boolean', 'users: column locale type text → character varying(20)'],
      [],
    ]);
    // The ids chain: each snapshot's previous schema is the one the snapshot before has, and the backup recorded the same id.
    results.forEach((r, i) => {
      const s = steps[i] as Step;
      expect(r.schema?.id).toBe(s.result.schema.id);
      expect(r.schema?.previous?.id ?? null).toBe(i === 0 ? null : (results[i - 1] as VerifyResult).schema?.id);
      expect(s.result.schemaChanged).toBe(i === 0 ? null : (changes[i]?.length ?? 0) > 0);
    });
    expect(results.map((r) => [r.schema?.tables, r.schema?.columns])).toEqual([[5, 19], [5, 22], [5, 22], [5, 22], [6, 25], [6, 24], [6, 24]]);
  }, 60_000);

  it('prints the schema and its changes in verify and snapshots, as text and as JSON', async () => {
    const drop = step('drop-column').result;
    const text = await env.cli(['verify', '--snapshot', drop.snapshotId, '--config', cliConfig]);
    expectExit(text, 0);
    expect(text.stdout).toContain(`schema ${drop.schema.id}: 6 tables, 24 columns; changed since snapshot ${step('new-table').result.snapshotId} (schema ${step('new-table').result.schema.id}):`);
    expect(text.stdout).toContain('    posts: - column edited boolean\n');
    expect(text.stdout).toContain('    users: column locale type text → character varying(20)\n');
    const list = await env.cli(['snapshots', '--config', cliConfig]);
    expectExit(list, 0);
    const lines = list.stdout.trim().split('\n');
    expect(lines).toHaveLength(steps.length);
    // Newest first: the full read has the schema of the snapshot before it; every other change is marked.
    expect(lines.map((l) => / schema ([0-9a-f]{12}|-)( \(changed\))?$/.exec(l)?.slice(1, 3))).toEqual(
      [...steps].reverse().map((s) => [s.result.schema.id, s.result.schemaChanged === true ? ' (changed)' : undefined]),
    );
    const json = jsonOut(await env.cli(['snapshots', '--json', '--config', cliConfig])) as { snapshots: { stats: { schema: unknown } }[] };
    expect(json.snapshots.map((x) => x.stats.schema)).toEqual([...steps].reverse().map((s) => s.result.schema));
  }, 60_000);

  it('holds its tables against a rewriting ALTER TABLE while it reads: the migration waits, the snapshot keeps every row', async () => {
    // Without the backup's ACCESS SHARE locks, a type change committed mid-backup rewrites the
    // table, and the backup's older snapshot then sees it empty and silently backs up no rows.
    const running = env.cli(['backup', '--config', cliConfig], { env: { LETHE_PAUSEPOINTS: 'backup.after-begin:6000' } });
    const client = new pg.Client({ connectionString: env.chat.url });
    await client.connect();
    try {
      const deadline = Date.now() + 30_000;
      for (;;) {
        const { rows } = await client.query<{ n: string }>(
          `SELECT count(*) AS n FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
            WHERE c.relname = 'posts' AND l.mode = 'AccessShareLock' AND l.granted AND l.pid <> pg_backend_pid()`,
        );
        if (Number(rows[0]?.n) > 0) break;
        if (Date.now() > deadline) throw new Error('the backup never locked posts');
        await new Promise((r) => setTimeout(r, 100));
      }
      await client.query('BEGIN');
      await client.query(`SET LOCAL lock_timeout = '300ms'`);
      const err = await client.query('ALTER TABLE public.posts ALTER COLUMN id TYPE numeric').then(
        () => null,
        (e: unknown) => e as { code?: string },
      );
      await client.query('ROLLBACK');
      expect(err?.code).toBe('55P03'); // lock_not_available: the migration waited for the backup
    } finally {
      await client.end();
    }
    const done = await running;
    expectExit(done, 0);
  }, 90_000);
});
