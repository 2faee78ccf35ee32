import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { parseConfig } from '../../../src/config/index.ts';
import type { DestructionCertificate } from '../../../src/lifecycle/certificate.ts';
import { backup, initialize, restore, verify } from '../../../src/jobs/tasks.ts';
import { Runtime } from '../../../src/jobs/runtime.ts';
import { ErrorCode } from '../../../src/errors/index.ts';
import { createLogger } from '../../../src/log/index.ts';
import { parseMapping, subjectRefs, type Mapping } from '../../../src/mapping/index.ts';
import {
  createLetheEnv,
  expectExit,
  filesUnder,
  jsonOut,
  REPO_ROOT,
  type LetheEnv,
  type RawConfig,
  type TestDatabase,
} from '../../helpers/lethe-env.ts';
import { createTestDatabase } from '../../helpers/postgres.ts';
import {
  changeFederatedStore,
  changeTeamStore,
  seedFederatedStore,
  seedTeamStore,
  type FederatedWorld,
  type TeamWorld,
} from '../../fixtures/third-party/rows.ts';

/**
 * Issue 12, item 1: the two complete mappings of docs/mapping.md ("Two complete examples"),
 * read from the docs themselves, run end to end against stores shaped like third-party
 * products (test/fixtures/third-party): init, two backups with changes between, verify, a
 * restore of each snapshot compared row for row (and, for the team store, file for file),
 * then one person's erasure across every tenant under one request, one approval and one
 * certificate, after which no snapshot restores a row of theirs in any mapped subject
 * column and everyone else's rows (and files) restore exactly.
 */

const FIXTURES = join(REPO_ROOT, 'test', 'fixtures', 'third-party');

/** The `chatStore` section of the docs' example block whose first line is `# Example <label>`. */
async function docExample(label: 'A' | 'B'): Promise<{ mapping: unknown; blobStores?: Record<string, unknown> }> {
  const text = await readFile(join(REPO_ROOT, 'docs', 'mapping.md'), 'utf8');
  const blocks = [...text.matchAll(/^```yaml\n(# Example ([AB])\b[^\n]*\n[\s\S]*?)^```$/gm)].filter((m) => m[2] === label);
  if (blocks.length !== 1) throw new Error(`docs/mapping.md has ${blocks.length} blocks starting "# Example ${label}", expected 1`);
  const doc = parseYaml(blocks[0]?.[1] ?? '') as { chatStore?: { mapping?: unknown; blobStores?: Record<string, unknown> } };
  if (doc.chatStore?.mapping === undefined) throw new Error(`docs/mapping.md example ${label} has no chatStore.mapping`);
  return { mapping: doc.chatStore.mapping, ...(doc.chatStore.blobStores === undefined ? {} : { blobStores: doc.chatStore.blobStores }) };
}

async function withClient<T>(url: string, fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

/** A template database holding `ddlFile` (from the fixtures) and whatever `seed` adds. */
async function storeTemplate<W>(prefix: string, ddlFile: string, seed: (url: string) => Promise<W>): Promise<{ db: TestDatabase; world: W }> {
  const db = await createTestDatabase(prefix);
  try {
    const ddl = await readFile(join(FIXTURES, ddlFile), 'utf8');
    await withClient(db.url, (c) => c.query(ddl));
    return { db, world: await seed(db.url) };
  } catch (err) {
    await db.drop();
    throw err;
  }
}

/** Every row of every table in `tables`, as text, sorted (byte order): what a restore must reproduce. */
type Rows = Record<string, string[]>;

async function tableRows(url: string, tables: readonly string[], where: (table: string) => string = () => 'true'): Promise<Rows> {
  return withClient(url, async (client) => {
    const out: Rows = {};
    for (const table of tables) {
      const { rows } = await client.query<{ r: string }>(
        `SELECT t::text AS r FROM public.${client.escapeIdentifier(table)} t WHERE ${where(table)} ORDER BY t::text COLLATE "C"`,
      );
      out[table] = rows.map((r) => r.r);
    }
    return out;
  });
}

/** sha256 of every file under `dir`, by relative path. */
async function fileDigests(dir: string, only?: readonly string[]): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const path of only ?? (await filesUnder(dir))) {
    out[path] = createHash('sha256').update(await readFile(join(dir, path))).digest('hex');
  }
  return out;
}

/**
 * The test's own statement of which rows are a person's, by the store's columns (not by
 * lethe's mapping): `column = U` for each person column of the table, and for a table that
 * names people only inside JSON (federated `event_json`) the JSON's own fields.
 */
type PersonColumns = Readonly<Record<string, readonly string[]>>;

function personFilter(columns: PersonColumns, table: string, person: string): string {
  const lit = `'${person.replaceAll("'", "''")}'`;
  if (table === 'event_json') return `(t.json::jsonb ->> 'sender' = ${lit} OR t.json::jsonb ->> 'state_key' = ${lit})`;
  const cols = columns[table] ?? [];
  return cols.length === 0 ? 'false' : `(${cols.map((c) => `t.${c} IS NOT DISTINCT FROM ${lit}`).join(' OR ')})`;
}

/** The mapping's subject columns of base tables, as `table.column`, sorted. */
function mappedSubjectColumns(mapping: Mapping): string[] {
  const out: string[] = [];
  for (const [table, tm] of Object.entries(mapping.tables)) {
    for (const ref of subjectRefs(tm)) if (!ref.includes('.')) out.push(`${table}.${ref}`);
  }
  return out.sort();
}

interface Harness {
  readonly env: LetheEnv;
  readonly rt: Runtime;
  readonly tables: readonly string[];
  close(): Promise<void>;
}

/**
 * A lethe deployment over a clone of `template` whose config takes the docs' example
 * mapping verbatim; only the connection settings (database URL, blob store URLs) are this
 * test's own. Written as the config file for the CLI and opened as an in-process runtime.
 */
async function harness(template: TestDatabase, example: { mapping: unknown; blobStores?: Record<string, unknown> }, blobUrls: Record<string, string>): Promise<Harness> {
  const env = await createLetheEnv({ template: template.name });
  const blobStores: Record<string, unknown> = {};
  for (const [name, store] of Object.entries(example.blobStores ?? {})) {
    const url = blobUrls[name];
    if (url === undefined) throw new Error(`no test URL for blob store ${name}`);
    blobStores[name] = { ...(store as Record<string, unknown>), url };
  }
  const raw: RawConfig = {
    ...env.raw,
    chatStore: { database: { url: env.chat.url }, mapping: example.mapping, ...(example.blobStores === undefined ? {} : { blobStores }) },
  };
  await env.writeConfig('lethe.yaml', raw);
  const rt = new Runtime(parseConfig(raw, env.dir), createLogger('warn'));
  const tables = [...Object.keys(parseMapping(example.mapping).tables), ...parseMapping(example.mapping).system].sort();
  return {
    env,
    rt,
    tables,
    close: async () => {
      await rt.close();
      await env.cleanup();
    },
  };
}

/** Restores `snapshot` into a new database of the environment; returns its URL. */
async function restoreInto(h: Harness, snapshot: string, blobTarget?: string): Promise<string> {
  const db = await h.env.database('tp_restore');
  await restore(h.rt, { snapshot, targetUrl: db.url, replace: false, actor: 'test', ...(blobTarget === undefined ? {} : { blobTarget }) });
  return db.url;
}

/** How the test asks for the erasure: `--subject P --all-tenants`, or `--tenant T --subject P` (one tenant). */
type EraseHow = { readonly allTenants: true } | { readonly tenant: string };

/** A deletion request for `person` by alice, approved by bob (both through the CLI); returns the certificate. */
async function erasePerson(h: Harness, person: string, how: EraseHow): Promise<{ requestId: string; certificate: DestructionCertificate }> {
  const config = ['--config', h.env.configPath];
  const what = 'allTenants' in how ? ['--subject', person, '--all-tenants'] : ['--tenant', how.tenant, '--subject', person];
  const request = await h.env.cli(['erase', 'request', ...config, ...what, '--reason', 'GDPR Art. 17 #12', '--actor', 'alice', '--json']);
  expectExit(request, 0);
  const { id } = jsonOut(request) as { id: string };
  const approve = await h.env.cli(['erase', 'approve', id, ...config, '--actor', 'bob', '--json']);
  expectExit(approve, 0);
  const { certificate } = jsonOut(approve) as { certificate: DestructionCertificate };
  return { requestId: id, certificate };
}

/** One of the docs' examples, and what the test needs to know of its store. */
interface Example<W> {
  readonly label: 'A' | 'B';
  readonly ddl: string;
  /** Seeds the template store; `fileDir` is the file store's directory (blob store `files`). */
  seed(url: string, fileDir: string): Promise<W>;
  /** Changes the store between the first and the second backup. */
  change(url: string, fileDir: string, world: W): Promise<void>;
  /** The person the test erases. */
  subject(world: W): string;
  readonly erase: EraseHow;
  /** The tenants of the user keys the erasure must destroy (as in key ids, percent-encoded). */
  erasedTenants(world: W): string[];
  /** The store's person columns by table, written from the DDL (see personFilter). */
  readonly personColumns: PersonColumns;
  /** Whether the store keeps file bytes in the blob store `files`. */
  readonly files: boolean;
  /** Run `lethe init` as a child process (else in process: both check the mapping against the store). */
  readonly initByCli: boolean;
  /** Checks that the seeded store has the shapes the example is about. */
  shapes(url: string, world: W): Promise<void>;
}

/** The first column of the first row of `sql`, as a number. */
async function count(url: string, sql: string, params: unknown[] = []): Promise<number> {
  return withClient(url, async (c) => Number((await c.query<{ n: string }>(sql, params)).rows[0]?.n));
}

/**
 * The end-to-end run of one example (see the module comment): each `it` is one step, in
 * order, sharing one environment.
 */
function runExample<W>(ex: Example<W>): () => Harness {
  let template: TestDatabase;
  let world: W;
  let fileDir: string;
  let h: Harness;
  let mapping: Mapping;
  const snapshots: string[] = [];
  /** The store's rows as each snapshot saw them, all and without the erased person's. */
  const rowsAt: Rows[] = [];
  const othersAt: Rows[] = [];
  /** The files the store held at each snapshot (sha256 by path). */
  const filesAt: Record<string, string>[] = [];
  const theirs = (table: string): string => personFilter(ex.personColumns, table, ex.subject(world));
  const others = (table: string): string => `NOT ${theirs(table)}`;

  const snapshotNow = async (): Promise<void> => {
    snapshots.push((await backup(h.rt, { actor: 'test' })).snapshotId);
    rowsAt.push(await tableRows(h.env.chat.url, h.tables));
    othersAt.push(await tableRows(h.env.chat.url, h.tables, others));
    filesAt.push(ex.files ? await fileDigests(fileDir) : {});
  };
  /** Restores `snapshot` (files into a directory of their own); returns the database URL and that directory. */
  const restoreSnapshot = async (snapshot: string): Promise<{ url: string; blobs: string }> => {
    const blobs = await mkdtemp(join(h.env.dir, 'blobs-'));
    return { url: await restoreInto(h, snapshot, ex.files ? `file://${blobs}` : undefined), blobs };
  };

  beforeAll(async () => {
    fileDir = await mkdtemp(join(tmpdir(), 'lethe-third-party-files-'));
    ({ db: template, world } = await storeTemplate(`tp_${ex.label.toLowerCase()}_tpl`, ex.ddl, (url) => ex.seed(url, fileDir)));
    const example = await docExample(ex.label);
    mapping = parseMapping(example.mapping);
    h = await harness(template, example, { files: `file://${fileDir}` });
  }, 120_000);

  afterAll(async () => {
    await h.close();
    await template.drop();
    await rm(fileDir, { recursive: true, force: true });
  });

  it('maps every person column of the store as a subject', () => {
    const expected = Object.entries(ex.personColumns).flatMap(([t, cols]) => cols.map((c) => `${t}.${c}`)).sort();
    expect(mappedSubjectColumns(mapping)).toEqual(expected);
  });

  it('seeds a store with the shapes the example is about', async () => {
    await ex.shapes(h.env.chat.url, world);
  });

  it('init accepts the mapping', async () => {
    // Through the CLI for one example, as an operator runs it; in process for the other, to save a start-up.
    if (ex.initByCli) expectExit(await h.env.cli(['init', '--config', h.env.configPath, '--json']), 0);
    else await initialize(h.rt, 'test');
  });

  it('backs up twice with changes between, and verifies both snapshots', async () => {
    await snapshotNow();
    await ex.change(h.env.chat.url, fileDir, world);
    await snapshotNow();
    expect(rowsAt[1]).not.toEqual(rowsAt[0]);
    for (const snapshot of snapshots) {
      const result = await verify(h.rt, { snapshot, actor: 'test' });
      expect(result.ok, JSON.stringify(result.findings)).toBe(true);
    }
  });

  it('restores each snapshot row for row (and file for file)', async () => {
    expect(snapshots).toHaveLength(2);
    for (const [i, snapshot] of snapshots.entries()) {
      const { url, blobs } = await restoreSnapshot(snapshot);
      expect(await tableRows(url, h.tables), snapshot).toEqual(rowsAt[i]);
      if (ex.files) expect(await fileDigests(blobs), snapshot).toEqual(filesAt[i]);
    }
  });

  it('erases one person with one request, one approval and one certificate', async () => {
    const { requestId, certificate } = await erasePerson(h, ex.subject(world), ex.erase);
    expect(certificate.request.id).toBe(requestId);
    const tenants = new Set(certificate.keysDestroyed.map((k) => /^user:([^/]*)\//.exec(k.keyId)?.[1]));
    expect(tenants).toEqual(new Set(ex.erasedTenants(world)));
    // The certificate names every column the mapping reads the person from, joined ones too.
    const named = (certificate.subjectColumns?.tables ?? []).map((t) => `${t.table}: ${t.columns.join(', ')}`).sort();
    const mapped = Object.entries(mapping.tables).filter(([, tm]) => subjectRefs(tm).length > 0).map(([t, tm]) => `${t}: ${subjectRefs(tm).join(', ')}`).sort();
    expect(named).toEqual(mapped);
    if ('allTenants' in ex.erase) {
      expect(certificate.allTenants?.tenants.map((t) => [encodeURIComponent(t.tenant), t.outcome]).sort()).toEqual(ex.erasedTenants(world).map((t) => [t, 'destroyed']).sort());
    }
    await snapshotNow();
  }, 120_000);

  it('restores no row (or file) of theirs from any snapshot, and everyone else\'s exactly', async () => {
    const theirFiles = new Set<string>();
    if (ex.files) {
      const { rows } = await withClient(h.env.chat.url, (c) => c.query<{ path: string }>('SELECT path FROM public.file_info WHERE creator_id = $1', [ex.subject(world)]));
      for (const r of rows) theirFiles.add(r.path);
      expect(theirFiles.size).toBeGreaterThan(0);
    }
    expect(snapshots).toHaveLength(3);
    for (const [i, snapshot] of snapshots.entries()) {
      // Before the erasure the store held rows of theirs in every table the filter names.
      if (i === 0) for (const [table, rows] of Object.entries(rowsAt[0] ?? {})) if (ex.personColumns[table] !== undefined || table === 'event_json') expect((rows.length), table).toBeGreaterThan((othersAt[0]?.[table] ?? []).length);
      const { url, blobs } = await restoreSnapshot(snapshot);
      const left = await tableRows(url, h.tables, theirs);
      for (const [table, rows] of Object.entries(left)) expect(rows, `${snapshot} ${table}`).toEqual([]);
      expect(await tableRows(url, h.tables, others), snapshot).toEqual(othersAt[i]);
      if (ex.files) {
        const othersFiles = Object.fromEntries(Object.entries(filesAt[i] ?? {}).filter(([p]) => !theirFiles.has(p)));
        expect(await fileDigests(blobs), snapshot).toEqual(othersFiles);
      }
    }
  }, 120_000);
  return () => h;
}

describe('example A of docs/mapping.md: a team-based store', () => {
  runExample<TeamWorld>({
    label: 'A',
    ddl: 'team.sql',
    seed: (url, fileDir) => seedTeamStore(url, fileDir),
    change: changeTeamStore,
    subject: (w) => w.subject,
    erase: { allTenants: true },
    // Their keys in each of their three teams, in the people directory and among the direct channels.
    erasedTenants: (w) => [...Object.values(w.teams), 'people', 'direct'].map(encodeURIComponent),
    personColumns: {
      users: ['id'],
      team_members: ['user_id'],
      channels: ['creator_id', 'dm_partner_id'],
      channel_members: ['user_id'],
      posts: ['user_id'],
      reactions: ['user_id'],
      file_info: ['creator_id'],
    },
    files: true,
    initByCli: true,
    shapes: async (url, w) => {
      expect(await count(url, 'SELECT count(*) AS n FROM public.team_members WHERE user_id = $1', [w.subject])).toBe(3);
      expect(await count(url, `SELECT count(*) AS n FROM public.channels WHERE team_id = ''`)).toBe(3);
      expect(await count(url, 'SELECT count(*) AS n FROM public.posts WHERE delete_at <> 0')).toBeGreaterThan(5);
      expect(await count(url, 'SELECT count(*) AS n FROM public.posts')).toBe(240);
      expect(await count(url, 'SELECT count(*) AS n FROM public.file_info WHERE creator_id = $1', [w.subject])).toBeGreaterThan(0);
      expect(await count(url, 'SELECT count(*) AS n FROM public.users WHERE nickname IS NULL')).toBeGreaterThan(0);
    },
  });
});

describe('example B of docs/mapping.md: a federated store', () => {
  const harnessOf = runExample<FederatedWorld>({
    label: 'B',
    ddl: 'federated.sql',
    seed: (url) => seedFederatedStore(url),
    change: (url, _dir, world) => changeFederatedStore(url, world),
    subject: (w) => w.subject,
    erase: { tenant: 'example.org' },
    erasedTenants: () => ['example.org'],
    personColumns: {
      users: ['name'],
      profiles: ['full_user_id'],
      rooms: ['creator'],
      events: ['sender', 'state_key'],
      room_memberships: ['sender', 'user_id'],
    },
    files: false,
    initByCli: false,
    shapes: async (url, w) => {
      // An invite to the subject sent by someone else, and one the subject sent.
      expect(await count(url, `SELECT count(*) AS n FROM public.room_memberships WHERE user_id = $1 AND sender <> $1`, [w.subject])).toBeGreaterThan(0);
      expect(await count(url, `SELECT count(*) AS n FROM public.room_memberships WHERE sender = $1 AND user_id <> $1`, [w.subject])).toBeGreaterThan(0);
      expect(await count(url, `SELECT count(*) AS n FROM public.events WHERE state_key = ''`)).toBeGreaterThan(0);
      expect(await count(url, 'SELECT count(*) AS n FROM public.events WHERE state_key IS NULL')).toBeGreaterThan(150);
      expect(await count(url, 'SELECT count(*) AS n FROM public.event_json')).toBe(await count(url, 'SELECT count(*) AS n FROM public.events'));
    },
  });

  it('refuses to back up a JSON body whose event is missing, naming the table and the count (as the docs say)', async () => {
    const h = harnessOf();
    const orphan = (c: pg.Client, sql: string): Promise<unknown> => c.query(sql, ['$orphan-event', '!nowhere:example.org']);
    await withClient(h.env.chat.url, (c) => orphan(c, `INSERT INTO public.event_json (event_id, room_id, internal_metadata, json) VALUES ($1, $2, '{}', '{}')`));
    try {
      const refused = await backup(h.rt, { actor: 'test' }).then(
        () => null,
        (err: unknown) => err,
      );
      expect(refused).toMatchObject({ code: ErrorCode.MAPPING_INVALID });
      expect((refused as Error).message).toMatch(/event_json: 1 rows have no match/);
    } finally {
      await withClient(h.env.chat.url, (c) => orphan(c, 'DELETE FROM public.event_json WHERE event_id = $1 AND room_id = $2'));
    }
  });
});
