import fc from 'fast-check';
import { cp, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ErrorCode } from '../../../src/errors/index.ts';
import {
  addMessages,
  applyChurn,
  demoSample,
  REFERENCE_END,
  REFERENCE_TABLES,
  seedChatStore,
  TRICKY_BODIES,
  type SeedStats,
} from '../../../src/store/index.ts';
import { copyRows } from '../../../src/store/copy-load.ts';
import { copyRow, copyText } from '../../../src/store/copy-text.ts';
import { fileDigests, filesUnder } from '../../helpers/lethe-env.ts';
import { createTestDatabase } from '../../helpers/postgres.ts';
import { scalar, tableHash, withDb } from './db.ts';

type Db = Awaited<ReturnType<typeof createTestDatabase>>;
const dbs: Db[] = [];
async function freshDb(prefix: string, template?: string): Promise<Db> {
  const db = await createTestDatabase(prefix, template);
  dbs.push(db);
  return db;
}
const dirs: string[] = [];
/** A new empty directory for a store's files (its object store). */
async function freshDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'lethe-seed-files-'));
  dirs.push(dir);
  return dir;
}
afterAll(async () => {
  for (const db of dbs) await db.drop();
  for (const dir of dirs) await rm(dir, { recursive: true, force: true });
});

interface FileRow {
  id: string;
  message_id: string;
  uploader_id: string;
  sender_id: string;
  object_key: string;
  content_type: string;
  byte_size: string;
}

async function fileRows(url: string): Promise<FileRow[]> {
  return withDb(url, async (c) => {
    const { rows } = await c.query<FileRow>(
      `SELECT f.id::text AS id, f.message_id::text AS message_id, f.uploader_id::text AS uploader_id,
              m.sender_id::text AS sender_id, f.object_key, f.content_type, f.byte_size::text AS byte_size
         FROM public.files f JOIN public.messages m ON m.id = f.message_id ORDER BY f.id`,
    );
    return rows;
  });
}

async function hashes(url: string): Promise<Record<string, string>> {
  return withDb(url, async (c) => {
    const out: Record<string, string> = {};
    for (const table of REFERENCE_TABLES) out[table] = await tableHash(c, table);
    return out;
  });
}

describe('seedChatStore (small)', () => {
  let a: Db;
  let aFiles: string;
  let stats: SeedStats;
  beforeAll(async () => {
    a = await freshDb('seed_a');
    aFiles = await freshDir();
    stats = await seedChatStore(a.url, { scale: 'small', seed: 7, filesDir: aFiles });
  });

  it('is deterministic: same seed, same contents and files; another seed, other contents', async () => {
    const b = await freshDb('seed_b');
    const c = await freshDb('seed_c');
    const bFiles = await freshDir();
    const cFiles = await freshDir();
    await seedChatStore(b.url, { scale: 'small', seed: 7, filesDir: bFiles });
    await seedChatStore(c.url, { scale: 'small', seed: 8, filesDir: cFiles });
    const [ha, hb, hc] = await Promise.all([hashes(a.url), hashes(b.url), hashes(c.url)]);
    expect(hb).toEqual(ha);
    for (const table of REFERENCE_TABLES) expect(hc[table], table).not.toBe(ha[table]);
    const [fa, fb, fc] = await Promise.all([
      fileDigests(aFiles),
      fileDigests(bFiles),
      fileDigests(cFiles),
    ]);
    expect(Object.keys(fa).length).toBeGreaterThan(100);
    expect(fb).toEqual(fa);
    const shared = Object.values(fc).filter((d) => Object.values(fa).includes(d));
    expect(shared).toEqual([]);
  });

  it('keeps about half of its bytes in files outside the database, each where its row points', async () => {
    const rows = await fileRows(a.url);
    expect(rows).toHaveLength(stats.rows.files);
    expect(stats.files).toMatchObject({ dir: aFiles, count: rows.length });
    // Exactly one file per row, of the row's size, and nothing else in the directory.
    expect(await filesUnder(aFiles)).toEqual(rows.map((r) => r.object_key).sort());
    let total = 0;
    for (const row of rows) {
      expect((await stat(join(aFiles, row.object_key))).size, row.object_key).toBe(
        Number(row.byte_size),
      );
      expect(row.object_key).toMatch(/^t\d+\/\d{4}\/\d{2}\/[0-9a-f]{16}\/\d+\.[a-z0-9]+$/);
      expect(row.uploader_id).toBe(row.sender_id);
      total += Number(row.byte_size);
    }
    expect(stats.files.bytes).toBe(total);
    const share = stats.files.bytes / (stats.files.bytes + stats.bytes);
    expect(share).toBeGreaterThan(0.35);
    expect(share).toBeLessThan(0.65);
  });

  it('mixes compressible and incompressible files, and forwarded copies with the same bytes', async () => {
    const rows = await fileRows(a.url);
    const digests = await fileDigests(aFiles);
    const kinds = new Set(rows.map((r) => r.content_type));
    expect(kinds.size).toBeGreaterThanOrEqual(6);
    let compressible = 0;
    let incompressible = 0;
    for (const row of rows.slice(0, 60)) {
      const bytes = await readFile(join(aFiles, row.object_key));
      const r = gzipSync(bytes).length / bytes.length;
      if (r < 0.2) compressible++;
      if (r > 0.99) incompressible++;
      expect(r < 0.2 || r > 0.99, row.object_key).toBe(true);
    }
    expect(compressible).toBeGreaterThan(5);
    expect(incompressible).toBeGreaterThan(20);
    const distinct = new Set(Object.values(digests)).size;
    expect(distinct).toBeLessThan(rows.length);
    expect(distinct).toBeGreaterThan(rows.length * 0.85);
  });

  it('refuses a files directory that is not empty, before touching the database', async () => {
    const db = await freshDb('seed_dirty');
    const dir = await freshDir();
    await writeFile(join(dir, 'left-over'), 'x');
    await expect(seedChatStore(db.url, { scale: 'small', filesDir: dir })).rejects.toMatchObject({
      code: ErrorCode.TARGET_NOT_EMPTY,
      message: expect.stringContaining(`file directory ${dir} is not empty`) as string,
    });
    expect(await filesUnder(dir)).toEqual(['left-over']);
    const left = await withDb(db.url, (c) =>
      scalar<string>(
        c,
        `SELECT count(*)::text AS v FROM pg_class WHERE relnamespace = 'public'::regnamespace`,
      ),
    );
    expect(left).toBe('0');
  });

  it('reports what it loaded, at about 10 MB', async () => {
    expect(stats.scale).toBe('small');
    expect(stats.seed).toBe(7);
    expect(stats.rows.tenants).toBe(12);
    expect(stats.rows.messages).toBe(30_000);
    expect(stats.bytes).toBeGreaterThan(6_000_000);
    expect(stats.bytes).toBeLessThan(20_000_000);
    await withDb(a.url, async (c) => {
      for (const table of REFERENCE_TABLES) {
        expect(
          Number(await scalar<string>(c, `SELECT count(*) AS v FROM public.${table}`)),
          table,
        ).toBe(stats.rows[table]);
      }
    });
  });

  it('writes text in several scripts, emoji, and empty (not NULL) bodies', async () => {
    await withDb(a.url, async (c) => {
      const scripts: Record<string, string> = {
        han: '[一-鿿]',
        kana: '[ぁ-ゟ゠-ヿ]',
        arabic: '[؀-ۿ]',
        cyrillic: '[Ѐ-ӿ]',
        devanagari: '[ऀ-ॿ]',
        hangul: '[가-힯]',
        emoji: '(👍|🎉|😂|🙏|🔥|🚀|👀|🤔)',
        latinDiacritics: '[äöüßéèçñ]',
      };
      for (const [name, pattern] of Object.entries(scripts)) {
        const n = Number(
          await scalar<string>(c, 'SELECT count(*) AS v FROM public.messages WHERE body ~ $1', [
            pattern,
          ]),
        );
        expect(n, name).toBeGreaterThan(20);
      }
      expect(
        Number(
          await scalar<string>(c, `SELECT count(*) AS v FROM public.messages WHERE body = ''`),
        ),
      ).toBeGreaterThan(20);
      expect(
        Number(
          await scalar<string>(
            c,
            `SELECT count(*) AS v FROM public.users WHERE display_name ~ '[一-鿿぀-ヿ؀-ۿ]'`,
          ),
        ),
      ).toBeGreaterThan(0);
    });
  });

  it('keeps every tricky body byte for byte (tabs, newlines, CR, backslashes, \\N, \\.)', async () => {
    await withDb(a.url, async (c) => {
      for (const body of TRICKY_BODIES) {
        const n = Number(
          await scalar<string>(c, 'SELECT count(*) AS v FROM public.messages WHERE body = $1', [
            body,
          ]),
        );
        expect(n, JSON.stringify(body)).toBeGreaterThan(0);
      }
      expect(
        await scalar<string>(c, `SELECT count(*) AS v FROM public.messages WHERE body IS NULL`),
      ).toBe('0');
      const withTab = await scalar<string>(
        c,
        `SELECT count(*) AS v FROM public.messages WHERE strpos(body, E'\\t') > 0`,
      );
      const withBackslash = await scalar<string>(
        c,
        `SELECT count(*) AS v FROM public.messages WHERE strpos(body, E'\\\\') > 0`,
      );
      const withNewline = await scalar<string>(
        c,
        `SELECT count(*) AS v FROM public.messages WHERE strpos(body, E'\\n') > 0`,
      );
      expect(Number(withTab)).toBeGreaterThan(0);
      expect(Number(withBackslash)).toBeGreaterThan(0);
      expect(Number(withNewline)).toBeGreaterThan(Number(withTab));
    });
  });

  it('skews tenants: the largest has at least 10x the median message count', async () => {
    await withDb(a.url, async (c) => {
      const { rows } = await c.query<{ n: string }>(
        `SELECT count(*) AS n FROM public.messages m JOIN public.conversations c ON c.id = m.conversation_id
          GROUP BY c.tenant_id ORDER BY count(*) DESC`,
      );
      const counts = rows.map((r) => Number(r.n));
      expect(counts).toHaveLength(12);
      const median = ((counts[5] ?? 0) + (counts[6] ?? 0)) / 2;
      expect(counts[0]).toBeGreaterThanOrEqual(10 * median);
    });
  });

  it('spans exactly 24 months ending at the fixed reference date', async () => {
    await withDb(a.url, async (c) => {
      const { rows } = await c.query<{ month: string }>(
        `SELECT DISTINCT to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM') AS month FROM public.messages ORDER BY 1`,
      );
      expect(rows).toHaveLength(24);
      expect(rows[0]?.month).toBe('2024-11');
      expect(rows.at(-1)?.month).toBe('2026-10');
      const last = await scalar<Date>(c, 'SELECT max(created_at) AS v FROM public.messages');
      expect(last.getTime()).toBeLessThanOrEqual(REFERENCE_END.getTime());
      expect(last.getTime()).toBeGreaterThan(REFERENCE_END.getTime() - 86_400_000);
    });
  });

  it('has bursty authors: in the largest tenant a tenth of the senders write most messages', async () => {
    await withDb(a.url, async (c) => {
      const { rows } = await c.query<{ n: string }>(
        `WITH big AS (SELECT c.tenant_id FROM public.messages m JOIN public.conversations c ON c.id = m.conversation_id
                       GROUP BY 1 ORDER BY count(*) DESC LIMIT 1)
         SELECT count(*) AS n FROM public.messages m JOIN public.conversations c ON c.id = m.conversation_id
          WHERE c.tenant_id = (SELECT tenant_id FROM big) GROUP BY m.sender_id ORDER BY count(*) DESC`,
      );
      const counts = rows.map((r) => Number(r.n));
      const total = counts.reduce((x, y) => x + y, 0);
      const top = counts.slice(0, Math.ceil(counts.length / 10)).reduce((x, y) => x + y, 0);
      expect(top / total).toBeGreaterThan(0.5);
    });
  });

  it('keeps relations consistent: threads, edits, attachments, memberships', async () => {
    await withDb(a.url, async (c) => {
      const q = async (sql: string): Promise<number> =>
        Number(await scalar<string>(c, `SELECT (${sql})::text AS v`));
      expect(
        await q('SELECT count(*) FROM public.messages WHERE thread_root_id IS NOT NULL'),
      ).toBeGreaterThan(500);
      // A reply's root is a root message of the same conversation, and older.
      expect(
        await q(`SELECT count(*) FROM public.messages r JOIN public.messages m ON m.id = r.thread_root_id
                  WHERE m.thread_root_id IS NOT NULL OR m.conversation_id <> r.conversation_id OR m.id >= r.id`),
      ).toBe(0);
      expect(
        await q(
          `SELECT count(*) FROM public.messages m WHERE m.edited <> EXISTS (SELECT 1 FROM public.message_edits e WHERE e.message_id = m.id)`,
        ),
      ).toBe(0);
      expect(
        await q(
          `SELECT count(*) FROM public.message_edits e JOIN public.messages m ON m.id = e.message_id WHERE e.edited_at_ms < (extract(epoch FROM m.created_at) * 1000)::bigint`,
        ),
      ).toBe(0);
      expect(
        await q(
          `SELECT count(*) FROM public.messages m WHERE NOT EXISTS (SELECT 1 FROM public.memberships mb WHERE mb.conversation_id = m.conversation_id AND mb.user_id = m.sender_id)`,
        ),
      ).toBe(0);
      expect(
        await q(
          `SELECT count(*) FROM public.attachments a JOIN public.messages m ON m.id = a.message_id JOIN public.conversations c ON c.id = m.conversation_id WHERE a.tenant_id <> c.tenant_id`,
        ),
      ).toBe(0);
      expect(
        await q(`SELECT min(octet_length(content)) FROM public.attachments`),
      ).toBeGreaterThanOrEqual(2048);
      expect(
        await q(`SELECT max(octet_length(content)) FROM public.attachments`),
      ).toBeLessThanOrEqual(64 * 1024);
      expect(
        await q(`SELECT count(DISTINCT octet_length(content)) FROM public.attachments`),
      ).toBeGreaterThan(50);
      expect(await q(`SELECT count(DISTINCT kind) FROM public.conversations`)).toBe(3);
      expect(
        await q(`SELECT count(*) FROM public.conversations WHERE created_by IS NULL`),
      ).toBeGreaterThan(0);
      // The identity sequence was moved past the loaded ids.
      expect(
        await q(
          `SELECT nextval(pg_get_serial_sequence('public.message_edits', 'id')) - (SELECT max(id) FROM public.message_edits)`,
        ),
      ).toBe(1);
    });
  });

  it('refuses to seed over existing tables and leaves them untouched', async () => {
    const before = await hashes(a.url);
    await expect(
      seedChatStore(a.url, { scale: 'small', seed: 9, filesDir: await freshDir() }),
    ).rejects.toMatchObject({
      code: ErrorCode.TARGET_NOT_EMPTY,
      message: expect.stringContaining('seed into a fresh database') as string,
    });
    expect(await hashes(a.url)).toEqual(before);
  });

  it('appends messages in the latest days only, leaving older rows unchanged', async () => {
    const x = await freshDb('seed_add_x', a.name);
    const y = await freshDb('seed_add_y', a.name);
    const oldMax = await withDb(a.url, (c) =>
      scalar<string>(c, 'SELECT max(id)::text AS v FROM public.messages'),
    );
    const oldHash = await withDb(a.url, (c) => tableHash(c, 'messages'));

    expect(await addMessages(x.url, { count: 500, seed: 3 })).toEqual({
      messages: 500,
      files: 0,
      fileBytes: 0,
    });
    await addMessages(y.url, { count: 500, seed: 3 });
    await withDb(x.url, async (c) => {
      expect(await tableHash(c, 'messages', `id <= ${oldMax}`)).toBe(oldHash);
      const { rows } = await c.query<{ n: string; lo: string; hi: string; months: string[] }>(
        `SELECT count(*) AS n, min(id)::text AS lo, max(id)::text AS hi,
                array_agg(DISTINCT to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM')) AS months
           FROM public.messages WHERE id > $1`,
        [oldMax],
      );
      expect(rows[0]).toEqual({
        n: '500',
        lo: String(Number(oldMax) + 1),
        hi: String(Number(oldMax) + 500),
        months: ['2026-10'],
      });
      const strangers = await scalar<string>(
        c,
        `SELECT count(*) AS v FROM public.messages m WHERE m.id > $1 AND NOT EXISTS
           (SELECT 1 FROM public.memberships mb WHERE mb.conversation_id = m.conversation_id AND mb.user_id = m.sender_id)`,
        [oldMax],
      );
      expect(strangers).toBe('0');
    });
    const [hx, hy] = await Promise.all([
      withDb(x.url, (c) => tableHash(c, 'messages')),
      withDb(y.url, (c) => tableHash(c, 'messages')),
    ]);
    expect(hx).toBe(hy);

    // A second call with the same seed appends different messages (the stream depends on max id).
    await addMessages(x.url, { count: 50, seed: 3, at: new Date('2026-11-02T12:00:00Z') });
    await withDb(x.url, async (c) => {
      const months = await scalar<string[]>(
        c,
        `SELECT array_agg(DISTINCT to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM')) AS v FROM public.messages WHERE id > $1 + 500`,
        [oldMax],
      );
      expect(months.every((m) => m === '2026-10' || m === '2026-11')).toBe(true);
      const same = await scalar<string>(
        c,
        `SELECT count(*) AS v FROM public.messages a JOIN public.messages b ON b.id = a.id + 500
          WHERE a.id > $1 AND a.id <= $1 + 50 AND a.body = b.body AND a.body <> ''`,
        [oldMax],
      );
      expect(Number(same)).toBeLessThan(10);
    });
    await expect(addMessages(x.url, { count: 0, seed: 1 })).rejects.toMatchObject({
      code: ErrorCode.USAGE,
    });
  });

  it("adds files with new messages when given the files directory, and churn removes deleted messages' files", async () => {
    const x = await freshDb('seed_files_x', a.name);
    const dir = await freshDir();
    const before = await fileRows(a.url);
    const oldMax = await withDb(a.url, (c) =>
      scalar<string>(c, 'SELECT max(id)::text AS v FROM public.messages'),
    );
    const added = await addMessages(x.url, { count: 2000, seed: 5, filesDir: dir });
    expect(added.messages).toBe(2000);
    // About 1% of the new messages: 20 expected; the bounds hold for any seed with overwhelming odds.
    expect(added.files).toBeGreaterThan(5);
    expect(added.files).toBeLessThan(50);
    const after = await fileRows(x.url);
    const fresh = after.slice(before.length);
    expect(after.slice(0, before.length)).toEqual(before);
    expect(fresh).toHaveLength(added.files);
    expect(await filesUnder(dir)).toEqual(fresh.map((r) => r.object_key).sort());
    let bytes = 0;
    for (const row of fresh) {
      expect(BigInt(row.message_id) > BigInt(oldMax)).toBe(true);
      expect(row.uploader_id).toBe(row.sender_id);
      expect((await stat(join(dir, row.object_key))).size).toBe(Number(row.byte_size));
      bytes += Number(row.byte_size);
    }
    expect(added.fileBytes).toBe(bytes);

    // Churn: deleted messages take their files (rows, then bytes); added ones bring new files.
    const churnDir = await freshDir();
    await cp(aFiles, churnDir, { recursive: true });
    const y = await freshDb('seed_files_y', a.name);
    const churn = await applyChurn(y.url, {
      addFraction: 0.05,
      editFraction: 0,
      deleteFraction: 0.2,
      seed: 6,
      filesDir: churnDir,
    });
    expect(churn.deletedDependents.files).toBeGreaterThan(0);
    expect(churn.addedFiles.files).toBeGreaterThan(0);
    const rowsAfter = await fileRows(y.url);
    expect(rowsAfter.length).toBe(
      before.length - churn.deletedDependents.files + churn.addedFiles.files,
    );
    expect(await filesUnder(churnDir)).toEqual(rowsAfter.map((r) => r.object_key).sort());
  });

  it('picks a demo user with messages in several months', async () => {
    const sample = await demoSample(a.url);
    expect(sample).toEqual(await demoSample(a.url));
    await withDb(a.url, async (c) => {
      const months = await scalar<string>(
        c,
        `SELECT count(DISTINCT date_trunc('month', m.created_at AT TIME ZONE 'UTC'))::text AS v
           FROM public.messages m JOIN public.users u ON u.id = m.sender_id
          WHERE u.id = $1 AND u.tenant_id = $2`,
        [sample.user, sample.tenant],
      );
      expect(Number(months)).toBeGreaterThanOrEqual(3);
      const inConversation = await scalar<string>(
        c,
        'SELECT count(*)::text AS v FROM public.messages WHERE sender_id = $1 AND conversation_id = $2',
        [sample.user, sample.conversation],
      );
      expect(Number(inConversation)).toBeGreaterThan(0);
    });
  });
});

describe('seedChatStore failure paths', () => {
  it('rejects a bad scale or seed before touching the database', async () => {
    await expect(
      seedChatStore('postgres://nowhere.invalid/x', {
        scale: 'huge' as 'small',
        filesDir: '/nonexistent',
      }),
    ).rejects.toMatchObject({ code: ErrorCode.USAGE });
    await expect(
      seedChatStore('postgres://nowhere.invalid/x', {
        scale: 'small',
        seed: -1,
        filesDir: '/nonexistent',
      }),
    ).rejects.toMatchObject({ code: ErrorCode.USAGE });
  });

  it('rolls everything back when aborted mid-load, files too', async () => {
    const db = await freshDb('seed_abort');
    const dir = await freshDir();
    const controller = new AbortController();
    const progress: string[] = [];
    const run = seedChatStore(db.url, {
      scale: 'small',
      filesDir: dir,
      signal: controller.signal,
      onProgress: ({ table, rows }) => {
        progress.push(table);
        if (table === 'messages' && rows > 5000) controller.abort();
      },
    });
    await expect(run).rejects.toMatchObject({ code: ErrorCode.ABORTED });
    expect(progress).toContain('tenants');
    expect(progress).not.toContain('attachments');
    const left = await withDb(db.url, (c) =>
      scalar<string>(
        c,
        `SELECT count(*)::text AS v FROM pg_class WHERE relnamespace = 'public'::regnamespace`,
      ),
    );
    expect(left).toBe('0');
    expect(await filesUnder(dir)).toEqual([]);
    await expect(
      seedChatStore(db.url, { scale: 'small', filesDir: dir, signal: AbortSignal.abort() }),
    ).rejects.toMatchObject({ code: ErrorCode.ABORTED });
  });
});

describe('COPY text encoding against the server', () => {
  it('round-trips arbitrary Unicode text, including escapes and the NULL marker', async () => {
    const db = await freshDb('copy_prop');
    await withDb(db.url, async (c) => {
      await c.query('CREATE TABLE public.t (i int PRIMARY KEY, s text NOT NULL)');
      const wellFormed = (s: string): boolean =>
        !s.includes('\u0000') && Buffer.from(s, 'utf8').toString('utf8') === s;
      const text = fc.oneof(
        fc.string({ unit: 'binary' }).filter(wellFormed),
        fc.constantFrom(...TRICKY_BODIES, '\\N', '\\', '\t', '\n', '\r', '\\\\N'),
      );
      await fc.assert(
        fc.asyncProperty(fc.array(text, { minLength: 1, maxLength: 60 }), async (values) => {
          await c.query('TRUNCATE public.t');
          const rows = values.map((v, i) => copyRow([String(i), copyText(v)]));
          expect(await copyRows(c, 'public.t', ['i', 's'], rows)).toBe(values.length);
          const back = await c.query<{ s: string }>('SELECT s FROM public.t ORDER BY i');
          expect(back.rows.map((r) => r.s)).toEqual(values);
        }),
        { numRuns: 40 },
      );
    });
  });
});
