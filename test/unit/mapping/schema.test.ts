import { describe, expect, it } from 'vitest';
import { ErrorCode, LetheError } from '../../../src/errors/index.ts';
import {
  BUILTIN_MAPPING,
  classOf,
  parseMapping,
  type MappingInput,
} from '../../../src/mapping/index.ts';

/** The LetheError parseMapping throws for `input`. */
function failure(input: unknown): LetheError {
  try {
    parseMapping(input);
  } catch (err) {
    if (err instanceof LetheError) return err;
    throw err;
  }
  throw new Error('expected parseMapping to throw');
}

const messages: MappingInput['tables'][string] = {
  class: 'messages',
  primaryKey: ['id'],
  joins: [{ table: 'conversations', as: 'c', on: { conversation_id: 'id' } }],
  tenant: 'c.tenant_id',
  author: 'sender_id',
  timestamp: { column: 'created_at', type: 'timestamptz' },
};

describe('parseMapping', () => {
  it('applies defaults', () => {
    const mapping = parseMapping({ tables: { messages } });
    expect(mapping.schema).toBe('public');
    expect(mapping.system).toEqual([]);
    expect(mapping.tables['messages']?.joins?.[0]?.on).toEqual({ conversation_id: 'id' });
  });

  it('rejects unknown keys at every level, naming the path and the allowed keys', () => {
    const top = failure({ tables: {}, tabels: {} });
    expect(top.code).toBe(ErrorCode.MAPPING_INVALID);
    expect(top.message).toContain('(top level): unknown key "tabels"');
    expect(top.message).toContain('allowed: schema, tables, system');

    const join = failure({
      tables: {
        messages: { ...messages, joins: [{ table: 'c', as: 'c', on: { a: 'b' }, kind: 'left' }] },
      },
    });
    expect(join.message).toContain('tables.messages.joins[0]: unknown key "kind"');

    const ts = failure({
      tables: {
        messages: { ...messages, timestamp: { column: 'x', type: 'epoch_ms', tz: 'UTC' } },
      },
    });
    expect(ts.message).toContain('tables.messages.timestamp: unknown key "tz"');
  });

  it('rejects bad identifiers with the path and the value seen', () => {
    const err = failure({
      tables: {
        messages: {
          ...messages,
          joins: [{ table: 'conversations', as: 'c', on: { 'id; DROP TABLE x': 'id' } }],
        },
      },
    });
    expect(err.message).toContain('tables.messages.joins[0].on');
    expect(err.message).toContain('"id; DROP TABLE x" is not a plain lower-case SQL name');

    expect(failure({ tables: { Messages: messages } }).message).toContain(
      'tables.Messages: table name "Messages"',
    );
    expect(failure({ tables: { messages: { ...messages, author: 'a.b.c' } } }).message).toContain(
      'tables.messages.author: column reference "a.b.c" is malformed',
    );
    expect(failure({ schema: 'x'.repeat(64), tables: {} }).message).toContain(
      'schema: schema is longer than 63 characters',
    );
    expect(failure({ tables: { messages: { ...messages, primaryKey: [] } } }).message).toContain(
      'tables.messages.primaryKey: primaryKey needs at least one column',
    );
    expect(failure({ tables: { messages: { ...messages, class: 'chat' } } }).message).toContain(
      'tables.messages.class: class must be one of',
    );
  });

  it('checks that aliases resolve and joins chain', () => {
    const undeclared = failure({ tables: { messages: { ...messages, tenant: 'x.tenant_id' } } });
    expect(undeclared.message).toContain(
      'tables.messages.tenant: "x.tenant_id" refers to alias "x", which no join declares (c)',
    );

    const badFrom = failure({
      tables: {
        edits: {
          ...messages,
          joins: [{ table: 'conversations', as: 'c', from: 'm', on: { conversation_id: 'id' } }],
        },
      },
    });
    expect(badFrom.message).toContain(
      'tables.edits.joins[0].from: join source "m" is neither the table "edits" nor an alias',
    );

    const reserved = failure({
      tables: {
        messages: {
          ...messages,
          joins: [{ table: 'conversations', as: 't', on: { a: 'id' } }],
          tenant: 't.tenant_id',
        },
      },
    });
    expect(reserved.message).toContain('tables.messages.joins[0].as: alias "t" is reserved');

    const emptyOn = failure({
      tables: { messages: { ...messages, joins: [{ table: 'conversations', as: 'c', on: {} }] } },
    });
    expect(emptyOn.message).toContain(
      'tables.messages.joins[0].on: join needs at least one column pair',
    );

    const unused = failure({
      tables: {
        messages: {
          ...messages,
          joins: [...(messages.joins ?? []), { table: 'users', as: 'u', on: { sender_id: 'id' } }],
        },
      },
    });
    expect(unused.message).toContain('tables.messages.joins[1]: join "u" is not used');
  });

  it('enforces the tenant rules of each class and the system list', () => {
    expect(failure({ tables: { messages: { ...messages, tenant: undefined } } }).message).toContain(
      'tables.messages: class messages needs a tenant',
    );
    expect(
      failure({ tables: { jobs: { class: 'system', primaryKey: ['id'], tenant: 'tenant_id' } } })
        .message,
    ).toContain('tables.jobs.tenant: class system has no tenant');
    const both = failure({
      tables: { messages },
      system: ['flyway_history', 'messages', 'flyway_history'],
    });
    expect(both.message).toContain(
      'system[1]: table "messages" is both mapped under tables and listed as system',
    );
    expect(both.message).toContain('system[2]: table "flyway_history" is listed twice');
    expect(both.details?.['issues']).toHaveLength(2);
  });

  it('reports every problem at once', () => {
    const shape = failure({
      tables: { a: { ...messages, class: 'chat' }, b: { ...messages, extra: 1 } },
    });
    expect(shape.message).toContain('tables.a.class');
    expect(shape.message).toContain('tables.b: unknown key "extra"');
    const rules = failure({
      tables: {
        a: { class: 'messages', primaryKey: ['id', 'id'] },
        b: { ...messages, author: 'z.id' },
      },
    });
    expect(rules.message.split('\n')).toEqual([
      'table mapping is invalid:',
      '  - tables.a: class messages needs a tenant: set tenant to the column (or alias.column) holding the tenant id, or to { literal: "id" } when every row has the same tenant, or use class system',
      '  - tables.a.primaryKey[1]: column "id" appears twice in primaryKey: remove one',
      '  - tables.b.author: "z.id" refers to alias "z", which no join declares (c): add the join or fix the alias',
    ]);
  });
});

describe('BUILTIN_MAPPING', () => {
  it('maps every reference table with the agreed classes and is frozen', () => {
    expect(Object.keys(BUILTIN_MAPPING.tables).sort()).toEqual([
      'attachments',
      'conversations',
      'files',
      'memberships',
      'message_edits',
      'messages',
      'tenants',
      'users',
    ]);
    expect(classOf(BUILTIN_MAPPING, 'users')).toBe('profiles');
    expect(classOf(BUILTIN_MAPPING, 'message_edits')).toBe('messages');
    expect(classOf(BUILTIN_MAPPING, 'memberships')).toBe('metadata');
    expect(BUILTIN_MAPPING.tables['message_edits']?.timestamp).toEqual({
      column: 'edited_at_ms',
      type: 'epoch_ms',
    });
    expect(Object.isFrozen(BUILTIN_MAPPING.tables['messages'])).toBe(true);
  });

  it('classOf: system for listed tables, TABLE_UNMAPPED otherwise', () => {
    const mapping = parseMapping({ tables: { messages }, system: ['schema_migrations'] });
    expect(classOf(mapping, 'schema_migrations')).toBe('system');
    expect(() => classOf(mapping, 'nope')).toThrow(
      expect.objectContaining({ code: ErrorCode.TABLE_UNMAPPED }) as Error,
    );
    // Object.prototype keys are not tables.
    expect(() => classOf(mapping, 'constructor')).toThrow(LetheError);
  });
});
