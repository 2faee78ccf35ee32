import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type pg from 'pg';
import { from as copyFrom, to as copyTo } from 'pg-copy-streams';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  BUILTIN_MAPPING,
  buildCellQuery,
  buildFingerprintQuery,
  buildOrphanCheckQuery,
  cellFilterKey,
  checkCoverage,
  segmentFilterKey,
  parseMapping,
  readSchema,
  schemaToDdl,
  type Granularity,
  type Mapping,
  type TableInfo,
} from '../../../src/mapping/index.ts';
import { seedChatStore } from '../../../src/store/index.ts';
import { copySessionStatements, groupCells, type RowFingerprint } from '../../../src/cells/index.ts';
import { createTestDatabase } from '../../helpers/postgres.ts';
import { tableHash, withDb } from '../store/db.ts';

type Db = Awaited<ReturnType<typeof createTestDatabase>>;
let db: Db;
let filesDir: string;
let tables: TableInfo[];
beforeAll(async () => {
  db = await createTestDatabase('cells');
  filesDir = await mkdtemp(join(tmpdir(), 'lethe-cells-files-'));
  await seedChatStore(db.url, { scale: 'small', seed: 11, filesDir });
  ({ tables } = await checkCoverage(db.url, BUILTIN_MAPPING));
});
afterAll(async () => {
  await db.drop();
  await rm(filesDir, { recursive: true, force: true });
});

function info(name: string): TableInfo {
  const found = tables.find((t) => t.name === name);
  if (found === undefined) throw new Error(`no table ${name}`);
  return found;
}

function cellQuery(
  name: string,
  granularity: Granularity = 'month',
  mapping: Mapping = BUILTIN_MAPPING,
): string {
  return buildCellQuery(mapping, name, info(name).copyColumns, granularity);
}

/** Rolls back whatever `fn` did. */
async function rolledBack(client: pg.Client, fn: () => Promise<void>): Promise<void> {
  await client.query('BEGIN');
  try {
    await fn();
  } finally {
    await client.query('ROLLBACK');
  }
}

/** ISO 8601 week of a UTC instant, as `2026-W44`. */
function isoWeek(date: Date): string {
  const d = new Date(Date.UTC(date.getUTCFullYear(), date.getUTCMonth(), date.getUTCDate()));
  const day = d.getUTCDay() || 7;
  d.setUTCDate(d.getUTCDate() + 4 - day);
  const yearStart = Date.UTC(d.getUTCFullYear(), 0, 1);
  const week = Math.ceil(((d.getTime() - yearStart) / 86_400_000 + 1) / 7);
  return `${d.getUTCFullYear()}-W${String(week).padStart(2, '0')}`;
}

/** Byte order (COLLATE "C"), NULLs last. */
function compareText(a: string | null, b: string | null): number {
  if (a === b) return 0;
  if (a === null) return 1;
  if (b === null) return -1;
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

describe('buildCellQuery on the seeded reference store', () => {
  it('yields every row of every table exactly once', async () => {
    await withDb(db.url, async (c) => {
      for (const table of tables) {
        const pk = table.primaryKey.map((col) => `q."${col}"`).join(', ');
        for (const granularity of ['month', 'week'] as const) {
          const { rows } = await c.query<{ n: string; d: string; total: string }>(
            `SELECT count(*) AS n, count(DISTINCT (${pk})) AS d, (SELECT count(*) FROM public.${table.name}) AS total
               FROM (${cellQuery(table.name, granularity)}) q`,
          );
          const row = rows[0];
          expect(Number(row?.total), table.name).toBeGreaterThan(0);
          expect(row?.n, table.name).toBe(row?.total);
          expect(row?.d, table.name).toBe(row?.total);
        }
      }
    });
  });

  it('orders rows by tenant, period, author, conversation (byte order, NULLs last), then primary key', async () => {
    await withDb(db.url, async (c) => {
      for (const name of ['messages', 'message_edits', 'memberships', 'tenants', 'attachments']) {
        const pk = info(name).primaryKey;
        const { rows } = await c.query<Record<string, string | null>>(
          `SELECT lethe_tenant, lethe_period, lethe_author, lethe_conversation, ${pk.map((k) => `q."${k}"::text AS "${k}"`).join(', ')}
             FROM (${cellQuery(name)}) q`,
        );
        let violations = 0;
        for (let i = 1; i < rows.length; i++) {
          const a = rows[i - 1] ?? {};
          const b = rows[i] ?? {};
          let cmp = 0;
          for (const dim of ['lethe_tenant', 'lethe_period', 'lethe_author', 'lethe_conversation']) {
            cmp = compareText(a[dim] ?? null, b[dim] ?? null);
            if (cmp !== 0) break;
          }
          for (const k of pk) {
            if (cmp !== 0) break;
            cmp = Number(a[k]) - Number(b[k]);
          }
          if (cmp >= 0) violations++;
        }
        expect(violations, name).toBe(0);
        // The order is not trivially the primary key order.
        expect(rows.map((r) => r[pk[0] ?? 'id'])).not.toEqual(
          rows.map((r) => r[pk[0] ?? 'id']).sort((x, y) => Number(x) - Number(y)),
        );
      }
    });
  });

  it('computes periods in UTC for timestamptz and epoch_ms, whatever the session time zone', async () => {
    await withDb(db.url, async (c) => {
      await c.query(`SET TimeZone = 'Pacific/Kiritimati'`); // UTC+14: local dates differ from UTC ones
      const messages = await c.query<{ lethe_period: string; created_at: Date }>(
        `SELECT lethe_period, created_at FROM (${cellQuery('messages', 'week')}) q`,
      );
      expect(messages.rows.filter((r) => r.lethe_period !== isoWeek(r.created_at))).toEqual([]);
      const edits = await c.query<{ lethe_period: string; edited_at_ms: string }>(
        `SELECT lethe_period, edited_at_ms FROM (${cellQuery('message_edits', 'day')}) q`,
      );
      expect(
        edits.rows.filter(
          (r) => r.lethe_period !== new Date(Number(r.edited_at_ms)).toISOString().slice(0, 10),
        ),
      ).toEqual([]);
      const attachments = await c.query<{ lethe_period: string; created_at_ms: string }>(
        `SELECT lethe_period, created_at_ms FROM (${cellQuery('attachments')}) q`,
      );
      expect(
        attachments.rows.filter(
          (r) => r.lethe_period !== new Date(Number(r.created_at_ms)).toISOString().slice(0, 7),
        ),
      ).toEqual([]);

      await rolledBack(c, async () => {
        // The last millisecond of January for the message, the first of February for its edit.
        await c.query(
          `INSERT INTO public.messages (id, conversation_id, sender_id, body, created_at)
             SELECT 900000001, conversation_id, user_id, 'boundary', '2025-01-31T23:59:59.999Z' FROM public.memberships LIMIT 1`,
        );
        await c.query(
          `INSERT INTO public.message_edits (id, message_id, editor_id, previous_body, edited_at_ms)
             SELECT 900000001, id, sender_id, 'before', $1 FROM public.messages WHERE id = 900000001`,
          [Date.UTC(2025, 1, 1)],
        );
        const at = async (table: string, granularity: Granularity): Promise<string | undefined> => {
          const { rows } = await c.query<{ p: string }>(
            `SELECT lethe_period AS p FROM (${cellQuery(table, granularity)}) q WHERE q.id = 900000001`,
          );
          return rows[0]?.p;
        };
        expect(await at('messages', 'month')).toBe('2025-01');
        expect(await at('messages', 'day')).toBe('2025-01-31');
        expect(await at('messages', 'week')).toBe('2025-W05');
        expect(await at('message_edits', 'month')).toBe('2025-02');
        expect(await at('message_edits', 'day')).toBe('2025-02-01');
        await c.query(
          `UPDATE public.messages SET created_at = '2024-12-30T00:00:00Z' WHERE id = 900000001`,
        );
        expect(await at('messages', 'week')).toBe('2025-W01');
        expect(await at('messages', 'month')).toBe('2024-12');
      });
    });
  });

  it('gives "-" for a NULL timestamp, handles timestamp and epoch_s, and counts NULL tenants', async () => {
    await withDb(db.url, async (c) => {
      await rolledBack(c, async () => {
        await c.query(
          `CREATE TABLE public.notes (id bigint PRIMARY KEY, tenant_id bigint, at timestamp, at_s integer)`,
        );
        await c.query(
          `INSERT INTO public.notes VALUES (1, 5, NULL, NULL), (2, 5, '2025-03-31 23:30:00', 1743465600), (3, NULL, NULL, NULL)`,
        );
        const mapping = parseMapping({
          tables: {
            notes: {
              class: 'metadata',
              primaryKey: ['id'],
              tenant: 'tenant_id',
              timestamp: { column: 'at', type: 'timestamp' },
            },
            notes_s: {
              class: 'metadata',
              primaryKey: ['id'],
              tenant: 'tenant_id',
              timestamp: { column: 'at_s', type: 'epoch_s' },
            },
          },
        });
        const ts = await c.query(
          `SELECT lethe_tenant, lethe_period, lethe_author, id::text FROM (${buildCellQuery(mapping, 'notes', ['id'], 'month')}) q`,
        );
        expect(ts.rows).toEqual([
          { lethe_tenant: '5', lethe_period: '-', lethe_author: null, id: '1' },
          { lethe_tenant: '5', lethe_period: '2025-03', lethe_author: null, id: '2' },
          { lethe_tenant: null, lethe_period: '-', lethe_author: null, id: '3' },
        ]);
        const sql = buildCellQuery(mapping, 'notes_s', ['id'], 'day').replace(
          '"public"."notes_s"',
          '"public"."notes"',
        );
        const epoch = await c.query(`SELECT lethe_period FROM (${sql}) q WHERE id = 2`);
        expect(epoch.rows).toEqual([{ lethe_period: '2025-04-01' }]);
        const orphans = await c.query(buildOrphanCheckQuery(mapping, 'notes'));
        expect(orphans.rows).toEqual([{ dropped: '0', tenantless: '1' }]);
      });
    });
  });

  it('reports rows the joins would drop, which the cell query indeed leaves out', async () => {
    await withDb(db.url, async (c) => {
      for (const table of tables) {
        const { rows } = await c.query(buildOrphanCheckQuery(BUILTIN_MAPPING, table.name));
        expect(rows, table.name).toEqual([{ dropped: '0', tenantless: '0' }]);
      }
      await rolledBack(c, async () => {
        await c.query(`ALTER TABLE public.messages DROP CONSTRAINT messages_conversation_id_fkey;
                       ALTER TABLE public.memberships DROP CONSTRAINT memberships_conversation_id_fkey;`);
        const victim = await c.query<{ id: string; messages: string; edits: string }>(
          `SELECT m.conversation_id::text AS id, count(DISTINCT m.id)::text AS messages, count(e.id)::text AS edits
             FROM public.messages m JOIN public.message_edits e ON e.message_id = m.id
            GROUP BY m.conversation_id ORDER BY count(e.id) DESC LIMIT 1`,
        );
        const v = victim.rows[0];
        await c.query('DELETE FROM public.conversations WHERE id = $1', [v?.id]);
        type Orphans = { dropped: string; tenantless: string };
        const msgs = await c.query<Orphans>(buildOrphanCheckQuery(BUILTIN_MAPPING, 'messages'));
        const edits = await c.query<Orphans>(
          buildOrphanCheckQuery(BUILTIN_MAPPING, 'message_edits'),
        );
        expect(Number(msgs.rows[0]?.dropped)).toBeGreaterThan(0);
        expect(Number(edits.rows[0]?.dropped)).toBe(Number(v?.edits));
        const counts = await c.query<{ n: string; total: string }>(
          `SELECT count(*) AS n, (SELECT count(*) FROM public.messages) AS total FROM (${cellQuery('messages')}) q`,
        );
        expect(Number(counts.rows[0]?.total) - Number(counts.rows[0]?.n)).toBe(
          Number(msgs.rows[0]?.dropped),
        );
      });
    });
  });
});

/** Drops the first four tab-separated fields of every COPY text line. */
function stripDimensions(): Transform {
  let pending = Buffer.alloc(0);
  return new Transform({
    transform(chunk: Buffer, _encoding, callback: TransformCallback) {
      pending = Buffer.concat([pending, chunk]);
      const out: Buffer[] = [];
      let start = 0;
      for (let nl = pending.indexOf(10, start); nl !== -1; nl = pending.indexOf(10, start)) {
        let field = start;
        for (let k = 0; k < 5; k++) field = pending.indexOf(9, field) + 1;
        out.push(pending.subarray(field, nl + 1));
        start = nl + 1;
      }
      pending = pending.subarray(start);
      callback(null, Buffer.concat(out));
    },
  });
}

describe('COPY of a cell query', () => {
  it('loads back, minus the four dimension fields and the row hash, into an identical table', async () => {
    const names = tables.map((t) => t.name);
    const ddl = schemaToDdl(await readSchema(db.url, names, 'public'), { pgSchema: 'copy_back' });
    await withDb(db.url, async (reader) => {
      await withDb(db.url, async (writer) => {
        for (const sql of ddl.preData) await writer.query(sql);
        for (const table of tables) {
          const columns = table.copyColumns.map((col) => `"${col}"`).join(', ');
          await pipeline(
            reader.query(copyTo(`COPY (${cellQuery(table.name)}) TO STDOUT`)),
            stripDimensions(),
            writer.query(copyFrom(`COPY copy_back.${table.name} (${columns}) FROM STDIN`)),
          );
        }
        for (const sql of ddl.postData) await writer.query(sql);
        for (const table of tables) {
          expect(await tableHash(writer, table.name, 'true', 'copy_back'), table.name).toBe(
            await tableHash(writer, table.name),
          );
        }
      });
    });
  });
});

describe('fingerprints and filters, as the server computes them', () => {
  it('the server fingerprints cells and segments exactly as the backup sums its rows\' hashes', async () => {
    await withDb(db.url, async (c) => {
      await c.query('BEGIN');
      for (const statement of copySessionStatements()) await c.query(statement);
      for (const name of ['messages', 'message_edits', 'tenants', 'attachments']) {
        const columns = info(name).copyColumns;
        // bytea enters the row hash as its md5 (the backup passes every bytea column).
        const digest = new Set(name === 'attachments' ? ['content'] : []);
        // From the rows, as the backup reads them.
        const fromRows = new Map<string, string>();
        const bySegment = new Map<string, RowFingerprint>();
        for await (const cell of groupCells(c.query(copyTo(`COPY (${buildCellQuery(BUILTIN_MAPPING, name, columns, 'month', undefined, undefined, digest)}) TO STDOUT`)), 'messages')) {
          for await (const _row of cell.rows) {
            /* drain */
          }
          const { tenant, period, author, conversation } = cell.tuple;
          fromRows.set(JSON.stringify([tenant, period, author, conversation]), cell.fingerprint.text());
          const segment = JSON.stringify([tenant, period]);
          const sum = bySegment.get(segment);
          if (sum === undefined) bySegment.set(segment, cell.fingerprint);
          else sum.merge(cell.fingerprint.rows, cell.fingerprint.sums());
        }
        // From the server's aggregates.
        const text = (r: Record<string, string>): string => `${r['rows']}:${r['w0']}:${r['w1']}`;
        const cells = await c.query<Record<string, string>>(buildFingerprintQuery(BUILTIN_MAPPING, name, columns, 'month', 'cell', undefined, undefined, digest));
        expect(new Map(cells.rows.map((r) => [JSON.stringify([r['lethe_tenant'], r['lethe_period'], r['lethe_author'], r['lethe_conversation']]), text(r)])), name).toEqual(fromRows);
        const segments = await c.query<Record<string, string>>(buildFingerprintQuery(BUILTIN_MAPPING, name, columns, 'month', 'segment', undefined, undefined, digest));
        expect(new Map(segments.rows.map((r) => [JSON.stringify([r['lethe_tenant'], r['lethe_period']]), text(r)])), name).toEqual(
          new Map([...bySegment].map(([k, v]) => [k, v.text()])),
        );
      }
      await c.query('ROLLBACK');
    });
  });

  it('an edit that keeps the length changes the cell\'s fingerprint; setting a column to its own value does not', async () => {
    await withDb(db.url, async (c) => {
      await rolledBack(c, async () => {
        const columns = info('messages').copyColumns;
        const sql = buildFingerprintQuery(BUILTIN_MAPPING, 'messages', columns, 'month', 'cell');
        const snapshot = async (): Promise<string> => JSON.stringify((await c.query(sql)).rows);
        const before = await snapshot();
        await c.query(`UPDATE public.messages SET body = body WHERE id = (SELECT min(id) FROM public.messages)`);
        expect(await snapshot()).toBe(before);
        await c.query(`UPDATE public.messages SET body = overlay(body placing CASE WHEN left(body, 1) = 'Q' THEN 'R' ELSE 'Q' END from 1 for 1) WHERE id = (SELECT min(id) FROM public.messages)`);
        const after = await snapshot();
        expect(after).not.toBe(before);
        expect(JSON.parse(after)).toHaveLength((JSON.parse(before) as unknown[]).length);
      });
    });
  });

  it('filter keys match what the server formats, for quotes, backslashes, NULLs and non-ASCII text', async () => {
    await withDb(db.url, async (c) => {
      const values = [null, '', "o'brien", 'back\\slash', "both ' and \\", '中文 👋', '-', 'NULL', "E'x'", '|'];
      for (const a of values) {
        for (const b of ['-', "it's"]) {
          const { rows } = await c.query<{ k: string; s: string }>(`SELECT format('%L|%L|%L|%L', $1::text, $2::text, $1::text, NULL::text) AS k, format('%L|%L', $1::text, $2::text) AS s`, [a, b]);
          expect(rows[0]?.k).toBe(cellFilterKey({ tenant: a, period: b, author: a, conversation: null }));
          expect(rows[0]?.s).toBe(segmentFilterKey(a, b));
        }
      }
    });
  });

  it('a filtered read returns exactly the cells it names, and a segment filter exactly their segments', async () => {
    await withDb(db.url, async (c) => {
      const columns = info('messages').copyColumns;
      const all = await c.query<Record<string, string | null>>(`SELECT DISTINCT lethe_tenant, lethe_period, lethe_author, lethe_conversation FROM (${buildCellQuery(BUILTIN_MAPPING, 'messages', columns, 'month')}) q`);
      const picked = all.rows.filter((_, i) => i % 7 === 3);
      const tuple = (r: Record<string, string | null>): { tenant: string | null; period: string; author: string | null; conversation: string | null } => ({
        tenant: r['lethe_tenant'] ?? null,
        period: r['lethe_period'] ?? '-',
        author: r['lethe_author'] ?? null,
        conversation: r['lethe_conversation'] ?? null,
      });
      const read = await c.query<Record<string, string | null>>(
        `SELECT DISTINCT lethe_tenant, lethe_period, lethe_author, lethe_conversation FROM (${buildCellQuery(BUILTIN_MAPPING, 'messages', columns, 'month', { kind: 'cells', keys: picked.map((r) => cellFilterKey(tuple(r))) })}) q`,
      );
      const key = (r: Record<string, string | null>): string => JSON.stringify(tuple(r));
      expect(new Set(read.rows.map(key))).toEqual(new Set(picked.map(key)));
      const segmentKeys = [...new Set(picked.slice(0, 3).map((r) => segmentFilterKey(r['lethe_tenant'] ?? null, r['lethe_period'] ?? '-')))];
      const bySegment = await c.query<Record<string, string | null>>(
        `SELECT DISTINCT lethe_tenant, lethe_period FROM (${buildCellQuery(BUILTIN_MAPPING, 'messages', columns, 'month', { kind: 'segments', keys: segmentKeys })}) q`,
      );
      expect(new Set(bySegment.rows.map((r) => segmentFilterKey(r['lethe_tenant'] ?? null, r['lethe_period'] ?? '-')))).toEqual(new Set(segmentKeys));
    });
  });
});
