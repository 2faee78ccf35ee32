import { qualified, quoteIdent, quoteLiteral } from './identifiers.ts';
import {
  CONSTRAINT_RANK,
  type ColumnDescription,
  type SchemaDescription,
  type SequenceDescription,
  type TableDescription,
} from './schema-description.ts';

/** DDL to recreate a described schema around a data load. */
export interface SchemaDdl {
  /** Run before loading: schema, search_path, enum types, sequences, tables (no keys). */
  readonly preData: string[];
  /**
   * Run after loading: search_path, primary/unique/check/exclusion constraints, then
   * foreign keys, then indexes, then every owned sequence set past its column's maximum.
   */
  readonly postData: string[];
}

/**
 * Statements that recreate `desc` in schema `options.pgSchema` (default: the described
 * schema), one statement per string, in a deterministic order. Objects created are named
 * fully qualified; expressions inside definitions (defaults, checks, foreign-key targets,
 * index expressions, enum casts) are unqualified, so each list starts by setting
 * `search_path` to the target schema for the session — run both lists on a session you own
 * (ideally one transaction), and reset search_path afterwards if it is pooled.
 *
 * preData creates the schema unless it is `public` (which needs no CREATE privilege on the
 * database). Keys and indexes are deferred to postData so the load is fast and checks the
 * data once. Sequences are set with setval(max(column)) — or min for a descending one —
 * and left so the next value follows the data; an empty table resets to START.
 */
export function schemaToDdl(
  desc: SchemaDescription,
  options: { pgSchema?: string } = {},
): SchemaDdl {
  const target = options.pgSchema ?? desc.schema;
  const name = (object: string): string => qualified(target, object);
  const searchPath = `SELECT pg_catalog.set_config('search_path', ${quoteLiteral(quoteIdent(target))}, false)`;
  const owned = desc.sequences.filter((s) => !s.identity);

  const preData: string[] = [];
  if (target !== 'public') preData.push(`CREATE SCHEMA IF NOT EXISTS ${quoteIdent(target)}`);
  preData.push(searchPath);
  for (const e of desc.enums)
    preData.push(`CREATE TYPE ${name(e.name)} AS ENUM (${e.labels.map(quoteLiteral).join(', ')})`);
  for (const s of owned)
    preData.push(`CREATE SEQUENCE ${name(s.name)} AS ${s.type} ${sequenceOptions(s)}`);
  for (const table of desc.tables) preData.push(createTable(table, desc.sequences, name));
  for (const s of owned)
    preData.push(
      `ALTER SEQUENCE ${name(s.name)} OWNED BY ${name(s.table)}.${quoteIdent(s.column)}`,
    );

  const constraints = desc.tables.flatMap((t) =>
    t.constraints.map((c) => ({ table: t.name, ...c })),
  );
  const addConstraint = (c: (typeof constraints)[number]): string =>
    `ALTER TABLE ${name(c.table)} ADD CONSTRAINT ${quoteIdent(c.name)} ${c.definition}`;
  const postData: string[] = [searchPath];
  postData.push(
    ...constraints
      .filter((c) => c.type !== 'f')
      .sort((a, b) => CONSTRAINT_RANK[a.type] - CONSTRAINT_RANK[b.type])
      .map(addConstraint),
  );
  postData.push(...constraints.filter((c) => c.type === 'f').map(addConstraint));
  for (const t of desc.tables) {
    for (const index of t.indexes) {
      postData.push(
        `CREATE ${index.unique ? 'UNIQUE ' : ''}INDEX ${quoteIdent(index.name)} ON ${name(t.name)} USING ${index.using}`,
      );
    }
  }
  for (const s of desc.sequences) postData.push(setSequence(s, name));
  return { preData, postData };
}

function createTable(
  table: TableDescription,
  sequences: readonly SequenceDescription[],
  name: (o: string) => string,
): string {
  const columns = table.columns.map((c) => `  ${columnDefinition(table.name, c, sequences, name)}`);
  return `CREATE TABLE ${name(table.name)} (\n${columns.join(',\n')}\n)`;
}

function columnDefinition(
  table: string,
  column: ColumnDescription,
  sequences: readonly SequenceDescription[],
  name: (o: string) => string,
): string {
  let sql = `${quoteIdent(column.name)} ${column.type}`;
  if (column.collation !== null) sql += ` COLLATE ${quoteIdent(column.collation)}`;
  if (column.generated !== null) sql += ` GENERATED ALWAYS AS (${column.generated}) STORED`;
  if (column.identity !== null) {
    const seq = sequences.find((s) => s.identity && s.table === table && s.column === column.name);
    const options =
      seq === undefined ? '' : ` (SEQUENCE NAME ${name(seq.name)} ${sequenceOptions(seq)})`;
    sql += ` GENERATED ${column.identity === 'always' ? 'ALWAYS' : 'BY DEFAULT'} AS IDENTITY${options}`;
  }
  if (column.default !== null) sql += ` DEFAULT ${column.default}`;
  if (column.notNull) sql += ' NOT NULL';
  return sql;
}

function sequenceOptions(s: SequenceDescription): string {
  return (
    `INCREMENT BY ${s.increment} MINVALUE ${s.min} MAXVALUE ${s.max} START WITH ${s.start} CACHE ${s.cache}` +
    (s.cycle ? ' CYCLE' : ' NO CYCLE')
  );
}

function setSequence(s: SequenceDescription, name: (o: string) => string): string {
  const column = quoteIdent(s.column);
  const edge = s.increment.startsWith('-') ? `min(${column})` : `max(${column})`;
  return (
    `SELECT pg_catalog.setval(pg_catalog.pg_get_serial_sequence(${quoteLiteral(name(s.table))}, ${quoteLiteral(s.column)}), ` +
    `COALESCE(${edge}, ${s.start}), ${edge} IS NOT NULL) FROM ${name(s.table)}`
  );
}
