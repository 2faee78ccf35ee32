import { describe, expect, it } from 'vitest';
import { SchemaDescriptionSchema, sqlFragmentProblem } from '../../../src/mapping/index.ts';

/**
 * Must hold (issue 7, item 1): a schema description read back from a manifest becomes DDL
 * only if every type is a type name and every expression one balanced SQL fragment.
 */
describe('sqlFragmentProblem', () => {
  it('accepts what PostgreSQL deparses: defaults, checks, keys, index expressions', () => {
    for (const ok of [
      "nextval('messages_id_seq'::regclass)",
      "'{}'::jsonb",
      "(body <> ''::text)",
      'PRIMARY KEY (id)',
      'FOREIGN KEY (tenant_id) REFERENCES tenants(id) ON DELETE CASCADE',
      "CHECK ((kind = ANY (ARRAY['dm'::text, 'group'::text])))",
      'btree (lower(email))',
      `CHECK ((note <> 'it''s; -- fine /* really */'::text))`,
      "CHECK ((x ~ E'^a\\\\'';b$'::text))",
      '$tag$ ; -- $tag$',
      '"weird;name" > 0',
    ]) {
      expect(sqlFragmentProblem(ok), ok).toBeNull();
    }
  });

  it('refuses anything that could end the statement, hide text or unbalance it', () => {
    const cases: [string, RegExp][] = [
      ["1); COPY (SELECT 1) TO PROGRAM 'id'; --", /did not open/],
      ["1; COPY (SELECT 1) TO PROGRAM 'id'", /separator/],
      ['1 -- the rest', /comment/],
      ['1 /* x */', /comment/],
      ['lower(x', /balanced/],
      ['x) + (y', /did not open/],
      ["'open", /literal/],
      ['"open', /quoted identifier/],
      ['$q$ never closed', /dollar/],
      ['a \\ b', /backslash/],
    ];
    for (const [bad, why] of cases) expect(sqlFragmentProblem(bad), bad).toMatch(why);
  });
});

describe('SchemaDescriptionSchema', () => {
  const column = { name: 'id', type: 'bigint', notNull: true, default: null, collation: null, identity: null, generated: null };
  const base = { schema: 'public', enums: [], sequences: [], tables: [{ name: 't', columns: [column], constraints: [], indexes: [] }] };
  const withType = (type: string): unknown => ({ ...base, tables: [{ ...base.tables[0], columns: [{ ...column, type }] }] });

  it('accepts the type names format_type() prints', () => {
    for (const type of [
      'bigint',
      'character varying(255)',
      'numeric(10,2)',
      'timestamp with time zone',
      'timestamp(3) without time zone',
      'interval day to second(3)',
      'conversation_kind[]',
      'public.citext',
      '"MyType"',
      '"char"',
      'text[][]',
    ]) {
      expect(SchemaDescriptionSchema.safeParse(withType(type)).success, type).toBe(true);
    }
  });

  it('refuses a type that is not a type name', () => {
    for (const type of ["bigint); COPY (SELECT 1) TO PROGRAM 'id'; --", 'int DEFAULT 1', 'text COLLATE "C"', 'bigint -- x', '']) {
      expect(SchemaDescriptionSchema.safeParse(withType(type)).success, type).toBe(false);
    }
  });

  it('refuses identifiers PostgreSQL could not have had, and unknown fields', () => {
    expect(SchemaDescriptionSchema.safeParse({ ...base, schema: 'x'.repeat(64) }).success).toBe(false);
    expect(SchemaDescriptionSchema.safeParse({ ...base, schema: 'a\0b' }).success).toBe(false);
    expect(SchemaDescriptionSchema.safeParse({ ...base, extra: 1 }).success).toBe(false);
    expect(SchemaDescriptionSchema.safeParse(base).success).toBe(true);
  });
});
