import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  cellId,
  cellKeyId,
  dimensionKeyIds,
  subjectsOf,
  type CellTuple,
} from '../../../src/cells/index.ts';
import { ErrorCode, LetheError } from '../../../src/errors/index.ts';
import { holdCovers } from '../../../src/lifecycle/hold-match.ts';
import type { Hold } from '../../../src/lifecycle/types.ts';
import { shreddedSummary } from '../../../src/snapshot/backup.ts';
import {
  buildCellQuery,
  buildOrphanCheckQuery,
  cellFilterKey,
  decodeSubjects,
  encodeSubjects,
  parseMapping,
  subjectColumns,
} from '../../../src/mapping/index.ts';

/** The message of the MAPPING_INVALID parseMapping throws for `input`. */
function problem(input: unknown): string {
  try {
    parseMapping(input);
  } catch (err) {
    if (err instanceof LetheError && err.code === ErrorCode.MAPPING_INVALID) return err.message;
    throw err;
  }
  throw new Error('expected parseMapping to throw');
}

const table = (extra: Record<string, unknown>): unknown => ({
  tables: { m: { class: 'messages', primaryKey: ['id'], ...extra } },
});

describe('tenant literal', () => {
  it('accepts { literal } and reads it as the tenant of every row, with no NULL-tenant check', () => {
    const mapping = parseMapping(table({ tenant: { literal: "it's \\ acme" }, author: 'sender_id' }));
    const sql = buildCellQuery(mapping, 'm', ['id', 'sender_id'], 'month');
    expect(sql).toContain(`E'it''s \\\\ acme'::text AS "lethe_tenant"`);
    expect(buildOrphanCheckQuery(mapping, 'm')).toContain('count(*) FILTER (WHERE NOT false AND false) AS "tenantless"');
  });

  it('suggests { literal } for a quoted string, with no second message about an alias', () => {
    const message = problem(table({ tenant: "'acme.corp'" }));
    expect(message).toBe(
      'table mapping is invalid:\n  - tables.m.tenant: column reference "\'acme.corp\'" is malformed: for the same tenant on every row write { literal: "acme.corp" }',
    );
    expect(problem(table({ tenant: 'acme corp' }))).toContain('or { literal: "id" } for the same tenant on every row');
    expect(problem(table({ tenant: { literal: '' } }))).toContain('tables.m.tenant.literal: tenant.literal is empty');
    expect(problem(table({ tenant: { literl: 'x' } }))).toContain('unknown key "literl"');
    expect(problem(table({ tenant: 5 }))).toContain('tenant must be a column reference');
  });
});

describe('subject columns', () => {
  it('accepts one column or a list, and lists each table\'s subject columns', () => {
    const mapping = parseMapping({
      tables: {
        z: { class: 'messages', primaryKey: ['id'], tenant: 'tenant_id', author: ['sender_id', 'p.target_id'], joins: [{ table: 'p', as: 'p', on: { pid: 'id' } }] },
        a: { class: 'profiles', primaryKey: ['id'], tenant: { literal: 'global' }, author: 'id' },
        n: { class: 'metadata', primaryKey: ['id'], tenant: 'tenant_id' },
      },
    });
    expect(subjectColumns(mapping)).toEqual([
      { table: 'a', columns: ['id'] },
      { table: 'z', columns: ['sender_id', 'p.target_id'] },
    ]);
  });

  it('refuses an empty list, a repeated column, an undeclared alias and a malformed one, each with its path', () => {
    expect(problem(table({ tenant: 't', author: [] }))).toContain('tables.m.author: author lists no column');
    expect(problem(table({ tenant: 't', author: ['a', 'a'] }))).toContain('tables.m.author[1]: subject column "a" is listed twice');
    expect(problem(table({ tenant: 't', author: ['a', 'q.b'] }))).toContain('tables.m.author[1]: "q.b" refers to alias "q"');
    expect(problem(table({ tenant: 't', author: ['a', 'b c'] }))).toContain('column reference "b c" is malformed');
    expect(problem(table({ tenant: 't', author: 7 }))).toContain('author must be a column reference or a list of them');
  });

  it('builds the subject set in SQL: one column escaped, several as a sorted distinct set', () => {
    const one = parseMapping(table({ tenant: 'tenant_id', author: 'sender_id' }));
    expect(buildCellQuery(one, 'm', ['id'], 'month')).toContain(
      `replace(replace(("t"."sender_id")::text, '\\', '\\\\'), ',', '\\,') AS "lethe_author"`,
    );
    const two = parseMapping(table({ tenant: 'tenant_id', author: ['sender_id', 'target_id'] }));
    expect(buildCellQuery(two, 'm', ['id'], 'month')).toContain(
      `(SELECT string_agg(replace(replace(s, '\\', '\\\\'), ',', '\\,'), ',' ORDER BY s COLLATE "C") FROM (SELECT DISTINCT s FROM unnest(ARRAY[("t"."sender_id")::text, ("t"."target_id")::text]) AS u(s) WHERE s IS NOT NULL) AS d) AS "lethe_author"`,
    );
  });
});

describe('class system', () => {
  it('refuses author, conversation and timestamp, naming the fix', () => {
    const message = problem({
      tables: {
        jobs: { class: 'system', primaryKey: ['id'], author: 'a', conversation: 'c', timestamp: { column: 'x', type: 'timestamptz' } },
      },
    });
    for (const field of ['author', 'conversation', 'timestamp']) {
      expect(message).toContain(`tables.jobs.${field}: class system is encrypted under the system key only`);
    }
    expect(message).toContain('remove author, or choose another class');
    expect(() => parseMapping({ tables: { jobs: { class: 'system', primaryKey: ['id'] } } })).not.toThrow();
  });
});

describe('subject set text', () => {
  it('encodes sorted, distinct, escaped; one plain id is itself', () => {
    expect(encodeSubjects([])).toBeNull();
    expect(encodeSubjects(['u9'])).toBe('u9');
    expect(encodeSubjects(['b', 'a,1', 'b', 'c\\'])).toBe('a\\,1,b,c\\\\');
    // Byte order (COLLATE "C"), not UTF-16 order: U+FF5E sorts before U+1F600.
    expect(encodeSubjects(['😀', '～'])).toBe('～,😀');
    expect(decodeSubjects('a\\,1,b,c\\\\')).toEqual(['a,1', 'b', 'c\\']);
    expect(decodeSubjects(null)).toEqual([]);
  });

  it('round-trips any set of ids', () => {
    fc.assert(
      fc.property(fc.array(fc.string(), { minLength: 1, maxLength: 4 }), (ids) => {
        const text = encodeSubjects(ids);
        const decoded = decodeSubjects(text);
        expect(new Set(decoded)).toEqual(new Set(ids));
        expect(encodeSubjects(decoded)).toBe(text);
      }),
    );
  });

  it('needs one user key per subject; ids and filter keys stay as before for one subject', () => {
    const tuple: CellTuple = { tenant: 't1', class: 'messages', period: '2026-03', author: encodeSubjects(['u/2', 'u,1']), conversation: 'c' };
    expect(subjectsOf(tuple)).toEqual(['u,1', 'u/2']);
    expect(dimensionKeyIds(tuple)).toEqual([
      'period:t1/messages/2026-03',
      'user:t1/u%2C1',
      'user:t1/u%2F2',
      'conversation:t1/c',
      'tenant:t1',
    ]);
    expect(cellKeyId(tuple)).toBe('cell:t1/messages/2026-03/u%2C1+u%2F2/c');
    expect(cellId('m', tuple)).toBe('m/t1/2026-03/u%2C1+u%2F2/c');
    // The filter key quotes the text the server formats: the escaped set, E'' for the backslash.
    expect(cellFilterKey(tuple)).toBe(`'t1'|'2026-03'|E'u\\\\,1,u/2'|'c'`);
    const single: CellTuple = { ...tuple, author: encodeSubjects(['u,1']) };
    expect(cellKeyId(single)).toBe('cell:t1/messages/2026-03/u%2C1/c');
    expect(dimensionKeyIds(single)).toContain('user:t1/u%2C1');
  });
});

describe('holds on a subject', () => {
  it('cover a cell that names the held person in any of its subject columns', () => {
    const key = {
      id: 'cell:t1/messages/2026-03/a+b/-',
      tenant: 't1',
      class: 'messages',
      period: '2026-03',
      author: encodeSubjects(['b', 'a,1']),
      conversation: null,
      dimensionIds: [],
    };
    const hold = { caseId: 'k', tenant: 't1', user: 'a,1', conversation: null, from: null, to: null, releasedAt: null } as unknown as Hold;
    expect(holdCovers(hold, key)).toBe(true);
    expect(holdCovers({ ...hold, user: 'b' }, key)).toBe(true);
    expect(holdCovers({ ...hold, user: 'a' }, key)).toBe(false);
  });
});

describe('shredded cells in a backup', () => {
  it('are summarised in one line: cells, rows, the number of keys, the first five and how many more', () => {
    const keys = Array.from({ length: 7 }, (_, i) => ({ key: `user:t/u${i}`, cells: 2, rows: 3 }));
    expect(shreddedSummary(keys)).toBe(
      '14 cells (21 rows) not backed up: 7 destroyed keys they need (user:t/u0, user:t/u1, user:t/u2, user:t/u3, user:t/u4 … and 2 more); erased data is still in the chat store',
    );
    expect(shreddedSummary(keys.slice(0, 1))).toBe('2 cells (3 rows) not backed up: a destroyed key they need (user:t/u0); erased data is still in the chat store');
    expect(shreddedSummary([])).toBe('');
  });
});
