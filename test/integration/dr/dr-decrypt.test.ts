// Disaster recovery without lethe: runbooks/dr-decrypt.sh reads a real demo snapshot
// (lethe.manifest.v3, keys export v2) with the stock age CLI, openssl, jq, gzip, xxd and
// coreutils, and what it decrypts is exactly the chat store's rows.
import { createHash } from 'node:crypto';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import {
  chmod,
  copyFile,
  mkdir,
  mkdtemp,
  readdir,
  readFile,
  rm,
  stat,
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
  type CellEntry,
  type EncapsulationEntry,
  type SnapshotHeader,
} from '../../../src/manifest/index.ts';
import { schemaToDdl, type SchemaDescription } from '../../../src/mapping/index.ts';
import { freePort, portIsFree } from '../../../src/util/net.ts';

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

interface Manifest {
  readonly snapshot: {
    readonly id: string;
    readonly tables: { name: string; columns: string[] }[];
  };
  readonly schema: SchemaDescription;
  readonly cells: CellEntry[];
  readonly encapsulations: EncapsulationEntry[];
}

/** A stored manifest (`snapshots/<id>.json.gz`) as text: the signed, uncompressed bytes. */
async function manifestText(path: string): Promise<string> {
  return gunzipSync(await readFile(path)).toString('utf8');
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
 * own would: the body's sha256 and the signature line are made consistent again.
 */
function resign(text: string, key: { privateKey: Uint8Array }): string {
  const lines = text.split('\n');
  const last = lines.at(-2) ?? '';
  const body = `${lines.slice(0, -2).join('\n')}\n`;
  const bodySha256 = createHash('sha256').update(body, 'utf8').digest('hex');
  const old = JSON.parse(last.slice('"signature":'.length, -1)) as { keyId: string };
  const value = sign(key.privateKey, Buffer.from(`lethe.manifest.v3\n${bodySha256}\n`, 'utf8'));
  return `${body}"signature":${JSON.stringify({ algorithm: 'ed25519', keyId: old.keyId, sha256: bodySha256, value })}}\n`;
}

/** Writes a manifest as the backup does (ManifestWriter, gzip), signed by `key`. */
async function writeManifest(
  path: string,
  parts: {
    header: SnapshotHeader;
    schema: SchemaDescription;
    cells: readonly CellEntry[];
    encapsulations: readonly EncapsulationEntry[];
  },
  key: { privateKey: Uint8Array },
): Promise<void> {
  const writer = new ManifestWriter(parts.header, parts.schema);
  const chunks: Buffer[] = [];
  const collected = (async () => {
    for await (const chunk of writer.stream) chunks.push(chunk as Buffer);
  })();
  for (const cell of parts.cells) await writer.cell(cell);
  writer.finish(parts.encapsulations, new Date('2026-01-01T00:00:01.000Z'), (message) => ({
    keyId: 'test',
    value: sign(key.privateKey, message),
  }));
  await collected;
  await writeFile(path, Buffer.concat(chunks));
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

  const pick = (predicate: (c: CellEntry) => boolean, what: string): CellEntry => {
    const found = manifests[1].cells.filter(predicate).sort((a, b) => b.rows - a.rows)[0];
    if (found === undefined) throw new Error(`the demo's second snapshot has no ${what}`);
    return found;
  };

  beforeAll(async () => {
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
    manifests = [
      JSON.parse(await manifestText(manifestFiles[0])) as Manifest,
      JSON.parse(await manifestText(manifestFiles[1])) as Manifest,
    ];

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
    if (dir !== '') {
      expect(await exists(join(dir, 'pg', 'postmaster.pid'))).toBe(false);
      await rm(dir, { recursive: true, force: true });
    }
  }, 60_000);

  it('lists the cells of a manifest with their table and row count', async () => {
    const listed = (await runOk(SCRIPT, ['--signing-key', signingKey, '--list', '--manifest', manifestFiles[1]])).toString(
      'utf8',
    );
    const lines = listed.trimEnd().split('\n');
    expect(lines).toHaveLength(manifests[1].cells.length);
    const [cell] = manifests[1].cells;
    expect(lines[0]).toBe(`${cell?.id}\t${cell?.table}\t${cell?.rows}`);
    const users = (
      await runOk(SCRIPT, [
        '--signing-key',
        signingKey,
        '--list',
        '--manifest',
        manifestFiles[1],
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
  });

  const ALL_DIMENSIONS = ['period', 'user', 'conversation', 'tenant'];
  it.each([
    [
      'a messages cell written by the second backup',
      (c: CellEntry) => c.table === 'messages' && !c.reused,
      ALL_DIMENSIONS,
    ],
    ['an attachments cell (bytea)', (c: CellEntry) => c.table === 'attachments', ALL_DIMENSIONS],
    ['a users cell, which has no period key', (c: CellEntry) => c.table === 'users', ['user', 'tenant']],
    ['a tenants cell, whose key derives from the tenant key only', (c: CellEntry) => c.table === 'tenants', ['tenant']],
    [
      'a messages cell reused from the first backup (an earlier encapsulation)',
      (c: CellEntry) => c.table === 'messages' && c.reused,
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
    const cell = pick((c) => c.table === 'messages' && c.reused, 'reused messages cell');
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
    const cell = pick((c) => c.table === 'messages' && !c.reused, 'new messages cell');
    const bad = join(dir, 'objects-flipped');
    await mkdir(join(bad, dirname(cell.pack)), { recursive: true });
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
    const cell = pick((c) => c.table === 'messages' && !c.reused, 'new messages cell');
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
        pick((c) => c.table === 'messages' && c.reused, 'reused messages cell'),
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
      run(SCRIPT, [...keys, '--list', '--manifest', manifest]);
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
  });

  it('refuses an ephemeral key replaced in a manifest re-signed with another key: the signature check stops it', async () => {
    const cell = pick((c) => c.table === 'messages' && !c.reused, 'new messages cell');
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
      const cell = pick((c) => c.table === 'messages' && !c.reused, 'new messages cell');
      const enc = manifests[1].encapsulations.find((e) => e.id === cell.enc);
      if (enc === undefined) throw new Error(`encapsulation ${cell.enc} is not in the manifest`);
      const key = generateSigningKey();
      const base = join(dir, name);
      await mkdir(join(base, 'snapshots'), { recursive: true });
      const pub = join(base, 'signing.pub');
      await writeFile(pub, publicKeyToPem(key.publicKey));
      const id = '20260101T000000Z-0f0f0f';
      const manifest = join(base, 'snapshots', `${id}.json.gz`);
      await writeManifest(
        manifest,
        { header: { ...SYNTHETIC_HEADER, id }, schema: SYNTHETIC_SCHEMA, cells: [cell], encapsulations: [replaced(enc)] },
        key,
      );
      const outDir = join(base, 'out');
      await mkdir(outDir);
      const result = await decrypt(manifest, cell.id, ['--out', join(outDir, 'cell.copy')], keysExport, objects, pub);
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
      const { result, written } = await signedWith('unknown-kem', (e) => ({ ...e, kem: 'x25519-mlkem768' }) as unknown as EncapsulationEntry);
      expect(result.code).toBe(2);
      expect(result.stderr).toMatch(/of kem 'x25519-mlkem768'; dr-decrypt\.sh opens only kem "x25519"/);
      expect(result.stdout.length).toBe(0);
      expect(written).toEqual([]);
    });
  });
});
