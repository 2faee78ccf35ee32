import { describe, expect, it } from 'vitest';
import { ErrorCode } from '../../../src/errors/index.ts';
import { buildCellQuery, buildOrphanCheckQuery, parseMapping, tenantColumn, tenantLiteral, tenantWhenEmpty } from '../../../src/mapping/index.ts';

/**
 * `tenant: { column, whenEmpty }`: a tenant column whose '' marks rows of no team (a team
 * chat's direct channels) gives them a tenant id of their own, which the command line can
 * name (it refuses `--tenant ''`). The end-to-end run is docs/mapping.md example A
 * (test/integration/mapping/third-party.test.ts).
 */
const mapping = (tenant: unknown): unknown => ({
  tables: {
    posts: {
      class: 'messages',
      primaryKey: ['id'],
      joins: [{ table: 'channels', as: 'ch', on: { channel_id: 'id' } }],
      tenant,
      author: 'user_id',
    },
  },
});

describe('tenant { column, whenEmpty }', () => {
  it('reads the column, and puts rows whose column is empty under the whenEmpty id', () => {
    const m = parseMapping(mapping({ column: 'ch.team_id', whenEmpty: 'direct' }));
    const tm = m.tables['posts'];
    if (tm === undefined) throw new Error('no posts mapping');
    expect([tenantColumn(tm), tenantLiteral(tm), tenantWhenEmpty(tm)]).toEqual(['ch.team_id', undefined, 'direct']);
    const sql = buildCellQuery(m, 'posts', ['id', 'channel_id', 'user_id'], 'month');
    const expr = `(CASE WHEN ("ch"."team_id")::text = '' THEN 'direct'::text ELSE ("ch"."team_id")::text END)`;
    expect(sql).toContain(`SELECT ${expr} AS "lethe_tenant"`);
    expect(sql).toContain(`ORDER BY ${expr} COLLATE "C"`);
    // NULL is still no tenant: the orphan check counts it, and backup refuses.
    expect(buildOrphanCheckQuery(m, 'posts')).toContain(`"ch"."team_id" IS NULL) AS "tenantless"`);
  });

  it('quotes the whenEmpty id as a literal', () => {
    const m = parseMapping(mapping({ column: 'ch.team_id', whenEmpty: "o'brien \\ dm" }));
    expect(buildCellQuery(m, 'posts', ['id'], 'month')).toContain(`THEN E'o''brien \\\\ dm'::text ELSE`);
  });

  it.each([
    [{ column: 'ch.team_id', whenEmpty: '' }, /tables\.posts\.tenant.*whenEmpty is empty/],
    [{ column: 'ch.team_id' }, /tables\.posts\.tenant.*whenEmpty must be a string/],
    [{ column: "'x'", whenEmpty: 'direct' }, /literal/],
    [{ column: 'ch.team_id', whenEmpty: 'direct', literal: 'x' }, /unknown key "literal"/],
    [{ column: 'zz.team_id', whenEmpty: 'direct' }, /alias "zz", which no join declares/],
  ])('refuses %j with a message naming the fix', (tenant, message) => {
    let caught: unknown;
    try {
      parseMapping(mapping(tenant));
    } catch (err) {
      caught = err;
    }
    expect(caught).toMatchObject({ code: ErrorCode.MAPPING_INVALID });
    expect((caught as Error).message).toMatch(message);
  });
});
