import { Writable } from 'node:stream';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cellKeyId, userKeyId } from '../../../src/cells/index.ts';
import { parseConfig } from '../../../src/config/index.ts';
import { backup, restore } from '../../../src/jobs/tasks.ts';
import { Runtime } from '../../../src/jobs/runtime.ts';
import { createLogger } from '../../../src/log/index.ts';
import { buildCellQuery, cellFilterKey, encodeSubjects, parseMapping } from '../../../src/mapping/index.ts';
import { createLetheEnv, expectExit, jsonOut, type LetheEnv, type RawConfig, type TestDatabase } from '../../helpers/lethe-env.ts';
import { createTestDatabase } from '../../helpers/postgres.ts';

/**
 * Issue 12, item 1 (mapping gaps), end to end on a small team-shaped store of the test's own:
 * `posts` name two persons (sender and target) and map both as subject columns; `people`,
 * shared by every team, sit under one literal tenant (`global`). A person whose id holds a
 * comma (the subject set's separator) is erased in their team and in `global`; afterwards
 * no snapshot restores a row naming them in either column, and every other row restores
 * exactly. Also: `lethe init` refuses a mapping backup would refuse, before it changes
 * anything, and a backup after the erasure writes one summary line for its skipped cells.
 */

const DDL = `
CREATE TABLE public.teams (id text PRIMARY KEY, name text NOT NULL);
CREATE TABLE public.people (id text PRIMARY KEY, name text NOT NULL);
CREATE TABLE public.posts (
  id int PRIMARY KEY,
  team_id text NOT NULL REFERENCES public.teams (id),
  sender_id text REFERENCES public.people (id),
  target_id text REFERENCES public.people (id),
  body text NOT NULL,
  created_at timestamptz NOT NULL
);
INSERT INTO public.teams VALUES ('a', 'Team A'), ('b', 'Team B');
INSERT INTO public.people VALUES ('m', 'Mo'), ('p,1', 'Pat (erased)'), ('q', 'Quinn'), ('r\\s', 'Ros'), ('s', 'Sam');
INSERT INTO public.posts VALUES
  (1, 'a', 'p,1', 'q',    'pat to quinn',        '2026-01-05 10:00:00+00'),
  (2, 'a', 'q',   'p,1',  'quinn to pat',        '2026-01-05 11:00:00+00'),
  (3, 'a', 'p,1', 'p,1',  'pat to self',         '2026-01-06 10:00:00+00'),
  (4, 'a', NULL,  'p,1',  'system note to pat',  '2026-01-07 10:00:00+00'),
  (5, 'a', 'q',   'r\\s', 'quinn to ros',        '2026-01-08 10:00:00+00'),
  (6, 'a', 'r\\s', 'q',   'ros to quinn',        '2026-01-08 11:00:00+00'),
  (7, 'a', 'q',   NULL,   'quinn to all',        '2026-02-01 10:00:00+00'),
  (8, 'b', 's',   'q',    'sam to quinn',        '2026-01-09 10:00:00+00'),
  (9, 'a', NULL,  NULL,   'nobody',              '2026-01-10 10:00:00+00'),
  (10, 'a', 'p,1', 'm',   'pat to mo',           '2026-01-11 10:00:00+00');
`;

const ERASED = 'p,1';

const MAPPING = {
  tables: {
    teams: { class: 'metadata', primaryKey: ['id'], tenant: 'id' },
    people: { class: 'profiles', primaryKey: ['id'], tenant: { literal: 'global' }, author: 'id' },
    posts: {
      class: 'messages',
      primaryKey: ['id'],
      tenant: 'team_id',
      author: ['sender_id', 'target_id'],
      timestamp: { column: 'created_at', type: 'timestamptz' },
    },
  },
};

const TABLES = ['people', 'posts', 'teams'] as const;

async function withClient<T>(url: string, fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

/** Every row of each table as text, sorted (byte order), filtered by `where` (alias t). */
async function rows(url: string, where: (table: string) => string = () => 'true'): Promise<Record<string, string[]>> {
  return withClient(url, async (c) => {
    const out: Record<string, string[]> = {};
    for (const table of TABLES) {
      const { rows: found } = await c.query<{ r: string }>(`SELECT t::text AS r FROM public.${table} t WHERE ${where(table)} ORDER BY t::text COLLATE "C"`);
      out[table] = found.map((r) => r.r);
    }
    return out;
  });
}

/** The test's own statement of the erased person's rows, by the store's columns. */
function naming(table: string): string {
  const lit = `'${ERASED.replaceAll("'", "''")}'`;
  if (table === 'people') return `t.id = ${lit}`;
  if (table === 'posts') return `(t.sender_id IS NOT DISTINCT FROM ${lit} OR t.target_id IS NOT DISTINCT FROM ${lit})`;
  return 'false';
}

describe('subject columns and literal tenants, end to end', () => {
  let template: TestDatabase;
  let env: LetheEnv;
  let rt: Runtime;
  const logLines: string[] = [];
  let configPath = '';
  const run = (...args: string[]) => env.cli([...args, '--config', configPath]);

  beforeAll(async () => {
    template = await createTestDatabase('subjcols_tpl');
    await withClient(template.url, (c) => c.query(DDL));
    env = await createLetheEnv({ template: template.name });
    const raw: RawConfig = { ...env.raw, chatStore: { ...(env.raw['chatStore'] as RawConfig), mapping: MAPPING } };
    configPath = await env.writeConfig('subjects.yaml', raw);
    const sink = new Writable({
      write(chunk: Buffer | string, _encoding, callback) {
        logLines.push(String(chunk));
        callback();
      },
    });
    rt = new Runtime(parseConfig(raw, env.dir), createLogger('warn', sink));
  }, 120_000);
  afterAll(async () => {
    await rt.close();
    await env.cleanup();
    await template.drop();
  });

  it('the server writes each row\'s subject set as encodeSubjects does, and a cell filter key selects exactly its cell', async () => {
    const mapping = parseMapping(MAPPING);
    const columns = ['id', 'team_id', 'sender_id', 'target_id', 'body', 'created_at'];
    const sql = buildCellQuery(mapping, 'posts', columns, 'month');
    const found = await withClient(env.chat.url, (c) =>
      c.query<{ id: number; lethe_author: string | null; sender_id: string | null; target_id: string | null }>(`SELECT id, lethe_author, sender_id, target_id FROM (${sql}) q ORDER BY id`),
    );
    expect(found.rows).toHaveLength(10);
    for (const row of found.rows) {
      const ids = [row.sender_id, row.target_id].filter((v): v is string => v !== null);
      expect(row.lethe_author, `post ${row.id}`).toBe(encodeSubjects(ids));
    }
    const tuple = { tenant: 'a', class: 'messages' as const, period: '2026-01', author: encodeSubjects(['r\\s', 'q']), conversation: null };
    const filtered = buildCellQuery(mapping, 'posts', columns, 'month', { kind: 'cells', keys: [cellFilterKey(tuple)] });
    const picked = await withClient(env.chat.url, (c) => c.query<{ id: number }>(`SELECT id FROM (${filtered}) q ORDER BY id`));
    expect(picked.rows.map((r) => r.id)).toEqual([5, 6]);
  });

  it('lethe init refuses a mapping backup would refuse, with exit 2 and before touching the vault', async () => {
    const { people: _people, ...withoutPeople } = MAPPING.tables;
    const unmapped = await env.writeConfig('unmapped.yaml', { ...env.raw, chatStore: { ...(env.raw['chatStore'] as RawConfig), mapping: { tables: withoutPeople } } });
    const refused = await env.cli(['init', '--json', '--config', unmapped]);
    expectExit(refused, 2);
    expect(jsonOut(refused)).toMatchObject({ error: { code: 'TABLE_UNMAPPED', message: expect.stringContaining('unmapped tables in schema "public": people') as string } });
    const missing = await env.writeConfig('missing.yaml', {
      ...env.raw,
      chatStore: { ...(env.raw['chatStore'] as RawConfig), mapping: { tables: { ...MAPPING.tables, posts: { ...MAPPING.tables.posts, author: ['sender_id', 'recipient_id'] } } } },
    });
    const invalid = await env.cli(['init', '--config', missing]);
    expectExit(invalid, 2);
    expect(invalid.stderr).toContain('tables.posts.author[1]: column "recipient_id" does not exist in "posts"');
    // Nothing changed: the vault has no schema yet, and no master key was written.
    const schemas = await withClient(env.vaultDb.url, (c) => c.query(`SELECT 1 FROM pg_namespace WHERE nspname = 'lethe'`));
    expect(schemas.rowCount).toBe(0);

    const ok = await run('init');
    expectExit(ok, 0);
    expect(ok.stdout).toContain('mapping checked against the chat store: 3 tables to back up');
  }, 60_000);

  it('an erased person leaves no row in any subject column of any snapshot; everyone else restores exactly', async () => {
    const before = await rows(env.chat.url);
    const first = await backup(rt, { actor: 'test' });
    expect(first.cellsSkippedShredded).toBe(0);

    const keys: string[] = [];
    for (const tenant of ['a', 'global']) {
      const requested = await run('erase', 'request', '--tenant', tenant, '--user', ERASED, '--reason', 'GDPR Art. 17', '--actor', 'dpo-one', '--json');
      expectExit(requested, 0);
      const request = jsonOut(requested) as { id: string; keyId: string };
      expect(request.keyId).toBe(userKeyId(tenant, ERASED));
      keys.push(request.keyId);
      if (tenant === 'a') {
        // A hold on Mo keeps the cell {m, p,1} (row 10), which names Mo only as its second
        // subject's partner: the erasure must wait for the hold's release.
        expectExit(await run('hold', 'place', '--case', 'CASE-MO', '--tenant', 'a', '--user', 'm', '--reason', 'litigation', '--actor', 'legal-ann'), 0);
        // Retention planning reads the cell keys under holds: the two-subject cell is one of them.
        const heldKeys = (await (await rt.vault()).lifecycleCellKeys()).map((k) => k.id);
        expect(heldKeys).toContain(cellKeyId({ tenant: 'a', class: 'messages', period: '2026-01', author: encodeSubjects(['m', ERASED]), conversation: null }));
        const held = await run('erase', 'approve', request.id, '--actor', 'dpo-two', '--json');
        expectExit(held, 3);
        expect(jsonOut(held)).toMatchObject({ error: { code: 'REFUSED', rule: 'legal-hold', cases: ['CASE-MO'] } });
        expectExit(await run('hold', 'release', '--case', 'CASE-MO', '--actor', 'legal-ann'), 0);
      }
      const approved = await run('erase', 'approve', request.id, '--actor', 'dpo-two', '--json');
      expectExit(approved, 0);
      expect((jsonOut(approved) as { status: string }).status).toBe('executed');
    }

    // The chat store still holds the person's rows: the next backup skips them, in one line.
    logLines.length = 0;
    const second = await backup(rt, { actor: 'test' });
    expect(second.shreddedKeys.map((k) => k.key)).toEqual([...keys].sort());
    const summaries = logLines.filter((l) => l.includes('not backed up'));
    expect(summaries).toHaveLength(1);
    expect(summaries[0]).toContain(`2 destroyed keys they need (${[...keys].sort().join(', ')})`);

    const expected = await rows(env.chat.url, (t) => `NOT ${naming(t)}`);
    // Rows 1-4 and 10 (posts naming the person as sender, target or both) and their people row go.
    expect(before['posts']?.length).toBe(10);
    expect(expected['posts']?.length).toBe(5);
    expect(expected['people']?.length).toBe(4);
    for (const snapshot of [first.snapshotId, second.snapshotId]) {
      const target = await env.database('subjcols_r');
      const restored = await restore(rt, { snapshot, targetUrl: target.url, replace: false, actor: 'test' });
      // The first snapshot holds the person's four cells, now unreadable: posts {p,1 q} (rows
      // 1 and 2: one subject set), {p,1} (rows 3 and 4), {m p,1} (row 10, where the person is
      // not the first subject) and people; the second never took them.
      expect(restored.cellsShredded, snapshot).toBe(snapshot === first.snapshotId ? 4 : 0);
      expect(await rows(target.url), snapshot).toEqual(expected);
    }
  }, 120_000);
});
