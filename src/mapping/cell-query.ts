import { createHash } from 'node:crypto';
import { ErrorCode, LetheError } from '../errors/index.ts';
import { BASE_ALIAS, qualified, quoteIdent, quoteLiteral } from './identifiers.ts';
import { joinSource, resolveColumn, tableEntry, type TableEntry } from './resolve.ts';
import { subjectRefs, tenantColumn, tenantLiteral, tenantWhenEmpty, type Mapping, type TableMapping, type TimestampType } from './schema.ts';

/** Length of the period a cell covers. */
export type Granularity = 'month' | 'week' | 'day';

/** The period of rows with no timestamp (none mapped, or NULL in the row). */
export const NO_PERIOD = '-';

const PERIOD_FORMATS: Readonly<Record<Granularity, string>> = {
  month: 'YYYY-MM',
  week: 'IYYY-"W"IW',
  day: 'YYYY-MM-DD',
};

/**
 * The SELECT a backup runs (as `COPY (query) TO STDOUT`) to read `table` cell by cell.
 * Output columns, in order:
 *
 *  1. tenant::text — NULL for class system
 *  2. period::text — `YYYY-MM` / `IYYY-"W"IW` (ISO week, e.g. `2026-W44`) / `YYYY-MM-DD`,
 *     computed in UTC for every timestamp type; `-` when no timestamp is mapped or it is NULL
 *  3. author::text — NULL when no author is mapped
 *  4. conversation::text — NULL when none is mapped
 *  5. lethe_row_hash — md5 of the row's text (dimensions and columns), for its fingerprint
 *  6… the base table's `columns`, as `t."col"` in the order given, uncast — so the COPY text
 *     of these fields is exactly what `COPY table (columns) FROM STDIN` accepts.
 *
 * Rows come ordered by tenant, period, author, conversation (byte order, `COLLATE "C"`,
 * NULLs last), then the mapping's primary key, so each cell's rows (one tuple) are
 * contiguous and in a stable order.
 *
 * Joins are INNER joins: a row whose join target is missing would be silently left out.
 * Run {@link buildOrphanCheckQuery} in the same snapshot first and refuse to back up when
 * it reports dropped rows. Tables listed under `system` (no mapping) have no dimensions and
 * are ordered by every column's text form.
 *
 * Throws TABLE_UNMAPPED for a table the mapping does not cover, MAPPING_INVALID for an
 * empty or duplicated column list. All identifiers are quoted.
 */
export function buildCellQuery(
  mapping: Mapping,
  table: string,
  columns: readonly string[],
  granularity: Granularity,
  filter?: CellFilter,
  shard?: Shard,
  digestColumns: ReadonlySet<string> = new Set(),
): string {
  const entry = tableEntry(mapping, table);
  checkColumns(table, columns);
  const baseColumns = columns.map((c) => `${BASE_ALIAS}.${quoteIdent(c)}`);
  const dims = dimensions(entry, granularity);
  const order =
    entry.kind === 'system'
      ? baseColumns.map((c) => `${c}::text COLLATE "C"`)
      : [
          ...[dims.tenant, dims.period, dims.author, dims.conversation].map((d) => `${d} COLLATE "C"`),
          ...entry.mapping.primaryKey.map((c) => `${BASE_ALIAS}.${quoteIdent(c)}`),
        ];
  return [
    `SELECT ${dimensionColumns(dims)}, ${rowHash(dims, columns, digestColumns)} AS "lethe_row_hash", ${baseColumns.join(', ')}`,
    fromClause(mapping, entry, 'JOIN'),
    whereClause(dims, filter, shard),
    `ORDER BY ${order.join(', ')}`,
  ]
    .filter((part) => part !== '')
    .join('\n');
}

/**
 * Which cells a query reads: every cell (no filter), those of some segments (`segments`:
 * keys from {@link segmentFilterKey}), or some cells (`cells`: keys from {@link cellFilterKey}).
 */
export type CellFilter = { readonly kind: 'segments' | 'cells'; readonly keys: readonly string[] };

/**
 * PostgreSQL's `quote_literal` (what `format('%L')` writes for a non-NULL text): the text in
 * single quotes with quotes and backslashes doubled, and an `E` prefix when it holds a
 * backslash; NULL for null. Filter keys are compared as text with what the server formats.
 */
export function quoteLiteralLikePostgres(value: string | null): string {
  if (value === null) return 'NULL';
  const quoted = `'${value.replace(/'/g, "''").replace(/\\/g, '\\\\')}'`;
  return value.includes('\\') ? `E${quoted}` : quoted;
}

/** The filter key of a segment: its tenant and period. */
export function segmentFilterKey(tenant: string | null, period: string): string {
  return `${quoteLiteralLikePostgres(tenant)}|${quoteLiteralLikePostgres(period)}`;
}

/** The filter key of a cell: its tenant, period, author and conversation. */
export function cellFilterKey(tuple: { tenant: string | null; period: string; author: string | null; conversation: string | null }): string {
  return [tuple.tenant, tuple.period, tuple.author, tuple.conversation].map(quoteLiteralLikePostgres).join('|');
}

/**
 * One of `of` shards of a backup written by several workers: the tenants whose
 * {@link shardOf} is `index` (system rows, which have no tenant, are shard 0's).
 */
export interface Shard {
  readonly index: number;
  readonly of: number;
}

/**
 * The shard of a tenant among `of`: the first 32 bits of the md5 of its id, modulo `of`.
 * The server computes the same (`shardCondition`), so a worker's queries select exactly
 * the tenants this function gives it.
 */
export function shardOf(tenant: string | null, of: number): number {
  if (tenant === null) return 0;
  return parseInt(createHash('md5').update(tenant, 'utf8').digest('hex').slice(0, 8), 16) % of;
}

function shardCondition(dims: Dimensions, shard: Shard): string {
  if (!Number.isSafeInteger(shard.index) || !Number.isSafeInteger(shard.of) || shard.of < 1 || shard.index < 0 || shard.index >= shard.of) {
    throw new LetheError(ErrorCode.USAGE, `shard ${shard.index}/${shard.of} is not one of 0/N … N-1/N`);
  }
  return `coalesce(('x' || substr(md5(${dims.tenant}), 1, 8))::bit(32)::bigint % ${shard.of}, 0) = ${shard.index}`;
}

function whereClause(dims: Dimensions, filter: CellFilter | undefined, shard?: Shard): string {
  const conditions: string[] = [];
  if (shard !== undefined && shard.of > 1) conditions.push(shardCondition(dims, shard));
  if (filter !== undefined) {
    const key =
      filter.kind === 'segments'
        ? `format('%L|%L', ${dims.tenant}, ${dims.period})`
        : `format('%L|%L|%L|%L', ${dims.tenant}, ${dims.period}, ${dims.author}, ${dims.conversation})`;
    // The keys are values, quoted as literals (standard_conforming_strings is on in every
    // session lethe opens: copySessionStatements), never pasted as SQL.
    const list = filter.keys.map((k) => `'${k.replace(/'/g, "''")}'`).join(',');
    conditions.push(filter.keys.length === 0 ? 'false' : `${key} = ANY(ARRAY[${list}]::text[])`);
  }
  return conditions.length === 0 ? '' : `WHERE ${conditions.join(' AND ')}`;
}

/** The four dimensions as the output columns every cell and fingerprint query starts with. */
function dimensionColumns(dims: Dimensions): string {
  return `${dims.tenant} AS "lethe_tenant", ${dims.period} AS "lethe_period", ${dims.author} AS "lethe_author", ${dims.conversation} AS "lethe_conversation"`;
}

/**
 * The hash of one row as the fingerprint sees it: md5 over the text of the row's dimensions
 * and columns (the text forms depend on the session settings copySessionStatements fixes).
 * `digestColumns` (the bytea ones) enter as their own md5: a row's text would spell their
 * bytes out in escaped hex, which costs several times hashing them.
 */
function rowHash(dims: Dimensions, columns: readonly string[], digestColumns: ReadonlySet<string>): string {
  const values = columns.map((c) => (digestColumns.has(c) ? `md5(${BASE_ALIAS}.${quoteIdent(c)})` : `${BASE_ALIAS}.${quoteIdent(c)}`));
  return `md5(ROW(${dims.tenant}, ${dims.period}, ${dims.author}, ${dims.conversation}, ${values.join(', ')})::text)`;
}

/**
 * The fingerprint query of `table`: per segment (`level` segment: tenant, period) or per
 * cell (`cell`: tenant, period, author, conversation), the row count and the exact sums of
 * the two 64-bit halves of each row's hash (see RowFingerprint), ordered by the grouping
 * columns (byte order). Output columns: the grouping columns as text, then `rows`, `w0`,
 * `w1`. The server scans and hashes; nothing is sorted but the groups.
 */
export function buildFingerprintQuery(
  mapping: Mapping,
  table: string,
  columns: readonly string[],
  granularity: Granularity,
  level: 'segment' | 'cell',
  filter?: CellFilter,
  shard?: Shard,
  digestColumns: ReadonlySet<string> = new Set(),
): string {
  const entry = tableEntry(mapping, table);
  checkColumns(table, columns);
  const dims = dimensions(entry, granularity);
  const groups = level === 'segment' ? ['lethe_tenant', 'lethe_period'] : ['lethe_tenant', 'lethe_period', 'lethe_author', 'lethe_conversation'];
  // Exact sums (numeric) of the two halves of each md5, read as signed 64-bit integers.
  const words = [0, 1].map((i) => `sum(('x' || substr(h, ${i * 16 + 1}, 16))::bit(64)::bigint) AS "w${i}"`);
  return [
    `SELECT ${groups.map((g) => `"${g}"`).join(', ')}, count(*) AS "rows", ${words.join(', ')} FROM (`,
    `SELECT ${dimensionColumns(dims)}, ${rowHash(dims, columns, digestColumns)} AS h`,
    fromClause(mapping, entry, 'JOIN'),
    whereClause(dims, filter, shard),
    ') AS r',
    `GROUP BY ${groups.map((g) => `"${g}"`).join(', ')}`,
    `ORDER BY ${groups.map((g) => `"${g}" COLLATE "C"`).join(', ')}`,
  ]
    .filter((part) => part !== '')
    .join('\n');
}

/**
 * A query returning one row `(dropped bigint, tenantless bigint)` for `table`: how many base
 * rows the inner joins of {@link buildCellQuery} would leave out (a join column NULL or its
 * target missing), and how many of the remaining rows have a NULL tenant. A backup should
 * refuse to proceed when either is non-zero rather than lose or misfile rows. Always 0, 0
 * for a table without joins and for class system.
 *
 * Throws TABLE_UNMAPPED for a table the mapping does not cover.
 */
export function buildOrphanCheckQuery(mapping: Mapping, table: string): string {
  const entry = tableEntry(mapping, table);
  const tm = entry.kind === 'mapped' ? entry.mapping : undefined;
  const misses = (tm?.joins ?? []).map((join) => {
    const [remote] = Object.values(join.on);
    return `${quoteIdent(join.as)}.${quoteIdent(remote ?? '')} IS NULL`;
  });
  const dropped = misses.length === 0 ? 'false' : `(${misses.join(' OR ')})`;
  const tenantRef = tm === undefined ? undefined : tenantColumn(tm);
  // A literal tenant is never NULL.
  const tenant =
    tm === undefined || tm.class === 'system' || tenantRef === undefined
      ? 'false'
      : `${columnSql(table, tm, tenantRef)} IS NULL`;
  return [
    `SELECT count(*) FILTER (WHERE ${dropped}) AS "dropped", count(*) FILTER (WHERE NOT ${dropped} AND ${tenant}) AS "tenantless"`,
    fromClause(mapping, entry, 'LEFT JOIN'),
  ].join('\n');
}

interface Dimensions {
  readonly tenant: string;
  readonly period: string;
  readonly author: string;
  readonly conversation: string;
}

function dimensions(entry: TableEntry, granularity: Granularity): Dimensions {
  const none = 'NULL::text';
  if (entry.kind === 'system')
    return { tenant: none, period: `'${NO_PERIOD}'::text`, author: none, conversation: none };
  const { table, mapping: tm } = entry;
  const text = (ref: string | undefined): string =>
    ref === undefined ? none : `(${columnSql(table, tm, ref)})::text`;
  const literal = tenantLiteral(tm);
  const whenEmpty = tenantWhenEmpty(tm);
  const column = text(tenantColumn(tm));
  // '' becomes the whenEmpty id; NULL stays NULL (no tenant), which the orphan check refuses.
  const tenant =
    literal !== undefined
      ? `${quoteLiteral(literal)}::text`
      : whenEmpty === undefined
        ? column
        : `(CASE WHEN ${column} = '' THEN ${quoteLiteral(whenEmpty)}::text ELSE ${column} END)`;
  const period =
    tm.timestamp === undefined
      ? `'${NO_PERIOD}'::text`
      : `COALESCE(to_char(${utcTimestamp(columnSql(table, tm, tm.timestamp.column), tm.timestamp.type)}, '${PERIOD_FORMATS[granularity]}'), '${NO_PERIOD}')`;
  return {
    tenant: tm.class === 'system' ? none : tenant,
    period,
    author: subjectSet(subjectRefs(tm).map((ref) => columnSql(table, tm, ref))),
    conversation: text(tm.conversation),
  };
}

/**
 * The canonical text of a row's subject set (src/mapping/subjects.ts): distinct non-null
 * ids in byte order, `\` and `,` escaped, joined by `,`; NULL when there is none. One
 * column needs no set operations: its escaped text is the set's text.
 */
function subjectSet(columns: readonly string[]): string {
  const escaped = (expr: string): string => `replace(replace(${expr}, '\\', '\\\\'), ',', '\\,')`;
  if (columns.length === 0) return 'NULL::text';
  if (columns.length === 1) return escaped(`(${columns[0] ?? ''})::text`);
  const values = columns.map((c) => `(${c})::text`).join(', ');
  return (
    `(SELECT string_agg(${escaped('s')}, ',' ORDER BY s COLLATE "C") ` +
    `FROM (SELECT DISTINCT s FROM unnest(ARRAY[${values}]) AS u(s) WHERE s IS NOT NULL) AS d)`
  );
}

/** A `timestamp` (without time zone) expression holding the UTC wall-clock time. */
function utcTimestamp(expr: string, type: TimestampType): string {
  switch (type) {
    case 'timestamptz':
      return `(${expr} AT TIME ZONE 'UTC')`;
    case 'timestamp':
      return expr;
    // Interval arithmetic stays exact to the millisecond, unlike to_timestamp(double).
    case 'epoch_ms':
      return `(TIMESTAMP '1970-01-01 00:00:00' + ${expr} * INTERVAL '1 millisecond')`;
    case 'epoch_s':
      return `(TIMESTAMP '1970-01-01 00:00:00' + ${expr} * INTERVAL '1 second')`;
  }
}

function columnSql(table: string, tm: TableMapping, ref: string): string {
  const { alias, column } = resolveColumn(table, tm, ref);
  return `${quoteIdent(alias)}.${quoteIdent(column)}`;
}

function fromClause(mapping: Mapping, entry: TableEntry, joinKind: 'JOIN' | 'LEFT JOIN'): string {
  const lines = [`FROM ${qualified(mapping.schema, entry.table)} AS ${quoteIdent(BASE_ALIAS)}`];
  if (entry.kind === 'mapped') {
    for (const join of entry.mapping.joins ?? []) {
      const source = quoteIdent(joinSource(entry.table, join.from));
      const on = Object.entries(join.on)
        .map(
          ([local, remote]) =>
            `${quoteIdent(join.as)}.${quoteIdent(remote)} = ${source}.${quoteIdent(local)}`,
        )
        .join(' AND ');
      lines.push(
        `${joinKind} ${qualified(mapping.schema, join.table)} AS ${quoteIdent(join.as)} ON ${on}`,
      );
    }
  }
  return lines.join('\n');
}

function checkColumns(table: string, columns: readonly string[]): void {
  if (columns.length === 0) {
    throw new LetheError(
      ErrorCode.MAPPING_INVALID,
      `no columns given for table "${table}": pass its columns from checkCoverage`,
    );
  }
  const duplicate = columns.find((c, i) => columns.indexOf(c) !== i);
  if (duplicate !== undefined) {
    throw new LetheError(
      ErrorCode.MAPPING_INVALID,
      `column "${duplicate}" of table "${table}" is listed twice: list each column once`,
    );
  }
}
