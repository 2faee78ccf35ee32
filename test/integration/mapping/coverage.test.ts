import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ErrorCode, LetheError } from '../../../src/errors/index.ts';
import {
  BUILTIN_MAPPING,
  checkCoverage,
  parseMapping,
  type MappingInput,
} from '../../../src/mapping/index.ts';
import { REFERENCE_SCHEMA_SQL } from '../../../src/store/index.ts';
import { createTestDatabase } from '../../helpers/postgres.ts';
import { withDb } from '../store/db.ts';

type Db = Awaited<ReturnType<typeof createTestDatabase>>;
let db: Db;
beforeAll(async () => {
  db = await createTestDatabase('coverage');
  await withDb(db.url, (c) => c.query(REFERENCE_SCHEMA_SQL));
});
afterAll(async () => {
  await db.drop();
});

async function failure(url: string, mapping: MappingInput): Promise<LetheError> {
  try {
    await checkCoverage(url, parseMapping(mapping));
  } catch (err) {
    if (err instanceof LetheError) return err;
    throw err;
  }
  throw new Error('expected checkCoverage to fail');
}

/** The built-in mapping as plain (unfrozen) input, to derive broken variants from. */
function builtin(): MappingInput {
  return structuredClone(BUILTIN_MAPPING);
}

type TableInput = MappingInput['tables'][string];

/** A table's entry of a mapping input; throws when absent. */
function entry(mapping: MappingInput, name: string): TableInput {
  const found = mapping.tables[name];
  if (found === undefined) throw new Error(`no mapping for ${name}`);
  return found;
}

describe('checkCoverage', () => {
  it('accepts the built-in mapping on the reference schema and describes each table', async () => {
    const { tables } = await checkCoverage(db.url, BUILTIN_MAPPING);
    expect(tables.map((t) => [t.name, t.class])).toEqual([
      ['attachments', 'attachments'],
      ['conversations', 'metadata'],
      ['files', 'attachments'],
      ['memberships', 'metadata'],
      ['message_edits', 'messages'],
      ['messages', 'messages'],
      ['tenants', 'metadata'],
      ['users', 'profiles'],
    ]);
    const messages = tables.find((t) => t.name === 'messages');
    expect(messages?.columns).toEqual([
      'id',
      'conversation_id',
      'sender_id',
      'thread_root_id',
      'body',
      'created_at',
      'edited',
    ]);
    expect(messages?.copyColumns).toEqual(messages?.columns);
    expect(tables.find((t) => t.name === 'memberships')?.primaryKey).toEqual([
      'conversation_id',
      'user_id',
    ]);
  });

  it('names every unmapped table, then accepts them once listed under system', async () => {
    await withDb(db.url, (c) =>
      c.query(`CREATE TABLE public.audit_log (id bigint PRIMARY KEY, note text, dropped_col int);
               ALTER TABLE public.audit_log DROP COLUMN dropped_col;
               CREATE TABLE public.feature_flags (name text PRIMARY KEY, enabled boolean, label text GENERATED ALWAYS AS (upper(name)) STORED);
               CREATE TABLE public.events (id bigint, at timestamptz) PARTITION BY RANGE (at);
               CREATE TABLE public.events_2026 PARTITION OF public.events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
               CREATE SCHEMA other; CREATE TABLE other.ignored (id int);`),
    );
    try {
      const err = await failure(db.url, builtin());
      expect(err.code).toBe(ErrorCode.TABLE_UNMAPPED);
      expect(err.message).toBe(
        'unmapped tables in schema "public": audit_log, events, feature_flags — add a mapping for each under tables, ' +
          'or list it under system if it holds no tenant data',
      );
      expect(err.details).toEqual({
        unmapped: ['audit_log', 'events', 'feature_flags'],
        invalid: [],
      });

      const { tables } = await checkCoverage(
        db.url,
        parseMapping({ ...builtin(), system: ['audit_log', 'feature_flags', 'events'] }),
      );
      const flags = tables.find((t) => t.name === 'feature_flags');
      expect(flags).toEqual({
        name: 'feature_flags',
        class: 'system',
        columns: ['name', 'enabled', 'label'],
        copyColumns: ['name', 'enabled'],
        primaryKey: ['name'],
      });
      expect(tables.find((t) => t.name === 'audit_log')?.columns).toEqual(['id', 'note']);
      expect(tables.find((t) => t.name === 'events')?.primaryKey).toEqual([]);
    } finally {
      await withDb(db.url, (c) =>
        c.query(
          'DROP TABLE public.audit_log, public.feature_flags, public.events; DROP SCHEMA other CASCADE',
        ),
      );
    }
  });

  it('names every missing table and column and every timestamp type mismatch', async () => {
    const mapping = builtin();
    const t = mapping.tables;
    t['messages'] = { ...entry(mapping, 'messages'), tenant: 'c.tenantid', primaryKey: ['uid'] };
    t['memberships'] = {
      ...entry(mapping, 'memberships'),
      joins: [{ table: 'conversations', as: 'c', on: { conversation: 'id' } }],
    };
    t['message_edits'] = {
      ...entry(mapping, 'message_edits'),
      timestamp: { column: 'edited_at_ms', type: 'timestamptz' },
    };
    t['attachments'] = {
      ...entry(mapping, 'attachments'),
      joins: [{ table: 'mesages', as: 'm', on: { message_id: 'id' } }],
    };
    t['conversations'] = {
      ...entry(mapping, 'conversations'),
      timestamp: { column: 'created_at', type: 'epoch_ms' },
    };
    t['mesages'] = { class: 'messages', primaryKey: ['id'], tenant: 'tenant_id' };
    mapping.system = ['schema_migrations'];
    const err = await failure(db.url, mapping);
    expect(err.code).toBe(ErrorCode.MAPPING_INVALID);
    const invalid = (err.details?.['invalid'] ?? []) as { path: string; message: string }[];
    // A missing column's message also lists the table's columns now (checked below).
    expect(invalid.map((p) => `${p.path}: ${p.message.replace(/; if the chat store renamed it, .*$/, '')}`).sort()).toEqual([
      'system[0]: table "public.schema_migrations" does not exist: remove it from system or fix the name',
      'tables.attachments.joins[0].table: table "public.mesages" does not exist: fix the name',
      'tables.conversations.timestamp.type: column "conversations.created_at" is timestamp with time zone, not epoch_ms: declare type timestamptz',
      'tables.memberships.joins[0].on: column "conversation" does not exist in "memberships" (the join source): fix the name',
      'tables.mesages: table "public.mesages" does not exist: fix the name or remove its mapping',
      'tables.message_edits.timestamp.type: column "message_edits.edited_at_ms" is bigint, not timestamptz: declare type epoch_ms or epoch_s',
      'tables.messages.primaryKey[0]: column "uid" does not exist in "messages": fix the name',
      'tables.messages.tenant: column "tenantid" does not exist in "conversations": fix the name',
    ]);
    expect(err.message).toContain('tables.messages.tenant: column "tenantid"');
    expect(err.message).toMatch(/column "uid" does not exist in "messages": fix the name; if the chat store renamed it, put its new name here \(columns of "messages" now: id, conversation_id, sender_id, [^)]*\)/);
  });

  it('rejects keys that are not unique: a join that could duplicate rows, a primary key that orders nothing', async () => {
    const mapping = builtin();
    mapping.tables['messages'] = {
      ...entry(mapping, 'messages'),
      primaryKey: ['conversation_id'],
      joins: [{ table: 'memberships', as: 'c', on: { conversation_id: 'conversation_id' } }],
      tenant: 'c.user_id',
    };
    const err = await failure(db.url, mapping);
    expect(err.message).toContain(
      'tables.messages.primaryKey: (conversation_id) is not unique in "messages"',
    );
    expect(err.message).toContain(
      'tables.messages.joins[0].on: (conversation_id) is not a unique key of "memberships"',
    );
  });

  it('reports a store it cannot reach as DATABASE', async () => {
    const url = new URL(db.url);
    url.pathname = '/no_such_database';
    await expect(checkCoverage(url.toString(), BUILTIN_MAPPING)).rejects.toMatchObject({
      code: ErrorCode.DATABASE,
    });
  });
});
