import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { canonicalJson, describeSchemaChange, diffSchemas, schemaId, summarizeSchema } from '../../../src/mapping/schema-diff.ts';
import type { ColumnDescription, SchemaDescription, TableDescription } from '../../../src/mapping/schema-description.ts';

function col(name: string, type: string, more: Partial<ColumnDescription> = {}): ColumnDescription {
  return { name, type, notNull: false, default: null, collation: null, identity: null, generated: null, ...more };
}

function table(name: string, columns: ColumnDescription[], more: Partial<TableDescription> = {}): TableDescription {
  return { name, columns, constraints: [], indexes: [], ...more };
}

const BASE: SchemaDescription = {
  schema: 'public',
  enums: [{ name: 'kind', labels: ['a', 'b'] }],
  sequences: [],
  tables: [
    table('posts', [col('id', 'bigint', { notNull: true }), col('body', 'text', { notNull: true }), col('edited', 'boolean', { default: 'false' })], {
      constraints: [{ name: 'posts_pkey', type: 'p', definition: 'PRIMARY KEY (id)' }],
      indexes: [{ name: 'posts_body', unique: false, using: 'btree (body)' }],
    }),
    table('users', [col('id', 'bigint', { notNull: true }), col('locale', 'text')]),
  ],
};

/** BASE with `change` applied to a deep copy. */
function changed(change: (s: { -readonly [K in keyof SchemaDescription]: SchemaDescription[K] } & { tables: TableDescription[] }) => void): SchemaDescription {
  const copy = structuredClone(BASE) as SchemaDescription & { tables: TableDescription[] };
  change(copy);
  return copy;
}

function withTable(s: { tables: TableDescription[] }, name: string, f: (t: TableDescription & { columns: ColumnDescription[] }) => TableDescription): void {
  s.tables = s.tables.map((t) => (t.name === name ? f(t as TableDescription & { columns: ColumnDescription[] }) : t));
}

describe('schema id', () => {
  it('is the sha256 of the canonical JSON, keys sorted at every level, first 12 hex digits', () => {
    const json = canonicalJson({ b: [{ z: 1, a: null }], a: 'x\n"' });
    expect(json).toBe('{"a":"x\\n\\"","b":[{"a":null,"z":1}]}');
    expect(schemaId(BASE)).toBe(createHash('sha256').update(canonicalJson(BASE)).digest('hex').slice(0, 12));
    expect(schemaId(BASE)).toMatch(/^[0-9a-f]{12}$/);
  });

  it('does not depend on key order, and changes with any change', () => {
    const reverseKeys = (v: unknown): unknown =>
      Array.isArray(v) ? v.map(reverseKeys) : v !== null && typeof v === 'object' ? Object.fromEntries(Object.entries(v).reverse().map(([k, x]) => [k, reverseKeys(x)])) : v;
    const shuffled = reverseKeys(BASE) as SchemaDescription;
    expect(JSON.stringify(shuffled)).not.toBe(JSON.stringify(BASE));
    expect(schemaId(shuffled)).toBe(schemaId(BASE));
    const ids = new Set([
      schemaId(BASE),
      schemaId(changed((s) => withTable(s, 'users', (t) => ({ ...t, columns: [...t.columns, col('bio', 'text')] })))),
      schemaId(changed((s) => withTable(s, 'users', (t) => ({ ...t, columns: [t.columns[0] as ColumnDescription, col('locale', 'character varying(20)')] })))),
      schemaId(changed((s) => withTable(s, 'posts', (t) => ({ ...t, indexes: [] })))),
      schemaId(changed((s) => (s.enums = [{ name: 'kind', labels: ['a', 'b', 'c'] }]))),
    ]);
    expect(ids.size).toBe(5);
  });

  it('summarises tables and columns', () => {
    expect(summarizeSchema(BASE)).toEqual({ id: schemaId(BASE), tables: 2, columns: 5 });
  });
});

describe('diffSchemas', () => {
  it('finds nothing between equal schemas', () => {
    expect(diffSchemas(BASE, structuredClone(BASE))).toEqual([]);
  });

  it('reports added and removed tables', () => {
    const after = changed((s) => {
      s.tables = [s.tables[0] as TableDescription, table('reactions', [col('post_id', 'bigint'), col('emoji', 'text')])];
    });
    expect(diffSchemas(BASE, after)).toEqual([
      { kind: 'table-added', table: 'reactions', columns: 2 },
      { kind: 'table-removed', table: 'users', columns: 2 },
    ]);
  });

  it('reports columns added, removed (a rename is both), retyped and otherwise changed', () => {
    const after = changed((s) => {
      withTable(s, 'posts', (t) => ({
        ...t,
        columns: [col('id', 'bigint', { notNull: true }), col('text', 'text', { notNull: true }), col('edited', 'boolean', { default: 'true', notNull: true }), col('pinned', 'boolean')],
      }));
      withTable(s, 'users', (t) => ({ ...t, columns: [col('id', 'bigint', { notNull: true }), col('locale', 'character varying(20)')] }));
    });
    const changes = diffSchemas(BASE, after);
    expect(changes).toEqual([
      { kind: 'column-removed', table: 'posts', column: 'body', type: 'text' },
      { kind: 'column-added', table: 'posts', column: 'text', type: 'text' },
      { kind: 'column-added', table: 'posts', column: 'pinned', type: 'boolean' },
      { kind: 'column-changed', table: 'posts', column: 'edited', properties: ['not null', 'default'] },
      { kind: 'column-type', table: 'users', column: 'locale', from: 'text', to: 'character varying(20)' },
    ]);
    expect(changes.map(describeSchemaChange)).toEqual([
      'posts: - column body text',
      'posts: + column text text',
      'posts: + column pinned boolean',
      'posts: column edited changed not null, default',
      'users: column locale type text → character varying(20)',
    ]);
  });

  it('reports a changed column order, constraints, indexes, enums and sequences', () => {
    const after = changed((s) => {
      withTable(s, 'posts', (t) => ({
        ...t,
        columns: [t.columns[1], t.columns[0], t.columns[2]] as ColumnDescription[],
        constraints: [{ name: 'posts_pkey', type: 'p', definition: 'PRIMARY KEY (id, body)' }, { name: 'posts_body_check', type: 'c', definition: 'CHECK (body <> \'\')' }],
        indexes: [{ name: 'posts_edited', unique: false, using: 'btree (edited)' }],
      }));
      s.enums = [{ name: 'kind', labels: ['a', 'b', 'c'] }, { name: 'mood', labels: ['ok'] }];
      s.sequences = [{ name: 'posts_id_seq', table: 'posts', column: 'id', identity: false, type: 'bigint', start: '1', increment: '1', min: '1', max: '9', cache: '1', cycle: false }];
    });
    expect(diffSchemas(BASE, after).map(describeSchemaChange)).toEqual([
      'enum type kind: labels (a, b) → (a, b, c)',
      '+ enum type mood',
      '+ sequence posts_id_seq',
      'posts: column order (id, body, edited) → (body, id, edited)',
      'posts: constraint posts_pkey changed',
      'posts: + constraint posts_body_check',
      'posts: - index posts_body',
      'posts: + index posts_edited',
    ]);
  });

  it('reports a schema read under another name', () => {
    expect(diffSchemas(BASE, { ...BASE, schema: 'chat' })).toEqual([{ kind: 'schema-renamed', from: 'public', to: 'chat' }]);
  });
});
