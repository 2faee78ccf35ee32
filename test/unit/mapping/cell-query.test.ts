import { describe, expect, it } from 'vitest';
import { ErrorCode } from '../../../src/errors/index.ts';
import {
  BUILTIN_MAPPING,
  buildCellQuery,
  buildFingerprintQuery,
  buildOrphanCheckQuery,
  cellFilterKey,
  parseMapping,
  quoteLiteralLikePostgres,
  segmentFilterKey,
} from '../../../src/mapping/index.ts';

describe('buildCellQuery', () => {
  it('builds the message_edits query: two chained joins, epoch_ms period in UTC, pk order', () => {
    const sql = buildCellQuery(
      BUILTIN_MAPPING,
      'message_edits',
      ['id', 'message_id', 'edited_at_ms'],
      'month',
    );
    expect(sql.split('\n')).toEqual([
      `SELECT ("c"."tenant_id")::text AS "lethe_tenant", COALESCE(to_char((TIMESTAMP '1970-01-01 00:00:00' + "t"."edited_at_ms" * INTERVAL '1 millisecond'), 'YYYY-MM'), '-') AS "lethe_period", replace(replace(("t"."editor_id")::text, '\\', '\\\\'), ',', '\\,') AS "lethe_author", ("m"."conversation_id")::text AS "lethe_conversation", md5(ROW(("c"."tenant_id")::text, COALESCE(to_char((TIMESTAMP '1970-01-01 00:00:00' + "t"."edited_at_ms" * INTERVAL '1 millisecond'), 'YYYY-MM'), '-'), replace(replace(("t"."editor_id")::text, '\\', '\\\\'), ',', '\\,'), ("m"."conversation_id")::text, t."id", t."message_id", t."edited_at_ms")::text) AS "lethe_row_hash", t."id", t."message_id", t."edited_at_ms"`,
      `FROM "public"."message_edits" AS "t"`,
      `JOIN "public"."messages" AS "m" ON "m"."id" = "t"."message_id"`,
      `JOIN "public"."conversations" AS "c" ON "c"."id" = "m"."conversation_id"`,
      `ORDER BY ("c"."tenant_id")::text COLLATE "C", COALESCE(to_char((TIMESTAMP '1970-01-01 00:00:00' + "t"."edited_at_ms" * INTERVAL '1 millisecond'), 'YYYY-MM'), '-') COLLATE "C", replace(replace(("t"."editor_id")::text, '\\', '\\\\'), ',', '\\,') COLLATE "C", ("m"."conversation_id")::text COLLATE "C", t."id"`,
    ]);
  });

  it('uses the granularity format and AT TIME ZONE for timestamptz', () => {
    expect(buildCellQuery(BUILTIN_MAPPING, 'messages', ['id'], 'week')).toContain(
      `COALESCE(to_char(("t"."created_at" AT TIME ZONE 'UTC'), 'IYYY-"W"IW'), '-')`,
    );
    expect(buildCellQuery(BUILTIN_MAPPING, 'messages', ['id'], 'day')).toContain(`'YYYY-MM-DD'`);
  });

  it('emits NULL author and "-" period when they are not mapped', () => {
    const sql = buildCellQuery(BUILTIN_MAPPING, 'tenants', ['id', 'slug'], 'month');
    expect(sql).toContain(
      `SELECT ("t"."id")::text AS "lethe_tenant", '-'::text AS "lethe_period", NULL::text AS "lethe_author", NULL::text AS "lethe_conversation", md5(ROW(("t"."id")::text, '-'::text, NULL::text, NULL::text, t."id", t."slug")::text) AS "lethe_row_hash", t."id", t."slug"`,
    );
  });

  it('quotes every identifier, so odd column names cannot break out', () => {
    const sql = buildCellQuery(
      BUILTIN_MAPPING,
      'users',
      ['id', 'we"ird; DROP TABLE users; --'],
      'month',
    );
    expect(sql).toContain('t."we""ird; DROP TABLE users; --"');
  });

  it('handles system tables: no dimensions, ordered by every column', () => {
    const mapping = parseMapping({
      tables: {
        jobs: {
          class: 'system',
          primaryKey: ['id'],
        },
      },
      system: ['schema_migrations'],
    });
    expect(
      buildCellQuery(mapping, 'schema_migrations', ['version', 'applied'], 'month').split('\n'),
    ).toEqual([
      `SELECT NULL::text AS "lethe_tenant", '-'::text AS "lethe_period", NULL::text AS "lethe_author", NULL::text AS "lethe_conversation", md5(ROW(NULL::text, '-'::text, NULL::text, NULL::text, t."version", t."applied")::text) AS "lethe_row_hash", t."version", t."applied"`,
      `FROM "public"."schema_migrations" AS "t"`,
      `ORDER BY t."version"::text COLLATE "C", t."applied"::text COLLATE "C"`,
    ]);
    const jobs = buildCellQuery(mapping, 'jobs', ['id'], 'month');
    expect(jobs).toContain(
      `SELECT NULL::text AS "lethe_tenant", '-'::text AS "lethe_period", NULL::text AS "lethe_author", NULL::text AS "lethe_conversation"`,
    );
  });

  it('reads only the cells or segments a filter names, quoting each key as a literal', () => {
    const cells = buildCellQuery(BUILTIN_MAPPING, 'tenants', ['id'], 'month', { kind: 'cells', keys: [cellFilterKey({ tenant: "o'brien", period: '-', author: null, conversation: null })] });
    expect(cells).toContain(`WHERE format('%L|%L|%L|%L', ("t"."id")::text, '-'::text, NULL::text, NULL::text) = ANY(ARRAY['''o''''brien''|''-''|NULL|NULL']::text[])`);
    const segments = buildCellQuery(BUILTIN_MAPPING, 'tenants', ['id'], 'month', { kind: 'segments', keys: [segmentFilterKey('t1', '-')] });
    expect(segments).toContain(`WHERE format('%L|%L', ("t"."id")::text, '-'::text) = ANY(ARRAY['''t1''|''-''']::text[])`);
    expect(buildCellQuery(BUILTIN_MAPPING, 'tenants', ['id'], 'month', { kind: 'cells', keys: [] })).toContain('WHERE false');
  });

  it('writes filter keys the way PostgreSQL quote_literal does', () => {
    expect(quoteLiteralLikePostgres(null)).toBe('NULL');
    expect(quoteLiteralLikePostgres("it's")).toBe("'it''s'");
    expect(quoteLiteralLikePostgres('a\\b')).toBe("E'a\\\\b'");
    expect(segmentFilterKey(null, '-')).toBe("NULL|'-'");
  });

  it('builds fingerprint queries per segment and per cell: counts and word sums, grouped and ordered', () => {
    const segment = buildFingerprintQuery(BUILTIN_MAPPING, 'messages', ['id', 'body'], 'month', 'segment');
    expect(segment).toContain('GROUP BY "lethe_tenant", "lethe_period"');
    expect(segment).toContain(`sum(('x' || substr(h, 17, 16))::bit(64)::bigint) AS "w1"`);
    const cell = buildFingerprintQuery(BUILTIN_MAPPING, 'messages', ['id', 'body'], 'month', 'cell', { kind: 'segments', keys: [segmentFilterKey('t1', '2026-03')] });
    expect(cell).toContain('GROUP BY "lethe_tenant", "lethe_period", "lethe_author", "lethe_conversation"');
    expect(cell).toContain(`WHERE format('%L|%L'`);
  });

  it('refuses unmapped tables and bad column lists', () => {
    expect(() => buildCellQuery(BUILTIN_MAPPING, 'audit_log', ['id'], 'month')).toThrow(
      expect.objectContaining({
        code: ErrorCode.TABLE_UNMAPPED,
        message: expect.stringContaining('"audit_log"') as string,
      }) as Error,
    );
    expect(() => buildCellQuery(BUILTIN_MAPPING, 'users', [], 'month')).toThrow(
      expect.objectContaining({ code: ErrorCode.MAPPING_INVALID }) as Error,
    );
    expect(() => buildCellQuery(BUILTIN_MAPPING, 'users', ['id', 'id'], 'month')).toThrow(
      /listed twice/,
    );
  });
});

describe('buildOrphanCheckQuery', () => {
  it('left-joins the same chain and counts misses and NULL tenants', () => {
    expect(buildOrphanCheckQuery(BUILTIN_MAPPING, 'message_edits').split('\n')).toEqual([
      `SELECT count(*) FILTER (WHERE ("m"."id" IS NULL OR "c"."id" IS NULL)) AS "dropped", count(*) FILTER (WHERE NOT ("m"."id" IS NULL OR "c"."id" IS NULL) AND "c"."tenant_id" IS NULL) AS "tenantless"`,
      `FROM "public"."message_edits" AS "t"`,
      `LEFT JOIN "public"."messages" AS "m" ON "m"."id" = "t"."message_id"`,
      `LEFT JOIN "public"."conversations" AS "c" ON "c"."id" = "m"."conversation_id"`,
    ]);
    expect(buildOrphanCheckQuery(BUILTIN_MAPPING, 'tenants')).toContain(
      'count(*) FILTER (WHERE false) AS "dropped"',
    );
  });
});
