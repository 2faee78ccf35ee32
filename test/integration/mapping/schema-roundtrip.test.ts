import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ErrorCode } from '../../../src/errors/index.ts';
import { readSchema, schemaToDdl, type SchemaDescription } from '../../../src/mapping/index.ts';
import { REFERENCE_SCHEMA_SQL, REFERENCE_TABLES } from '../../../src/store/index.ts';
import { createTestDatabase } from '../../helpers/postgres.ts';
import { scalar, withDb } from '../store/db.ts';

/** Features the reference schema lacks: serial, identity ALWAYS, generated, arrays of enums, collation, … */
const EXTRA_SQL = `
CREATE TYPE public.priority AS ENUM ('low', 'high', 'it''s \\ urgent');
CREATE TABLE public.tickets (
  id serial PRIMARY KEY,
  ext_id integer GENERATED ALWAYS AS IDENTITY (START WITH 100 INCREMENT BY 5),
  tenant_id bigint NOT NULL REFERENCES public.tenants (id) ON DELETE CASCADE,
  code varchar(20) COLLATE "C" NOT NULL,
  tags public.priority[] NOT NULL DEFAULT '{}',
  priority public.priority DEFAULT 'low',
  amount numeric(12, 2) CHECK (amount >= 0),
  amount_cents bigint GENERATED ALWAYS AS ((amount * 100)::bigint) STORED,
  opened_at timestamp(3) without time zone DEFAULT now(),
  "Mixed Case" text,
  CONSTRAINT tickets_tenant_code_key UNIQUE (tenant_id, code) DEFERRABLE INITIALLY DEFERRED
);
CREATE INDEX tickets_high_idx ON public.tickets (tenant_id) INCLUDE (code) WHERE priority = 'high';
CREATE UNIQUE INDEX tickets_lower_code_idx ON public.tickets (lower(code::text));
CREATE TABLE public.ticket_links (a integer, b integer, PRIMARY KEY (a, b), FOREIGN KEY (a) REFERENCES public.tickets (id));
ALTER TABLE public.ticket_links ADD CONSTRAINT ticket_links_not_self CHECK (a <> b) NOT VALID;
`;
const TABLES = [...REFERENCE_TABLES, 'tickets', 'ticket_links'];

type Db = Awaited<ReturnType<typeof createTestDatabase>>;
const dbs: Db[] = [];
let source: Db;
let desc: SchemaDescription;
beforeAll(async () => {
  source = await createTestDatabase('schema_src');
  dbs.push(source);
  await withDb(source.url, (c) => c.query(REFERENCE_SCHEMA_SQL + EXTRA_SQL));
  desc = await readSchema(source.url, TABLES, 'public');
});
afterAll(async () => {
  for (const db of dbs) await db.drop();
});

async function apply(url: string, statements: readonly string[]): Promise<void> {
  await withDb(url, async (c) => {
    for (const sql of statements) await c.query(sql);
  });
}

describe('readSchema', () => {
  it('describes columns, constraints, indexes, enums and sequences', () => {
    expect(desc.schema).toBe('public');
    expect(desc.tables.map((t) => t.name)).toEqual([...TABLES].sort());
    expect(desc.enums).toEqual([
      { name: 'conversation_kind', labels: ['dm', 'group', 'channel'] },
      { name: 'priority', labels: ['low', 'high', "it's \\ urgent"] },
    ]);
    const table = (name: string) => desc.tables.find((t) => t.name === name);
    expect(table('message_edits')?.columns[0]).toEqual({
      name: 'id',
      type: 'bigint',
      notNull: true,
      default: null,
      collation: null,
      identity: 'by_default',
      generated: null,
    });
    const tickets = table('tickets');
    expect(tickets?.columns.map((c) => [c.name, c.type])).toEqual([
      ['id', 'integer'],
      ['ext_id', 'integer'],
      ['tenant_id', 'bigint'],
      ['code', 'character varying(20)'],
      ['tags', 'priority[]'],
      ['priority', 'priority'],
      ['amount', 'numeric(12,2)'],
      ['amount_cents', 'bigint'],
      ['opened_at', 'timestamp(3) without time zone'],
      ['Mixed Case', 'text'],
    ]);
    expect(tickets?.columns.find((c) => c.name === 'id')?.default).toBe(
      `nextval('tickets_id_seq'::regclass)`,
    );
    expect(tickets?.columns.find((c) => c.name === 'code')?.collation).toBe('C');
    expect(tickets?.columns.find((c) => c.name === 'amount_cents')?.generated).toBe(
      '((amount * (100)::numeric))::bigint',
    );
    expect(tickets?.columns.find((c) => c.name === 'ext_id')?.identity).toBe('always');
    expect(table('messages')?.constraints.map((c) => `${c.type} ${c.name}`)).toEqual([
      'p messages_pkey',
      'c messages_thread_not_self',
      'f messages_conversation_id_fkey',
      'f messages_sender_id_fkey',
      'f messages_thread_root_id_fkey',
    ]);
    expect(table('messages')?.constraints.at(-1)?.definition).toBe(
      'FOREIGN KEY (thread_root_id) REFERENCES messages(id)',
    );
    expect(table('messages')?.indexes).toEqual([
      {
        name: 'messages_conversation_created_idx',
        unique: false,
        using: 'btree (conversation_id, created_at)',
      },
      { name: 'messages_sender_idx', unique: false, using: 'btree (sender_id)' },
      {
        name: 'messages_thread_root_idx',
        unique: false,
        using: 'btree (thread_root_id) WHERE (thread_root_id IS NOT NULL)',
      },
    ]);
    expect(tickets?.indexes.map((i) => i.name)).toEqual([
      'tickets_high_idx',
      'tickets_lower_code_idx',
    ]);
    expect(
      desc.sequences.map((s) => [
        s.name,
        s.table,
        s.column,
        s.identity,
        s.type,
        s.start,
        s.increment,
      ]),
    ).toEqual([
      ['message_edits_id_seq', 'message_edits', 'id', true, 'bigint', '1', '1'],
      ['tickets_ext_id_seq', 'tickets', 'ext_id', true, 'integer', '100', '5'],
      ['tickets_id_seq', 'tickets', 'id', false, 'integer', '1', '1'],
    ]);
    expect(JSON.parse(JSON.stringify(desc))).toEqual(desc);
  });

  it('fails with the names of missing tables', async () => {
    await expect(
      readSchema(source.url, ['messages', 'nope', 'nada'], 'public'),
    ).rejects.toMatchObject({
      code: ErrorCode.MAPPING_INVALID,
      message: expect.stringContaining('"public.nope", "public.nada": no such table') as string,
    });
  });
});

describe('schemaToDdl', () => {
  it('is deterministic and orders keys before foreign keys before indexes before setval', () => {
    const ddl = schemaToDdl(desc);
    expect(schemaToDdl(desc)).toEqual(ddl);
    expect(ddl.preData[0]).toBe(`SELECT pg_catalog.set_config('search_path', '"public"', false)`);
    expect(ddl.preData[1]).toBe(
      `CREATE TYPE "public"."conversation_kind" AS ENUM ('dm', 'group', 'channel')`,
    );
    expect(ddl.preData).toContain(
      `CREATE SEQUENCE "public"."tickets_id_seq" AS integer INCREMENT BY 1 MINVALUE 1 MAXVALUE 2147483647 START WITH 1 CACHE 1 NO CYCLE`,
    );
    expect(
      ddl.preData.find((s) => s.startsWith('CREATE TABLE "public"."message_edits"')),
    ).toContain(
      `"id" bigint GENERATED BY DEFAULT AS IDENTITY (SEQUENCE NAME "public"."message_edits_id_seq" INCREMENT BY 1 MINVALUE 1 MAXVALUE 9223372036854775807 START WITH 1 CACHE 1 NO CYCLE) NOT NULL`,
    );
    const kinds = ddl.postData
      .slice(1)
      .map((s) =>
        s.includes('FOREIGN KEY')
          ? 'f'
          : s.startsWith('ALTER TABLE')
            ? 'k'
            : s.startsWith('CREATE')
              ? 'i'
              : s.includes('setval')
                ? 's'
                : '?',
      );
    expect(kinds.join('')).toMatch(/^k+f+i+s+$/);
    expect(ddl.postData.filter((s) => s.includes('PRIMARY KEY'))).toHaveLength(TABLES.length);
  });

  it('round-trips: DDL applied to a fresh database reads back as the same description', async () => {
    const target = await createTestDatabase('schema_dst');
    dbs.push(target);
    const ddl = schemaToDdl(desc);
    await apply(target.url, ddl.preData);
    await apply(target.url, ddl.postData);
    expect(await readSchema(target.url, TABLES, 'public')).toEqual(desc);
  });

  it('recreates the schema under another name, and moves sequences past loaded ids', async () => {
    const target = await createTestDatabase('schema_alt');
    dbs.push(target);
    const ddl = schemaToDdl(desc, { pgSchema: 'restored' });
    expect(ddl.preData[0]).toBe('CREATE SCHEMA IF NOT EXISTS "restored"');
    await apply(target.url, ddl.preData);
    await withDb(target.url, async (c) => {
      // Data arrives between preData and postData, with explicit ids.
      await c.query(`INSERT INTO restored.tenants VALUES (1, 'acme', 'Acme', now());
                     INSERT INTO restored.users VALUES (1, 1, 'ann', 'Ann', 'ann@acme.example', 'en-US', now());
                     INSERT INTO restored.conversations VALUES (1, 1, 'dm', NULL, 1, now());
                     INSERT INTO restored.messages VALUES (1, 1, 1, NULL, 'hi', now(), true);`);
      await c.query(`INSERT INTO restored.message_edits (id, message_id, editor_id, previous_body, edited_at_ms)
                     VALUES (41, 1, 1, 'a', 1), (42, 1, 1, 'b', 2)`);
      await c.query(`INSERT INTO restored.tickets (id, tenant_id, code) VALUES (7, 1, 'x')`);
    });
    await apply(target.url, ddl.postData);
    expect(await readSchema(target.url, TABLES, 'restored')).toEqual({
      ...desc,
      schema: 'restored',
    });
    await withDb(target.url, async (c) => {
      await c.query('RESET search_path');
      expect(
        await scalar<string>(c, `SELECT nextval('restored.message_edits_id_seq')::text AS v`),
      ).toBe('43');
      expect(await scalar<string>(c, `SELECT nextval('restored.tickets_id_seq')::text AS v`)).toBe(
        '8',
      );
      // No rows had an ext_id beyond the identity default of the one insert: START WITH 100, +5.
      expect(await scalar<string>(c, `SELECT max(ext_id)::text AS v FROM restored.tickets`)).toBe(
        '100',
      );
      expect(
        await scalar<string>(c, `SELECT nextval('restored.tickets_ext_id_seq')::text AS v`),
      ).toBe('105');
      // Constraints from postData are live: the FK to the (empty) tenants table now refuses rows.
      await expect(
        c.query(`INSERT INTO restored.tickets (tenant_id, code) VALUES (999, 'y')`),
      ).rejects.toThrow(/foreign key/);
    });
  });
});
