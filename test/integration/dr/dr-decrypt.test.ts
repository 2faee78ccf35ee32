// Disaster recovery without lethe: runbooks/dr-decrypt.sh reads the real snapshots of a demo
// (lethe.manifest.v4: a tree whose second snapshot references segments of the first; keys
// export v2) with the stock age CLI, openssl, jq, gzip, xxd and coreutils, and what it
// decrypts is exactly the chat store's rows. v3 manifests (cells inline) are still read.
import { createHash, randomBytes } from 'node:crypto';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import {
  chmod,
  copyFile,
  cp,
  mkdir,
  mkdtemp,
  readdir,
  readFile,
  rm,
  stat,
  symlink,
  writeFile,
} from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gunzipSync, gzipSync } from 'node:zlib';
import pg from 'pg';
import pgCopyStreams from 'pg-copy-streams';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { generateSigningKey, publicKeyToPem, sign } from '../../../src/crypto/index.ts';
import { EmbeddedPostgres } from '../../../src/embedded/postgres.ts';
import {
  ManifestWriter,
  SegmentWriter,
  newSegmentKey,
  type CellEntry,
  type EncapsulationEntry,
  type SegmentEntry,
  type SnapshotHeader,
} from '../../../src/manifest/index.ts';
import { schemaToDdl, type SchemaDescription } from '../../../src/mapping/index.ts';
import { freePort, portIsFree } from '../../../src/util/net.ts';
import { holdDemoDefaultPort } from '../../helpers/ports.ts';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const SCRIPT = join(ROOT, 'runbooks', 'dr-decrypt.sh');
const CLI = join(ROOT, 'bin', 'lethe.js');

interface Result {
  readonly code: number | null;
  readonly stdout: Buffer;
  readonly stderr: string;
}

/** Runs a program without a shell; never rejects on a non-zero exit. */
async function run(
  file: string,
  args: readonly string[],
  env?: NodeJS.ProcessEnv,
): Promise<Result> {
  const child = spawn(file, args, { stdio: ['ignore', 'pipe', 'pipe'], env: env ?? process.env });
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  child.stdout.on('data', (chunk: Buffer) => out.push(chunk));
  child.stderr.on('data', (chunk: Buffer) => err.push(chunk));
  const [code] = (await once(child, 'close')) as [number | null];
  return { code, stdout: Buffer.concat(out), stderr: Buffer.concat(err).toString('utf8') };
}

async function runOk(file: string, args: readonly string[]): Promise<Buffer> {
  const result = await run(file, args);
  if (result.code !== 0)
    throw new Error(`${file} ${args.join(' ')} exited ${String(result.code)}: ${result.stderr}`);
  return result.stdout;
}

/** A v4 manifest as stored, and the cells of its tree (read by {@link readTree}). */
interface Manifest {
  readonly snapshot: {
    readonly id: string;
    readonly tables: { name: string; columns: string[] }[];
  };
  readonly schema: SchemaDescription;
  readonly segments: SegmentEntry[];
  readonly encapsulations: EncapsulationEntry[];
  readonly totals: { cells: number; segments: number; segmentsWritten: number };
  /** Every cell of every segment, in manifest order. */
  readonly cells: CellEntry[];
  /** The segment each cell is listed in, by cell id. */
  readonly segmentOf: ReadonlyMap<string, SegmentEntry>;
}

/** A stored manifest (`snapshots/<id>.json.gz`) as text: the signed, uncompressed bytes. */
async function manifestText(path: string): Promise<string> {
  return gunzipSync(await readFile(path)).toString('utf8');
}

/** `<table>/<tenant>/<period>`: the segment a cell id belongs to (src/cells/ids.ts). */
function segmentIdOf(cellId: string): string {
  return cellId.split('/').slice(0, 3).join('/');
}

/**
 * A v4 manifest and its tree, read independently of lethe's reader: each segment object of
 * `objects` checked against the size and sha256 the manifest lists, and its header against
 * the entry, so the test's expectations come from the bytes the script reads too.
 */
async function readTree(path: string, objects: string): Promise<Manifest> {
  const manifest = JSON.parse(await manifestText(path)) as Omit<Manifest, 'cells' | 'segmentOf'> & { format: string };
  expect(manifest.format).toBe('lethe.manifest.v4');
  const cells: CellEntry[] = [];
  const segmentOf = new Map<string, SegmentEntry>();
  for (const segment of manifest.segments) {
    const stored = await readFile(join(objects, segment.key));
    expect(stored.length).toBe(segment.size);
    expect(createHash('sha256').update(stored).digest('hex')).toBe(segment.sha256);
    const object = JSON.parse(gunzipSync(stored).toString('utf8')) as { format: string; segment: unknown; cells: CellEntry[] };
    expect(object.format).toBe('lethe.segment.v1');
    const { id, table, tenant, period, snapshot } = segment;
    expect(object.segment).toEqual({ id, table, tenant, period, snapshot });
    expect(object.cells).toHaveLength(segment.cells);
    for (const cell of object.cells) {
      cells.push(cell);
      segmentOf.set(cell.id, segment);
    }
  }
  return { ...manifest, cells, segmentOf };
}

/**
 * The period, author and conversation of a cell, from its id
 * `<table>/<tenant>/<period>/<author>/<conversation>` (components percent-encoded, `-` for
 * none), as src/cells/ids.ts cellId names cells.
 */
function tupleOf(cell: CellEntry): { period: string; author: string | null; conversation: string | null } {
  const [, , period = '', author = '', conversation = ''] = cell.id.split('/');
  const part = (value: string): string | null => (value === '-' ? null : decodeURIComponent(value));
  return { period: decodeURIComponent(period), author: part(author), conversation: part(conversation) };
}

/**
 * Re-signs an edited manifest text with `key`, as an attacker with a signing key of their
 * own would: the body's sha256 and the signature line are made consistent again, under the
 * format its first line names.
 */
function resign(text: string, key: { privateKey: Uint8Array }): string {
  const lines = text.split('\n');
  const last = lines.at(-2) ?? '';
  const body = `${lines.slice(0, -2).join('\n')}\n`;
  const format = /^\{"format":"([^"]+)",$/.exec(lines[0] ?? '')?.[1] ?? '';
  const bodySha256 = createHash('sha256').update(body, 'utf8').digest('hex');
  const old = JSON.parse(last.slice('"signature":'.length, -1)) as { keyId: string };
  const value = sign(key.privateKey, Buffer.from(`${format}\n${bodySha256}\n`, 'utf8'));
  return `${body}"signature":${JSON.stringify({ algorithm: 'ed25519', keyId: old.keyId, sha256: bodySha256, value })}}\n`;
}

/** Everything a writer emits, once it ends (the writer is driven meanwhile by `write`). */
async function written(stream: AsyncIterable<unknown>, write: () => Promise<void>): Promise<Buffer> {
  const chunks: Buffer[] = [];
  const collected = (async () => {
    for await (const chunk of stream) chunks.push(chunk as Buffer);
  })();
  await write();
  await collected;
  return Buffer.concat(chunks);
}

/**
 * Stores `bytes` as a new segment object under `objects` and returns the manifest's entry
 * for it; `counts` overrides what the entry says (to list something the object is not).
 */
async function storeSegment(
  objects: string,
  bytes: Buffer,
  segment: { id: string; table: string; tenant: string | null; period: string; snapshot: string },
  cells: readonly CellEntry[],
  counts: Partial<Pick<SegmentEntry, 'cells' | 'rows' | 'bytesPlain'>> = {},
): Promise<SegmentEntry> {
  const key = newSegmentKey(randomBytes(16));
  await mkdir(dirname(join(objects, key)), { recursive: true });
  await writeFile(join(objects, key), bytes);
  return {
    ...segment,
    key,
    sha256: createHash('sha256').update(bytes).digest('hex'),
    size: bytes.length,
    cells: cells.length,
    rows: cells.reduce((n, c) => n + c.rows, 0),
    bytesPlain: cells.reduce((n, c) => n + c.bytesPlain, 0),
    shredded: 0,
    ...counts,
  };
}

/** The header of the segment of `cells` (all of one table, tenant and period) written by `snapshot`. */
function segmentOfCells(cells: readonly CellEntry[], snapshot: string): { id: string; table: string; tenant: string | null; period: string; snapshot: string } {
  const [first] = cells;
  if (first === undefined) throw new Error('a segment needs a cell');
  const id = segmentIdOf(first.id);
  return { id, table: first.table, tenant: first.tenant, period: decodeURIComponent(id.split('/')[2] ?? ''), snapshot };
}

/**
 * Writes a v4 snapshot as the backup does (SegmentWriter and ManifestWriter, gzip), signed
 * by `key`: one segment object under `objects` for the given cells (of one segment), or for
 * `segment` as given, and the manifest listing it.
 */
async function writeManifest(
  path: string,
  parts: {
    header: SnapshotHeader;
    schema: SchemaDescription;
    objects?: string;
    cells?: readonly CellEntry[];
    segment?: SegmentEntry;
    encapsulations: readonly EncapsulationEntry[];
  },
  key: { privateKey: Uint8Array },
): Promise<SegmentEntry | undefined> {
  let segment = parts.segment;
  const cells = parts.cells ?? [];
  if (segment === undefined && cells.length > 0) {
    if (parts.objects === undefined) throw new Error('segments need an objects directory');
    const header = segmentOfCells(cells, parts.header.id);
    const writer = new SegmentWriter(header);
    const bytes = await written(writer.stream, async () => {
      for (const cell of cells) await writer.cell(cell);
      writer.finish();
    });
    segment = await storeSegment(parts.objects, bytes, header, cells);
  }
  const writer = new ManifestWriter(parts.header, parts.schema);
  const bytes = await written(writer.stream, async () => {
    if (segment !== undefined) await writer.segment(segment);
    writer.finish(
      parts.encapsulations,
      { bytesStored: 0, cellsWritten: segment?.cells ?? 0, segmentsWritten: segment === undefined ? 0 : 1, fullRead: true },
      new Date('2026-01-01T00:00:01.000Z'),
      (message) => ({ keyId: 'test', value: sign(key.privateKey, message) }),
    );
  });
  await writeFile(path, bytes);
  return segment;
}

/**
 * A v3 manifest (cells inline, as lethe before the tree wrote them), signed by `key`: the
 * layout of docs/format.md, built here because lethe no longer writes v3.
 */
function v3Manifest(
  header: SnapshotHeader,
  schema: SchemaDescription,
  cells: readonly CellEntry[],
  encapsulations: readonly EncapsulationEntry[],
  key: { privateKey: Uint8Array },
): Buffer {
  const list = (entries: readonly unknown[]): string => entries.map((e) => JSON.stringify(e)).join(',\n') + (entries.length > 0 ? '\n' : '');
  const rowsByTable: Record<string, number> = {};
  for (const c of cells) rowsByTable[c.table] = (rowsByTable[c.table] ?? 0) + c.rows;
  const totals = {
    completedAt: '2026-01-01T00:00:01.000Z',
    cells: cells.length,
    rows: cells.reduce((n, c) => n + c.rows, 0),
    bytesPlain: cells.reduce((n, c) => n + c.bytesPlain, 0),
    bytesStored: 0,
    cellsReused: 0,
    rowsByTable,
  };
  const body =
    `{"format":"lethe.manifest.v3",\n"snapshot":${JSON.stringify(header)},\n"schema":${JSON.stringify(schema)},\n` +
    `"cells":[\n${list(cells)}],\n"encapsulations":[\n${list(encapsulations)}],\n"totals":${JSON.stringify(totals)},\n`;
  const bodySha256 = createHash('sha256').update(body, 'utf8').digest('hex');
  const value = sign(key.privateKey, Buffer.from(`lethe.manifest.v3\n${bodySha256}\n`, 'utf8'));
  return gzipSync(`${body}"signature":${JSON.stringify({ algorithm: 'ed25519', keyId: 'test', sha256: bodySha256, value })}}\n`);
}

/**
 * The source rows of a cell, as COPY text in primary-key order: the rows whose tenant,
 * period (UTC month), author and conversation are the cell's, written out independently
 * of lethe's mapping code from the reference schema's definitions.
 */
function sourceQuery(
  cell: CellEntry,
  columns: readonly string[],
): { sql: string; params: string[] } {
  const cols = columns.map((c) => `t."${c}"`).join(', ');
  const month = (ts: string): string => `to_char(${ts}, 'YYYY-MM')`;
  const fromMs = (col: string): string =>
    `(TIMESTAMP '1970-01-01' + ${col} * INTERVAL '1 millisecond')`;
  const tenant = cell.tenant ?? '';
  const { period, author, conversation: inConversation } = tupleOf(cell);
  const conversation = inConversation ?? '';
  switch (cell.table) {
    case 'messages':
      return {
        sql: `SELECT ${cols} FROM messages t JOIN conversations c ON c.id = t.conversation_id
               WHERE c.tenant_id::text = $1 AND ${month(`t.created_at AT TIME ZONE 'UTC'`)} = $2
                 AND t.sender_id::text = $3 AND t.conversation_id::text = $4 ORDER BY t.id`,
        params: [tenant, period, author ?? '', conversation],
      };
    case 'attachments':
      return {
        sql: `SELECT ${cols} FROM attachments t JOIN messages m ON m.id = t.message_id
               WHERE t.tenant_id::text = $1 AND ${month(fromMs('t.created_at_ms'))} = $2
                 AND t.uploader_id::text = $3 AND m.conversation_id::text = $4 ORDER BY t.id`,
        params: [tenant, period, author ?? '', conversation],
      };
    case 'users':
      return {
        sql: `SELECT ${cols} FROM users t WHERE t.tenant_id::text = $1 AND t.id::text = $2 ORDER BY t.id`,
        params: [tenant, author ?? ''],
      };
    case 'tenants':
      return { sql: `SELECT ${cols} FROM tenants t WHERE t.id::text = $1`, params: [tenant] };
    default:
      throw new Error(`no source query for table ${cell.table}`);
  }
}

/** `COPY (query) TO STDOUT` with parameters inlined as literals (COPY takes none). */
async function copyOut(
  client: pg.Client,
  sql: string,
  params: readonly string[] = [],
): Promise<Buffer> {
  const inlined = sql.replace(/\$(\d+)/g, (_m, n: string) =>
    client.escapeLiteral(params[Number(n) - 1] ?? ''),
  );
  const chunks: Buffer[] = [];
  const stream = client.query(pgCopyStreams.to(`COPY (${inlined}) TO STDOUT`));
  for await (const chunk of stream as AsyncIterable<Buffer>) chunks.push(chunk);
  return Buffer.concat(chunks);
}

async function copyIn(
  client: pg.Client,
  table: string,
  columns: readonly string[],
  data: Buffer,
): Promise<void> {
  const stream = client.query(
    pgCopyStreams.from(`COPY "${table}" (${columns.map((c) => `"${c}"`).join(', ')}) FROM STDIN`),
  );
  stream.end(data);
  await once(stream, 'finish');
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

function lineCount(data: Buffer): number {
  let n = 0;
  for (const byte of data) if (byte === 0x0a) n += 1;
  return n;
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

/** Writes a keys export laid out as `lethe keys export` writes it: one key per line. */
async function writeExport(path: string, exported: { dimensionKeys: unknown[]; [member: string]: unknown }): Promise<void> {
  const { dimensionKeys, ...header } = exported;
  const head = JSON.stringify(header).slice(0, -1);
  const keys = dimensionKeys.map((k) => JSON.stringify(k)).join(',\n');
  await writeFile(path, `${head},"dimensionKeys":[\n${keys}\n]}\n`, { mode: 0o600, flag: 'wx' });
}

/** A schema with every construct schemaToDdl handles, in a schema whose name needs quoting. */
const SYNTHETIC_SCHEMA: SchemaDescription = {
  schema: 'dr "odd" schema',
  enums: [{ name: 'mood', labels: ["it's", 'back\\slash', 'plain'] }],
  sequences: [
    {
      name: 'notes_id_seq',
      table: 'notes',
      column: 'id',
      identity: false,
      type: 'integer',
      start: '-1',
      increment: '-1',
      min: '-2147483648',
      max: '-1',
      cache: '1',
      cycle: false,
    },
    {
      name: 'tags_id_seq',
      table: 'tags',
      column: 'id',
      identity: true,
      type: 'bigint',
      start: '100',
      increment: '5',
      min: '1',
      max: '9223372036854775807',
      cache: '10',
      cycle: true,
    },
  ],
  tables: [
    {
      name: 'notes',
      columns: [
        {
          name: 'id',
          type: 'integer',
          notNull: true,
          default: "nextval('notes_id_seq'::regclass)",
          collation: null,
          identity: null,
          generated: null,
        },
        {
          name: 'title',
          type: 'text',
          notNull: true,
          default: null,
          collation: 'C',
          identity: null,
          generated: null,
        },
        {
          name: 'title_len',
          type: 'integer',
          notNull: false,
          default: null,
          collation: null,
          identity: null,
          generated: 'length(title)',
        },
        {
          name: 'mood',
          type: 'mood',
          notNull: false,
          default: "'plain'::mood",
          collation: null,
          identity: null,
          generated: null,
        },
      ],
      constraints: [
        { name: 'notes_pkey', type: 'p', definition: 'PRIMARY KEY (id)' },
        { name: 'notes_title_check', type: 'c', definition: "CHECK ((title <> ''::text))" },
      ],
      indexes: [{ name: 'notes_title_idx', unique: true, using: 'btree (lower(title))' }],
    },
    {
      name: 'tags',
      columns: [
        {
          name: 'id',
          type: 'bigint',
          notNull: true,
          default: null,
          collation: null,
          identity: 'always',
          generated: null,
        },
        {
          name: 'note_id',
          type: 'integer',
          notNull: false,
          default: null,
          collation: null,
          identity: null,
          generated: null,
        },
      ],
      constraints: [
        {
          name: 'tags_note_fkey',
          type: 'f',
          definition: 'FOREIGN KEY (note_id) REFERENCES notes(id)',
        },
        { name: 'tags_pkey', type: 'p', definition: 'PRIMARY KEY (id)' },
      ],
      indexes: [],
    },
  ],
};

const SYNTHETIC_HEADER: SnapshotHeader = {
  id: '',
  createdAt: '2026-01-01T00:00:00.000Z',
  previous: null,
  source: { databaseTime: '2026-01-01T00:00:00.000Z', transactionSnapshot: '1:1:', serverVersion: '15' },
  granularity: 'month',
  masterRecipient: 'age1synthetic',
  tables: [],
};

describe('runbooks/dr-decrypt.sh: a demo snapshot read with stock tools', () => {
  let dir = '';
  let releaseDemoPort: () => Promise<void> = () => Promise.resolve();
  let server: EmbeddedPostgres | undefined;
  let chat: pg.Client | undefined;
  let keysExport: string;
  let objects: string;
  let masterKey: string;
  /** The backup signing key's public half, as `lethe init` wrote it beside the key file (the escrow copy). */
  let signingKey: string;
  let manifestFiles: [first: string, second: string];
  let manifests: [first: Manifest, second: Manifest];

  const admin = (): pg.Client => {
    if (chat === undefined) throw new Error('chat store not connected');
    return chat;
  };

  const columnsOf = (table: string): string[] => {
    const found = manifests[1].snapshot.tables.find((t) => t.name === table);
    if (found === undefined) throw new Error(`table ${table} not in the manifest`);
    return found.columns;
  };

  const decrypt = (
    manifest: string,
    cell: string,
    extra: readonly string[] = [],
    exportFile = keysExport,
    objectsDir = objects,
    signingKeyFile = signingKey,
  ): Promise<Result> =>
    run(SCRIPT, [
      '--signing-key',
      signingKeyFile,
      '--master-key',
      masterKey,
      '--manifest',
      manifest,
      '--objects',
      objectsDir,
      '--keys-export',
      exportFile,
      '--cell',
      cell,
      ...extra,
    ]);

  /** The segment the second snapshot lists `cell` in. */
  const segmentOf = (cell: CellEntry): SegmentEntry => {
    const segment = manifests[1].segmentOf.get(cell.id);
    if (segment === undefined) throw new Error(`cell ${cell.id} is in no segment of the second snapshot`);
    return segment;
  };
  /**
   * Whether the second snapshot did not write `cell`: reused within a segment it rewrote, or
   * in a segment it references from the first snapshot (where `reused` is the first's view).
   */
  const earlier = (cell: CellEntry): boolean => cell.reused || segmentOf(cell).snapshot !== manifests[1].snapshot.id;

  const pick = (predicate: (c: CellEntry) => boolean, what: string): CellEntry => {
    const found = manifests[1].cells.filter(predicate).sort((a, b) => b.rows - a.rows)[0];
    if (found === undefined) throw new Error(`the demo's second snapshot has no ${what}`);
    return found;
  };

  /** The snapshot id of the manifests the tests sign with keys of their own. */
  const TRUSTED_ID = '20260101T000000Z-0f0f0f';

  /**
   * A directory for a snapshot signed by a key of the test's own: the key's public half,
   * an objects directory whose packs are the demo's (segments are the test's to write), and
   * the path of its manifest.
   */
  const trustedDir = async (
    base: string,
    key: { publicKey: string },
  ): Promise<{ pub: string; objectsDir: string; manifest: string }> => {
    const objectsDir = join(base, 'objects');
    await mkdir(join(objectsDir, 'snapshots'), { recursive: true });
    await symlink(join(objects, 'packs'), join(objectsDir, 'packs'));
    const pub = join(base, 'signing.pub');
    await writeFile(pub, publicKeyToPem(key.publicKey));
    return { pub, objectsDir, manifest: join(objectsDir, 'snapshots', `${TRUSTED_ID}.json.gz`) };
  };

  /**
   * A copy of the demo's objects directory whose segment objects are copies (packs are
   * linked), with the object of `segment` replaced by `bytes`, or removed when null.
   */
  const objectsWithSegment = async (name: string, segment: SegmentEntry, bytes: Buffer | null): Promise<string> => {
    const copy = join(dir, name);
    await mkdir(copy);
    await symlink(join(objects, 'packs'), join(copy, 'packs'));
    await cp(join(objects, 'segments'), join(copy, 'segments'), { recursive: true });
    if (bytes === null) await rm(join(copy, segment.key));
    else await writeFile(join(copy, segment.key), bytes);
    return copy;
  };

  beforeAll(async () => {
    releaseDemoPort = await holdDemoDefaultPort();
    dir = await mkdtemp(join(tmpdir(), 'lethe-dr-'));
    // When tests run as root the embedded server runs as `postgres`, which must reach DIR.
    await chmod(dir, 0o755);
    const demo = JSON.parse(
      (await runOk(process.execPath, [CLI, 'demo', '--dir', dir, '--json'])).toString('utf8'),
    ) as {
      backups: { snapshotId: string; manifest: string }[];
      verify: { ok: boolean };
    };
    expect(demo.verify.ok).toBe(true);
    const config = join(dir, 'lethe.yaml');
    keysExport = join(dir, 'keys-export.json');
    await runOk(process.execPath, [
      CLI,
      'keys',
      'export',
      '--out',
      keysExport,
      '--config',
      config,
      '--json',
    ]);
    objects = join(dir, 'objects');
    masterKey = join(dir, 'master.key');
    signingKey = join(dir, 'backup-signing.key.pub');
    const [first, second] = demo.backups;
    if (first === undefined || second === undefined)
      throw new Error('the demo made fewer than two backups');
    manifestFiles = [join(objects, first.manifest), join(objects, second.manifest)];
    expect(manifestFiles[1]).toMatch(/\.json\.gz$/);
    manifests = [await readTree(manifestFiles[0], objects), await readTree(manifestFiles[1], objects)];

    // Every CLI command stops the embedded server it started: nothing may be left running.
    expect(await exists(join(dir, 'pg', 'postmaster.pid'))).toBe(false);
    const settings = parseYaml(await readFile(config, 'utf8')) as {
      embedded: { port: number; passwordFile: string };
    };
    const password = (await readFile(join(dir, settings.embedded.passwordFile), 'utf8')).trim();
    // The demo's port, unless something else took it since: the cluster is not tied to it.
    const port = (await portIsFree(settings.embedded.port))
      ? settings.embedded.port
      : await freePort();
    server = await EmbeddedPostgres.start({ dataDir: join(dir, 'pg'), port, password });
    chat = new pg.Client({ connectionString: server.url('chat') });
    await chat.connect();
  }, 600_000);

  afterAll(async () => {
    await chat?.end();
    await server?.stop();
    await releaseDemoPort();
    if (dir !== '') {
      expect(await exists(join(dir, 'pg', 'postmaster.pid'))).toBe(false);
      await rm(dir, { recursive: true, force: true });
    }
  }, 60_000);

  it('lists the cells of every segment of a manifest with their table and row count', async () => {
    const listed = (
      await runOk(SCRIPT, ['--signing-key', signingKey, '--list', '--manifest', manifestFiles[1], '--objects', objects])
    ).toString('utf8');
    const lines = listed.trimEnd().split('\n');
    expect(lines).toHaveLength(manifests[1].cells.length);
    expect(manifests[1].cells).toHaveLength(manifests[1].totals.cells);
    expect(lines).toEqual(manifests[1].cells.map((c) => `${c.id}\t${c.table}\t${c.rows}`));
    const users = (
      await runOk(SCRIPT, [
        '--signing-key',
        signingKey,
        '--list',
        '--manifest',
        manifestFiles[1],
        '--objects',
        objects,
        '--table',
        'users',
        '--tenant',
        '3',
      ])
    )
      .toString('utf8')
      .trimEnd()
      .split('\n');
    expect(users).toEqual(
      manifests[1].cells
        .filter((c) => c.table === 'users' && c.tenant === '3')
        .map((c) => `${c.id}\tusers\t${c.rows}`),
    );
    // A v4 snapshot's cells are in its segment objects: without --objects there is nothing to list.
    const blind = await run(SCRIPT, ['--signing-key', signingKey, '--list', '--manifest', manifestFiles[1]]);
    expect(blind.code).toBe(2);
    expect(blind.stderr).toMatch(/--objects DIR is required: the cells of a lethe\.manifest\.v4 snapshot are listed in its segment objects/);
    expect(blind.stdout.length).toBe(0);
  });

  const ALL_DIMENSIONS = ['period', 'user', 'conversation', 'tenant'];
  it.each([
    [
      'a messages cell written by the second backup',
      (c: CellEntry) => c.table === 'messages' && !earlier(c),
      ALL_DIMENSIONS,
    ],
    ['an attachments cell (bytea)', (c: CellEntry) => c.table === 'attachments', ALL_DIMENSIONS],
    ['a users cell, which has no period key', (c: CellEntry) => c.table === 'users', ['user', 'tenant']],
    ['a tenants cell, whose key derives from the tenant key only', (c: CellEntry) => c.table === 'tenants', ['tenant']],
    [
      'a messages cell reused from the first backup in a segment the second rewrote (an earlier encapsulation)',
      (c: CellEntry) => c.table === 'messages' && c.reused && segmentOf(c).snapshot === manifests[1].snapshot.id,
      ALL_DIMENSIONS,
    ],
    [
      'a messages cell of a segment the second backup references from the first',
      (c: CellEntry) => c.table === 'messages' && segmentOf(c).snapshot === manifests[0].snapshot.id,
      ALL_DIMENSIONS,
    ],
  ])('decrypts %s to exactly the chat store rows', async (what, predicate, kinds) => {
    const cell = pick(predicate, what);
    // The dimension keys in key-derivation order: the order the script feeds the extract.
    expect(cell.dims.map((d) => d.slice(0, d.indexOf(':')))).toEqual(kinds);
    const columns = columnsOf(cell.table);
    const result = await decrypt(manifestFiles[1], cell.id);
    expect(result.stderr).toBe('');
    expect(result.code).toBe(0);
    expect(lineCount(result.stdout)).toBe(cell.rows);
    expect(result.stdout.length).toBe(cell.bytesPlain);
    const { sql, params } = sourceQuery(cell, columns);
    const source = await copyOut(admin(), sql, params);
    expect(lineCount(source)).toBe(cell.rows);
    expect(result.stdout.toString('utf8')).toBe(source.toString('utf8'));
    if (cell.table === 'attachments')
      expect(result.stdout.toString('utf8')).toMatch(/\t\\\\x[0-9a-f]{2,}\t/);
  });

  it('reads a reused cell from either snapshot: same pack range, same encapsulation of the first', async () => {
    const cell = pick((c) => c.table === 'messages' && c.reused && segmentOf(c).snapshot === manifests[1].snapshot.id, 'reused messages cell');
    const inFirst = manifests[0].cells.find((c) => c.id === cell.id);
    expect(inFirst).toMatchObject({
      pack: cell.pack,
      offset: cell.offset,
      sha256: cell.sha256,
      key: cell.key,
      dims: cell.dims,
      enc: cell.enc,
    });
    // The second manifest lists the first snapshot's encapsulation that the cell's key derives from.
    expect(cell.enc.startsWith(`${manifests[0].snapshot.id}/`)).toBe(true);
    expect(manifests[1].encapsulations.find((e) => e.id === cell.enc)).toEqual(
      manifests[0].encapsulations.find((e) => e.id === cell.enc),
    );
    // The older snapshot is read only on purpose: a newer signed one follows it.
    const refused = await decrypt(manifestFiles[0], cell.id);
    expect(refused.code).toBe(6);
    expect(refused.stderr).toMatch(new RegExp(`snapshot ${manifests[0].snapshot.id} is not the newest: ${manifests[1].snapshot.id} follows it`));
    const [older, newer] = await Promise.all([
      decrypt(manifestFiles[0], cell.id, ['--not-latest']),
      decrypt(manifestFiles[1], cell.id),
    ]);
    expect(older.code).toBe(0);
    expect(newer.code).toBe(0);
    expect(newer.stdout.equals(older.stdout)).toBe(true);
  });

  it('follows the tree across snapshots: segments the second lists from the first are read as they are', async () => {
    const [first, second] = manifests;
    const referenced = second.segments.filter((s) => s.snapshot === first.snapshot.id);
    const rewritten = second.segments.filter((s) => s.snapshot === second.snapshot.id);
    expect(referenced.length).toBeGreaterThan(0);
    expect(rewritten.length).toBeGreaterThan(0);
    expect(referenced.length + rewritten.length).toBe(second.segments.length);
    expect(second.totals.segments).toBe(second.segments.length);
    expect(second.totals.segmentsWritten).toBe(rewritten.length);
    // A referenced segment is the first snapshot's entry as it was: the same object, unchanged.
    for (const s of referenced) expect(first.segments.find((f) => f.id === s.id)).toEqual(s);
    for (const s of rewritten) expect(first.segments.some((f) => f.key === s.key)).toBe(false);
    // `reused` is relative to the segment's writer: a cell an earlier snapshot wrote (its key
    // derives from that snapshot's encapsulation).
    for (const cell of second.cells) expect(cell.reused).toBe(!cell.enc.startsWith(`${segmentOf(cell).snapshot}/`));
    expect(second.cells.some((c) => c.reused)).toBe(true);

    // The second manifest alone (no other manifest beside it) and the bucket's objects: the
    // script follows the tree into the first snapshot's segment object.
    const cell = pick((c) => c.table === 'messages' && segmentOf(c).snapshot === first.snapshot.id, 'messages cell of a referenced segment');
    const alone = join(dir, 'tree-only', 'snapshots');
    await mkdir(alone, { recursive: true });
    const manifest = join(alone, `${second.snapshot.id}.json.gz`);
    await copyFile(manifestFiles[1], manifest);
    const result = await decrypt(manifest, cell.id);
    expect(result.stderr).toBe('');
    expect(result.code).toBe(0);
    const { sql, params } = sourceQuery(cell, columnsOf(cell.table));
    expect(result.stdout.toString('utf8')).toBe((await copyOut(admin(), sql, params)).toString('utf8'));
  });

  it('refuses a segment object whose bytes were flipped, or that was cut short, before using any of it', async () => {
    const cell = pick((c) => c.table === 'messages' && segmentOf(c).snapshot === manifests[0].snapshot.id, 'messages cell of a referenced segment');
    const segment = segmentOf(cell);
    const tenant = segment.tenant ?? '';
    const stored = await readFile(join(objects, segment.key));
    const flippedBytes = Buffer.from(stored);
    const at = Math.floor(stored.length / 2);
    flippedBytes[at] = (flippedBytes[at] ?? 0) ^ 0x01;
    const half = Math.floor(stored.length / 2);
    const cases = [
      {
        what: 'flipped',
        objectsDir: await objectsWithSegment('objects-segment-flipped', segment, flippedBytes),
        reason: `the object hashes to [0-9a-f]{64}, the manifest lists ${segment.sha256}: it was modified or replaced after the backup`,
      },
      {
        what: 'cut short',
        objectsDir: await objectsWithSegment('objects-segment-cut', segment, stored.subarray(0, half)),
        reason: `the object is ${half} bytes, the manifest lists ${segment.size}: the copy is truncated`,
      },
    ];
    const named = `segment ${escapeRegExp(segment.id)} \\(${escapeRegExp(segment.key)}\\) of manifest ${escapeRegExp(manifestFiles[1])} cannot be used, so none of its cells was: `;
    const outDir = join(dir, 'out-segment');
    await mkdir(outDir);
    for (const { what, objectsDir, reason } of cases) {
      const refused = await decrypt(manifestFiles[1], cell.id, ['--out', join(outDir, 'cell.copy')], keysExport, objectsDir);
      expect(refused.code, what).toBe(6);
      expect(refused.stderr).toMatch(new RegExp(named + reason));
      expect(refused.stdout.length).toBe(0);

      // --list names it, lists the cells of the other segments, and fails.
      const listed = await run(SCRIPT, ['--signing-key', signingKey, '--list', '--manifest', manifestFiles[1], '--objects', objectsDir, '--tenant', tenant]);
      expect(listed.code, what).toBe(6);
      expect(listed.stderr).toMatch(new RegExp(named + reason));
      expect(listed.stderr).toMatch(/error: 1 of the \d+ segment\(s\) of manifest .* cannot be used \(each is named above\)/);
      expect(listed.stdout.toString('utf8')).toBe(
        manifests[1].cells
          .filter((c) => c.tenant === segment.tenant && segmentOf(c).id !== segment.id)
          .map((c) => `${c.id}\t${c.table}\t${c.rows}\n`)
          .join(''),
      );
    }
    expect(await readdir(outDir)).toEqual([]);

    // Not fetched at all: not found, and which object to fetch.
    const missing = await objectsWithSegment('objects-segment-missing', segment, null);
    const absent = await decrypt(manifestFiles[1], cell.id, [], keysExport, missing);
    expect(absent.code).toBe(4);
    expect(absent.stderr).toContain(`its object ${segment.key} is missing under ${missing}; copy it from the bucket`);
    expect(absent.stdout.length).toBe(0);
    // The same segment, intact, decrypts: the failures were the object's.
    expect((await decrypt(manifestFiles[1], cell.id)).code).toBe(0);
  });

  it('still reads a v3 manifest (cells inline): lists and decrypts its cells as from the tree', async () => {
    const cells = [
      pick((c) => c.table === 'messages' && !earlier(c), 'new messages cell'),
      pick((c) => c.table === 'users', 'users cell'),
    ];
    const encapsulations = manifests[1].encapsulations.filter((e) => cells.some((c) => c.enc === e.id));
    const key = generateSigningKey();
    const { pub, objectsDir, manifest } = await trustedDir(join(dir, 'v3'), key);
    // No segments: v3 needs none (the packs are linked, the manifest lists the cells).
    await writeFile(manifest, v3Manifest({ ...SYNTHETIC_HEADER, id: TRUSTED_ID }, SYNTHETIC_SCHEMA, cells, encapsulations, key));
    const listed = await runOk(SCRIPT, ['--signing-key', pub, '--list', '--manifest', manifest]);
    expect(listed.toString('utf8')).toBe(cells.map((c) => `${c.id}\t${c.table}\t${c.rows}\n`).join(''));
    for (const cell of cells) {
      const [v3, v4] = await Promise.all([decrypt(manifest, cell.id, [], keysExport, objectsDir, pub), decrypt(manifestFiles[1], cell.id)]);
      expect(v3.stderr).toBe('');
      expect(v3.code).toBe(0);
      expect(lineCount(v3.stdout)).toBe(cell.rows);
      expect(v3.stdout.equals(v4.stdout)).toBe(true);
    }
    // The signature's domain is the format: the same v3 body signed as v4 does not verify.
    const text = gunzipSync(await readFile(manifest)).toString('utf8');
    const lines = text.split('\n');
    const signature = JSON.parse((lines.at(-2) ?? '').slice('"signature":'.length, -1)) as { sha256: string };
    const asV4 = sign(key.privateKey, Buffer.from(`lethe.manifest.v4\n${signature.sha256}\n`, 'utf8'));
    await writeFile(manifest, gzipSync(text.replace(/"value":"[^"]+"/, `"value":"${asV4}"`)));
    const crossed = await run(SCRIPT, ['--signing-key', pub, '--list', '--manifest', manifest]);
    expect(crossed.code).toBe(6);
    expect(crossed.stderr).toMatch(/its signature does not verify under the signing key/);
  });

  it('writes --out only once everything checked out, and never overwrites it', async () => {
    const cell = pick((c) => c.table === 'attachments', 'attachments cell');
    const out = join(dir, 'out', 'attachments.copy');
    await mkdir(dirname(out), { recursive: true });
    const result = await decrypt(manifestFiles[1], cell.id, ['--out', out]);
    expect(result.code).toBe(0);
    expect(result.stdout.length).toBe(0);
    expect((await stat(out)).mode & 0o777).toBe(0o600);
    expect(lineCount(await readFile(out))).toBe(cell.rows);
    const again = await decrypt(manifestFiles[1], cell.id, ['--out', out]);
    expect(again.code).toBe(2);
    expect(again.stderr).toMatch(/already exists/);
    expect(await readdir(dirname(out))).toEqual(['attachments.copy']);
  });

  it('refuses a pack whose bytes were changed, before decrypting anything', async () => {
    const cell = pick((c) => c.table === 'messages' && !earlier(c), 'new messages cell');
    const bad = join(dir, 'objects-flipped');
    await mkdir(join(bad, dirname(cell.pack)), { recursive: true });
    await symlink(join(objects, 'segments'), join(bad, 'segments'));
    const pack = join(bad, cell.pack);
    await copyFile(join(objects, cell.pack), pack);
    const bytes = await readFile(pack);
    const at = cell.offset + Math.floor(cell.length / 2);
    bytes[at] = (bytes[at] ?? 0) ^ 0x01;
    await writeFile(pack, bytes);

    const outDir = join(dir, 'out-flipped');
    await mkdir(outDir);
    const out = join(outDir, 'cell.copy');
    const result = await decrypt(manifestFiles[1], cell.id, ['--out', out], keysExport, bad);
    expect(result.code).toBe(6);
    expect(result.stderr).toMatch(
      new RegExp(
        `sha256 mismatch: cell ${cell.id} .*the manifest says ${cell.sha256}; nothing was decrypted`,
      ),
    );
    expect(result.stdout.length).toBe(0);
    expect(await readdir(outDir)).toEqual([]);
    // The same range, unflipped, decrypts: the failure was the flipped byte.
    expect((await decrypt(manifestFiles[1], cell.id)).code).toBe(0);
  });

  it('reports a cell whose dimension key is absent from the export as crypto-shredded', async () => {
    const cell = pick((c) => c.table === 'messages' && c.dims.some((d) => d.startsWith('user:')), 'messages cell');
    const userKey = cell.dims.find((d) => d.startsWith('user:')) ?? '';
    expect(userKey).toBe(`user:${cell.tenant ?? ''}/${tupleOf(cell).author ?? ''}`);
    const exported = JSON.parse(await readFile(keysExport, 'utf8')) as {
      dimensionKeys: { id: string }[];
    };
    expect(exported.dimensionKeys.some((k) => k.id === userKey)).toBe(true);
    // `lethe keys export` leaves destroyed keys out: this is what an erased user looks like.
    const shredded = join(dir, 'keys-export-shredded.json');
    await writeExport(shredded, {
      ...exported,
      dimensionKeys: exported.dimensionKeys.filter((k) => k.id !== userKey),
    });
    const result = await decrypt(manifestFiles[1], cell.id, [], shredded);
    expect(result.code).toBe(5);
    expect(result.stderr).toContain(
      `needs dimension key(s) ${userKey}, which the keys export does not hold`,
    );
    expect(result.stderr).toMatch(/crypto-shredded/);
    expect(result.stdout.length).toBe(0);
  });

  it('refuses an export whose keys are not the ones the backup used, before any plaintext exists', async () => {
    const cell = pick((c) => c.table === 'messages' && !earlier(c), 'new messages cell');
    const userKey = cell.dims.find((d) => d.startsWith('user:')) ?? '';
    const exported = JSON.parse(await readFile(keysExport, 'utf8')) as {
      format: string;
      dimensionKeys: { id: string; kind: string; recipient: string; wrapped: string }[];
    };
    const mine = exported.dimensionKeys.find((k) => k.id === userKey);
    const other = exported.dimensionKeys.find((k) => k.kind === 'user' && k.id !== userKey);
    if (mine === undefined || other === undefined) throw new Error('the export lacks the user keys this test swaps');
    const withKey = (fields: Partial<typeof mine>) =>
      exported.dimensionKeys.map((k) => (k.id === userKey ? { ...k, ...fields } : k));
    const outDir = join(dir, 'out-swapped');
    await mkdir(outDir);

    // Another genuine key (wrapped to the same master key) under this id, recipient and all:
    // every key opens, but the cell's Poly1305 tag does not verify under the derived key.
    const swapped = join(dir, 'keys-export-swapped.json');
    await writeExport(swapped, { ...exported, dimensionKeys: withKey({ recipient: other.recipient, wrapped: other.wrapped }) });
    const wrongKey = await decrypt(manifestFiles[1], cell.id, ['--out', join(outDir, 'a.copy')], swapped);
    expect(wrongKey.code).toBe(7);
    expect(wrongKey.stderr).toMatch(new RegExp(`cell ${cell.id} does not authenticate under the key derived from the export .*nothing was decrypted`));
    expect(wrongKey.stdout.length).toBe(0);

    // Only the wrapped key swapped: it is not the key its recipient names.
    const damaged = join(dir, 'keys-export-damaged.json');
    await writeExport(damaged, { ...exported, dimensionKeys: withKey({ wrapped: other.wrapped }) });
    const mismatch = await decrypt(manifestFiles[1], cell.id, ['--out', join(outDir, 'b.copy')], damaged);
    expect(mismatch.code).toBe(6);
    expect(mismatch.stderr).toContain(`dimension key ${userKey} of the export unwraps to the private key of public key`);
    expect(mismatch.stderr).toContain(`but the export lists ${mine.recipient}: the export is damaged`);
    expect(mismatch.stdout.length).toBe(0);
    expect(await readdir(outDir)).toEqual([]);

    // An export of lethe before v3 (age identities, not X25519 keys) is refused by name.
    const v1 = join(dir, 'keys-export-v1.json');
    await writeExport(v1, { ...exported, format: 'lethe.keys-export.v1' });
    const old = await decrypt(manifestFiles[1], cell.id, [], v1);
    expect(old.code).toBe(2);
    expect(old.stderr).toMatch(/is a lethe\.keys-export\.v1 export.*needs a keys export of format lethe\.keys-export\.v2/);
  });

  it('names a cell that is not in the manifest', async () => {
    const result = await decrypt(manifestFiles[1], 'messages/no-such-tenant/2026-01/1');
    expect(result.code).toBe(4);
    expect(result.stderr).toMatch(/cell messages\/no-such-tenant\/2026-01\/1 is not in manifest/);
  });

  it('names a missing tool', async () => {
    const bin = join(dir, 'bin-without-age');
    await mkdir(bin);
    // The tools the script needs, except age: what `command -v` finds through PATH.
    for (const tool of [
      'bash',
      'jq',
      'openssl',
      'gzip',
      'xxd',
      'awk',
      'basename',
      'age-keygen',
      'base64',
      'dd',
      'sha256sum',
      'grep',
      'head',
      'tail',
      'wc',
      'stat',
      'mktemp',
      'cat',
      'rm',
      'tr',
      'mv',
      'dirname',
    ]) {
      const found = (await run('/bin/sh', ['-c', `command -v ${tool}`])).stdout
        .toString('utf8')
        .trim();
      if (found !== '')
        await writeFile(join(bin, tool), `#!/bin/sh\nexec ${found} "$@"\n`, { mode: 0o755 });
    }
    const cell = pick((c) => c.table === 'users', 'users cell');
    const result = await run(
      join(bin, 'bash'),
      [
        SCRIPT,
        '--signing-key',
        signingKey,
        '--master-key',
        masterKey,
        '--manifest',
        manifestFiles[1],
        '--objects',
        objects,
        '--keys-export',
        keysExport,
        '--cell',
        cell.id,
      ],
      { PATH: bin },
    );
    expect(result.code).toBe(3);
    expect(result.stderr).toMatch(/required tool\(s\) not found on PATH: age;/);
  });

  it('creates the schema from the manifest, exactly as lethe would, and the cells load with COPY', async () => {
    const pre = (
      await runOk(SCRIPT, ['--signing-key', signingKey, '--schema-sql', 'pre', '--manifest', manifestFiles[1]])
    ).toString('utf8');
    const post = (
      await runOk(SCRIPT, ['--signing-key', signingKey, '--schema-sql', 'post', '--manifest', manifestFiles[1]])
    ).toString('utf8');
    const ddl = schemaToDdl(manifests[1].schema);
    expect(pre).toBe(ddl.preData.map((s) => `${s};\n`).join(''));
    expect(post).toBe(ddl.postData.map((s) => `${s};\n`).join(''));

    await admin().query('CREATE DATABASE dr_target');
    const target = new pg.Client({ connectionString: server?.url('dr_target') });
    await target.connect();
    try {
      await target.query(pre);
      const cells = [
        pick((c) => c.table === 'attachments', 'attachments cell'),
        pick((c) => c.table === 'messages' && earlier(c), 'messages cell of the first backup'),
        pick((c) => c.table === 'users', 'users cell'),
      ];
      // One cell per table, so each restored table holds exactly that cell's rows.
      for (const cell of cells) {
        const columns = columnsOf(cell.table);
        const plain = (await decrypt(manifestFiles[1], cell.id)).stdout;
        expect(lineCount(plain)).toBe(cell.rows);
        await copyIn(target, cell.table, columns, plain);
        const restored = await copyOut(
          target,
          `SELECT ${columns.map((c) => `"${c}"`).join(', ')} FROM "${cell.table}" ORDER BY id`,
        );
        expect(restored.toString('utf8')).toBe(plain.toString('utf8'));
      }
    } finally {
      await target.end();
    }

    // On an empty database the post-load SQL completes the same tables as the chat store's.
    await admin().query('CREATE DATABASE dr_schema');
    const empty = new pg.Client({ connectionString: server?.url('dr_schema') });
    await empty.connect();
    try {
      await empty.query(pre);
      await empty.query(post);
      const catalog = `
        SELECT c.relname, c.relkind, coalesce(pg_get_indexdef(c.oid), '') AS def,
               coalesce((SELECT string_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod) || ' ' || a.attnotnull
                                           || ' ' || coalesce(pg_get_expr(d.adbin, d.adrelid), ''), ', ' ORDER BY a.attnum)
                           FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
                          WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped), '') AS columns,
               coalesce((SELECT string_agg(conname || ' ' || pg_get_constraintdef(o.oid), ', ' ORDER BY conname)
                           FROM pg_constraint o WHERE o.conrelid = c.oid), '') AS constraints
          FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace ORDER BY c.relname`;
      const enums = `SELECT t.typname, array_agg(e.enumlabel ORDER BY e.enumsortorder) AS labels
                       FROM pg_type t JOIN pg_enum e ON e.enumtypid = t.oid GROUP BY t.typname ORDER BY t.typname`;
      const mine = (await empty.query(catalog)).rows as { relname: string }[];
      expect(
        mine.filter((r) => manifests[1].snapshot.tables.some((t) => t.name === r.relname)),
      ).toHaveLength(manifests[1].snapshot.tables.length);
      expect(mine).toEqual((await admin().query(catalog)).rows);
      expect((await empty.query(enums)).rows).toEqual((await admin().query(enums)).rows);
    } finally {
      await empty.end();
    }
  });
  it('prints the same DDL as lethe for every schema construct, and PostgreSQL runs it', async () => {
    const ddl = schemaToDdl(SYNTHETIC_SCHEMA);
    const expected = {
      pre: ddl.preData.map((sql) => `${sql};\n`).join(''),
      post: ddl.postData.map((sql) => `${sql};\n`).join(''),
    };
    // A manifest as lethe writes it (one member per line, gzip), signed by a key of the test's own.
    const key = generateSigningKey();
    const id = '20260101T000000Z-abcdef';
    const synthetic = join(dir, 'synthetic', 'snapshots');
    await mkdir(synthetic, { recursive: true });
    const lined = join(synthetic, `${id}.json.gz`);
    await writeManifest(lined, { header: { ...SYNTHETIC_HEADER, id }, schema: SYNTHETIC_SCHEMA, cells: [], encapsulations: [] }, key);
    const pub = join(dir, 'synthetic', 'signing.pub');
    await writeFile(pub, publicKeyToPem(key.publicKey));
    for (const part of ['pre', 'post'] as const) {
      const sql = await runOk(SCRIPT, ['--signing-key', pub, '--schema-sql', part, '--manifest', lined]);
      expect(sql.toString('utf8')).toBe(expected[part]);
    }
    await admin().query('CREATE DATABASE dr_synthetic');
    const db = new pg.Client({ connectionString: server?.url('dr_synthetic') });
    await db.connect();
    try {
      await db.query(expected.pre);
      await db.query(
        `INSERT INTO "dr ""odd"" schema".notes (title, mood) VALUES ('a', 'it''s'), ('b', E'back\\\\slash')`,
      );
      await db.query(expected.post);
      const { rows } = await db.query<{ id: number; title_len: number; mood: string }>(
        `SELECT id, title_len, mood::text FROM "dr ""odd"" schema".notes ORDER BY title`,
      );
      expect(rows).toEqual([
        { id: -1, title_len: 1, mood: "it's" },
        { id: -2, title_len: 1, mood: 'back\\slash' },
      ]);
      // The descending sequence was set past the data: the next id follows it.
      const next = await db.query<{ id: number }>(
        `INSERT INTO "dr ""odd"" schema".notes (title) VALUES ('c') RETURNING id`,
      );
      expect(next.rows[0]?.id).toBe(-3);
    } finally {
      await db.end();
    }
  });

  it('checks the manifest before using anything in it: a key from the escrow, the name, nothing altered', async () => {
    const list = (manifest: string, keys: string[] = ['--signing-key', signingKey]): Promise<Result> =>
      run(SCRIPT, [...keys, '--list', '--manifest', manifest, '--objects', objects]);
    const none = await list(manifestFiles[1], []);
    expect(none.code).toBe(2);
    expect(none.stderr).toMatch(/--signing-key FILE is required/);

    // A key the operator did not escrow (here: anybody's) verifies nothing.
    const other = join(dir, 'other-signing.pub');
    await writeFile(other, publicKeyToPem(generateSigningKey().publicKey));
    const foreign = await list(manifestFiles[1], ['--signing-key', other]);
    expect(foreign.code).toBe(6);
    expect(foreign.stderr).toMatch(/cannot be trusted, so nothing in it was used: its signature does not verify/);
    expect(foreign.stdout.length).toBe(0);

    // The schema line edited in the uncompressed text, compressed again, signature line as
    // it was: no SQL comes out.
    const edited = join(dir, 'edited', 'snapshots');
    await mkdir(edited, { recursive: true });
    const text = await manifestText(manifestFiles[1]);
    expect(text).toContain('"type":"bigint"');
    const tampered = join(edited, `${manifests[1].snapshot.id}.json.gz`);
    await writeFile(tampered, gzipSync(text.replace('"type":"bigint"', `"type":"bigint); SELECT pg_sleep(0); --"`)));
    const sql = await run(SCRIPT, ['--signing-key', signingKey, '--schema-sql', 'pre', '--manifest', tampered]);
    expect(sql.code).toBe(6);
    expect(sql.stderr).toMatch(/cannot be trusted, so nothing in it was used: .*edited after signing/);
    expect(sql.stdout.length).toBe(0);

    // Cut short in transfer: not a complete gzip stream, nothing listed.
    const cut = join(dir, 'cut', 'snapshots');
    await mkdir(cut, { recursive: true });
    const truncated = join(cut, `${manifests[1].snapshot.id}.json.gz`);
    const stored = await readFile(manifestFiles[1]);
    await writeFile(truncated, stored.subarray(0, Math.floor(stored.length / 2)));
    const short = await list(truncated);
    expect(short.code).toBe(6);
    expect(short.stderr).toMatch(/cannot be trusted, so nothing in it was used: it is not one complete gzip file/);
    expect(short.stdout.length).toBe(0);

    // A gzip bomb under a manifest's name: refused once it passes the cap, never inflated whole.
    const bombDir = join(dir, 'bomb', 'snapshots');
    await mkdir(bombDir, { recursive: true });
    const bomb = join(bombDir, `${manifests[1].snapshot.id}.json.gz`);
    const stream = gzipSync(Buffer.alloc(64 << 20, 0x20), { level: 9 });
    expect(stream.length).toBeLessThan(128 * 1024);
    await writeFile(bomb, stream);
    const blown = await list(bomb);
    expect(blown.code).toBe(6);
    expect(blown.stderr).toMatch(/cannot be trusted, so nothing in it was used: it inflates to more than \d+ bytes, 64 times its stored size/);
    expect(blown.stdout.length).toBe(0);

    // A genuine, signed manifest under another snapshot's name.
    const renamed = join(dir, 'renamed', 'snapshots');
    await mkdir(renamed, { recursive: true });
    const swapped = join(renamed, `${manifests[1].snapshot.id}.json.gz`);
    await copyFile(manifestFiles[0], swapped);
    const wrongName = await list(swapped);
    expect(wrongName.code).toBe(6);
    expect(wrongName.stderr).toMatch(new RegExp(`names snapshot ${manifests[0].snapshot.id}, not ${manifests[1].snapshot.id}`));
  });

  it('refuses a manifest of lethe before v3, naming the script that reads it', async () => {
    const legacy = join(dir, 'legacy', 'snapshots');
    await mkdir(legacy, { recursive: true });
    const id = '20250101T000000Z-abcdef';
    const v2 = join(legacy, `${id}.json`);
    await writeFile(v2, `{"format":"lethe.manifest.v2",\n"snapshot":{"id":"${id}"},\n"signature":{}}\n`);
    const result = await run(SCRIPT, ['--signing-key', signingKey, '--list', '--manifest', v2]);
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(/is lethe\.manifest\.v2, written by a lethe from before the lethe\.manifest\.v3 cell format/);
    expect(result.stderr).toMatch(/dr-decrypt\.sh of the lethe version that wrote it/);
    expect(result.stdout.length).toBe(0);

    // A format of a newer lethe is named as such, not taken for damage.
    const newer = join(dir, 'newer', 'snapshots');
    await mkdir(newer, { recursive: true });
    const v5 = join(newer, `${id}.json.gz`);
    await writeFile(v5, gzipSync(`{"format":"lethe.manifest.v5",\n"snapshot":{"id":"${id}"},\n"signature":{}}\n`));
    const unknown = await run(SCRIPT, ['--signing-key', signingKey, '--list', '--manifest', v5, '--objects', objects]);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toMatch(/says it is lethe\.manifest\.v5, which this script does not read \(it reads lethe\.manifest\.v4 and lethe\.manifest\.v3\); nothing in it was used/);
    expect(unknown.stdout.length).toBe(0);
  });

  it('refuses an ephemeral key replaced in a manifest re-signed with another key: the signature check stops it', async () => {
    const cell = pick((c) => c.table === 'messages' && !earlier(c), 'new messages cell');
    const text = await manifestText(manifestFiles[1]);
    const enc = manifests[1].encapsulations.find((e) => e.id === cell.enc);
    const planted = manifests[1].encapsulations.find((e) => e.id !== cell.enc);
    if (enc === undefined || planted === undefined) throw new Error('the manifest lacks the encapsulations this test needs');
    const line = JSON.stringify(enc);
    expect(text).toContain(line);
    // The attacker's manifest: another (valid) point as E, the body re-hashed and re-signed.
    const attacker = generateSigningKey();
    const forged = resign(text.replace(line, JSON.stringify({ ...enc, ephemeral: planted.ephemeral })), attacker);
    const forgedDir = join(dir, 'forged', 'snapshots');
    await mkdir(forgedDir, { recursive: true });
    const forgedFile = join(forgedDir, `${manifests[1].snapshot.id}.json.gz`);
    await writeFile(forgedFile, gzipSync(forged));
    const outDir = join(dir, 'out-forged');
    await mkdir(outDir);

    const refused = await decrypt(forgedFile, cell.id, ['--out', join(outDir, 'cell.copy')]);
    expect(refused.code).toBe(6);
    expect(refused.stderr).toMatch(/cannot be trusted, so nothing in it was used: its signature does not verify under the signing key/);
    expect(refused.stdout.length).toBe(0);

    // Even were the attacker's key trusted, the wrong E derives a key the cell's tag refuses.
    const attackerPub = join(dir, 'forged', 'attacker.pub');
    await writeFile(attackerPub, publicKeyToPem(attacker.publicKey));
    const underAttackerKey = await decrypt(forgedFile, cell.id, ['--out', join(outDir, 'cell.copy')], keysExport, objects, attackerPub);
    expect(underAttackerKey.code).toBe(7);
    expect(underAttackerKey.stderr).toMatch(/does not authenticate under the key derived from the export/);
    expect(underAttackerKey.stdout.length).toBe(0);
    expect(await readdir(outDir)).toEqual([]);
  });

  describe('an encapsulation in a manifest signed with a trusted key', () => {
    /**
     * A manifest holding one real cell of the demo whose encapsulation is `replaced`, signed
     * by a key of the test's own that the script is told to trust.
     */
    const signedWith = async (name: string, replaced: (e: EncapsulationEntry) => EncapsulationEntry) => {
      const cell = pick((c) => c.table === 'messages' && !earlier(c), 'new messages cell');
      const enc = manifests[1].encapsulations.find((e) => e.id === cell.enc);
      if (enc === undefined) throw new Error(`encapsulation ${cell.enc} is not in the manifest`);
      const key = generateSigningKey();
      const base = join(dir, name);
      const { pub, objectsDir, manifest } = await trustedDir(base, key);
      await writeManifest(
        manifest,
        {
          header: { ...SYNTHETIC_HEADER, id: TRUSTED_ID },
          schema: SYNTHETIC_SCHEMA,
          objects: objectsDir,
          cells: [cell],
          encapsulations: [replaced(enc)],
        },
        key,
      );
      const outDir = join(base, 'out');
      await mkdir(outDir);
      const result = await decrypt(manifest, cell.id, ['--out', join(outDir, 'cell.copy')], keysExport, objectsDir, pub);
      return { cell, result, written: await readdir(outDir) };
    };

    it('decrypts the cell when the encapsulation is the real one (the control)', async () => {
      const { cell, result, written } = await signedWith('trusted-control', (e) => e);
      expect(result.stderr).toMatch(new RegExp(`cell ${cell.id}: ${cell.rows} rows of table messages written to`));
      expect(result.code).toBe(0);
      expect(written).toEqual(['cell.copy']);
    });

    it.each([
      ['all zeros', '00'.repeat(32)],
      ['the point 1', `01${'00'.repeat(31)}`],
      ['a point of order 8', 'e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800'],
    ])('refuses a low-order ephemeral point (%s) with a clear message, and decrypts nothing', async (what, ephemeral) => {
      const { cell, result, written } = await signedWith(`low-order-${what.replaceAll(' ', '-')}`, (e) => ({ ...e, ephemeral }));
      expect(result.code).toBe(6);
      expect(result.stderr).toContain(
        `refusing cell ${cell.id}: encapsulation ${cell.enc} has ephemeral key ${ephemeral}, a low-order or malformed X25519 point`,
      );
      expect(result.stderr).toMatch(/nothing was decrypted/);
      expect(result.stdout.length).toBe(0);
      expect(written).toEqual([]);
    });

    it('refuses a kem it does not know, naming it', async () => {
      const { result, written } = await signedWith('unknown-kem', (e) => ({ ...e, kem: 'x448-frodo' }) as unknown as EncapsulationEntry);
      expect(result.code).toBe(2);
      expect(result.stderr).toMatch(/of kem 'x448-frodo'; dr-decrypt\.sh opens only kem "x25519"/);
      expect(result.stdout.length).toBe(0);
      expect(written).toEqual([]);
    });
  });

  describe('a segment object listed in a manifest signed with a trusted key', () => {
    /**
     * A snapshot whose one segment holds a real cell of the demo but is built by `segment`
     * (bytes and entry as the manifest lists them: size and sha256 always match), signed by
     * a key of the test's own that the script is told to trust.
     */
    const signedSegment = async (
      name: string,
      segment: (cell: CellEntry, objectsDir: string) => Promise<SegmentEntry>,
    ): Promise<{ cell: CellEntry; decrypted: Result; listed: Result; written: string[] }> => {
      const cell = pick((c) => c.table === 'messages' && !earlier(c), 'new messages cell');
      const enc = manifests[1].encapsulations.find((e) => e.id === cell.enc);
      if (enc === undefined) throw new Error(`encapsulation ${cell.enc} is not in the manifest`);
      const key = generateSigningKey();
      const base = join(dir, name);
      const { pub, objectsDir, manifest } = await trustedDir(base, key);
      const entry = await segment(cell, objectsDir);
      await writeManifest(manifest, { header: { ...SYNTHETIC_HEADER, id: TRUSTED_ID }, schema: SYNTHETIC_SCHEMA, segment: entry, encapsulations: [enc] }, key);
      const outDir = join(base, 'out');
      await mkdir(outDir);
      const decrypted = await decrypt(manifest, cell.id, ['--out', join(outDir, 'cell.copy')], keysExport, objectsDir, pub);
      const listed = await run(SCRIPT, ['--signing-key', pub, '--list', '--manifest', manifest, '--objects', objectsDir]);
      return { cell, decrypted, listed, written: await readdir(outDir) };
    };

    /** The segment object SegmentWriter writes for `header` and `cells`. */
    const segmentBytes = (header: ReturnType<typeof segmentOfCells>, cells: readonly CellEntry[]): Promise<Buffer> => {
      const writer = new SegmentWriter(header);
      return written(writer.stream, async () => {
        for (const cell of cells) await writer.cell(cell);
        writer.finish();
      });
    };

    it('decrypts a cell of a well-formed segment (the control)', async () => {
      const { cell, decrypted, listed, written: out } = await signedSegment('segment-control', async (c, objectsDir) => {
        const header = segmentOfCells([c], TRUSTED_ID);
        return storeSegment(objectsDir, await segmentBytes(header, [c]), header, [c]);
      });
      expect(decrypted.stderr).toMatch(new RegExp(`cell ${escapeRegExp(cell.id)}: ${cell.rows} rows of table messages written to`));
      expect(decrypted.code).toBe(0);
      expect(out).toEqual(['cell.copy']);
      expect(listed.code).toBe(0);
      expect(listed.stdout.toString('utf8')).toBe(`${cell.id}\tmessages\t${cell.rows}\n`);
    });

    it.each([
      [
        'a gzip bomb: refused once it inflates past what its cells allow',
        async (c: CellEntry, objectsDir: string): Promise<SegmentEntry> => {
          const bomb = gzipSync(Buffer.alloc(16 << 20, 0x20), { level: 9 });
          expect(bomb.length).toBeLessThan(64 * 1024);
          return storeSegment(objectsDir, bomb, segmentOfCells([c], TRUSTED_ID), [c]);
        },
        `it inflates to more than the ${65536 + 4096} bytes its 1 cell\\(s\\) allow, so it was not read further`,
      ],
      [
        'a header naming another snapshot',
        async (c: CellEntry, objectsDir: string): Promise<SegmentEntry> => {
          const header = segmentOfCells([c], TRUSTED_ID);
          return storeSegment(objectsDir, await segmentBytes({ ...header, snapshot: '20250101T000000Z-aaaaaa' }, [c]), header, [c]);
        },
        'it describes segment .* of snapshot 20250101T000000Z-aaaaaa, not what the manifest lists: .* of snapshot 20260101T000000Z-0f0f0f',
      ],
      [
        "a cell of another tenant under the segment's id",
        async (c: CellEntry, objectsDir: string): Promise<SegmentEntry> => {
          const header = segmentOfCells([c], TRUSTED_ID);
          const foreign = { ...c, tenant: `${c.tenant ?? ''}0` };
          return storeSegment(objectsDir, await segmentBytes(header, [foreign]), header, [foreign]);
        },
        'line 4: cell .* does not belong to segment',
      ],
      [
        'more rows than the manifest lists',
        async (c: CellEntry, objectsDir: string): Promise<SegmentEntry> => {
          const header = segmentOfCells([c], TRUSTED_ID);
          return storeSegment(objectsDir, await segmentBytes(header, [c]), header, [c], { rows: c.rows + 1 });
        },
        `it lists 1 cells, \\d+ rows and \\d+ plaintext bytes, the manifest 1, \\d+ and \\d+`,
      ],
    ])('refuses %s, and decrypts and lists nothing of it', async (what, segment, reason) => {
      const { decrypted, listed, written: out } = await signedSegment(`segment-${what.replace(/[^a-z]+/g, '-')}`, segment);
      expect(decrypted.code).toBe(6);
      expect(decrypted.stderr).toMatch(new RegExp(`cannot be used, so none of its cells was: ${reason}`));
      expect(decrypted.stdout.length).toBe(0);
      expect(out).toEqual([]);
      expect(listed.code).toBe(6);
      expect(listed.stderr).toMatch(new RegExp(`cannot be used, so none of its cells was: ${reason}`));
      expect(listed.stdout.length).toBe(0);
    });
  });
});
