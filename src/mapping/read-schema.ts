import type pg from 'pg';
import { ErrorCode, LetheError } from '../errors/index.ts';
import { inTransaction, withClient } from '../store/index.ts';
import { quoteIdent } from './identifiers.ts';
import {
  CONSTRAINT_RANK,
  type ColumnDescription,
  type ConstraintDescription,
  type ConstraintType,
  type EnumDescription,
  type IndexDescription,
  type SchemaDescription,
  type SequenceDescription,
} from './schema-description.ts';

/**
 * Describes `tables` of schema `pgSchema` from the catalogs (pg_class, pg_attribute,
 * pg_attrdef, pg_constraint, pg_index, pg_sequence, pg_enum; never pg_dump), in one
 * read-only snapshot. Definitions are deparsed with `search_path` set to `pgSchema` alone,
 * so objects of that schema appear unqualified.
 *
 * Supported: columns with defaults, NOT NULL, collations, identity and stored generated
 * columns; primary key, unique, check, exclusion and foreign-key constraints; other indexes;
 * enum types of the same schema; owned sequences. Other types used by columns (domains,
 * extension types) must already exist where the DDL is replayed.
 *
 * Throws MAPPING_INVALID when a table does not exist, is partitioned, or uses an enum type
 * of another schema; DATABASE when the catalogs cannot be read.
 */
export async function readSchema(
  url: string,
  tables: readonly string[],
  pgSchema = 'public',
  options: { signal?: AbortSignal } = {},
): Promise<SchemaDescription> {
  return withClient(
    url,
    `reading the definition of ${tables.length} tables in schema "${pgSchema}"`,
    (client) =>
      inTransaction(
        client,
        async () => {
          await client.query(`SELECT set_config('search_path', $1, true)`, [quoteIdent(pgSchema)]);
          return describe(client, tables, pgSchema);
        },
        'ISOLATION LEVEL REPEATABLE READ READ ONLY',
      ),
    options.signal,
  );
}

async function describe(
  client: pg.Client,
  names: readonly string[],
  schema: string,
): Promise<SchemaDescription> {
  const found = await client.query<{ oid: string; name: string; kind: string }>(
    `SELECT c.oid::text AS oid, c.relname AS name, c.relkind::text AS kind
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = $1 AND c.relname = ANY($2::text[]) AND c.relkind IN ('r', 'p')
      ORDER BY c.relname`,
    [schema, names],
  );
  const missing = names.filter((name) => !found.rows.some((r) => r.name === name));
  if (missing.length > 0) {
    throw new LetheError(
      ErrorCode.MAPPING_INVALID,
      `cannot describe ${missing.map((m) => `"${schema}.${m}"`).join(', ')}: no such table — fix the mapping or the schema name`,
    );
  }
  const partitioned = found.rows.filter((r) => r.kind === 'p').map((r) => r.name);
  if (partitioned.length > 0) {
    throw new LetheError(
      ErrorCode.MAPPING_INVALID,
      `tables ${partitioned.join(', ')} are partitioned, which schema capture does not support yet: list them under system and restore them by hand`,
    );
  }
  const oids = found.rows.map((r) => r.oid);
  const [columns, constraints, indexes, enums, sequences] = [
    await readColumns(client, oids),
    await readConstraints(client, oids),
    await readIndexes(client, oids),
    await readEnums(client, oids, schema),
    await readSequences(client, oids),
  ];
  return {
    schema,
    enums,
    sequences,
    tables: found.rows.map((t) => ({
      name: t.name,
      columns: columns.get(t.oid) ?? [],
      constraints: constraints.get(t.oid) ?? [],
      indexes: indexes.get(t.oid) ?? [],
    })),
  };
}

function group<R extends { oid: string }, T>(
  rows: readonly R[],
  map: (row: R) => T,
): Map<string, T[]> {
  const out = new Map<string, T[]>();
  for (const row of rows) {
    const list = out.get(row.oid) ?? [];
    list.push(map(row));
    out.set(row.oid, list);
  }
  return out;
}

async function readColumns(
  client: pg.Client,
  oids: string[],
): Promise<Map<string, ColumnDescription[]>> {
  const { rows } = await client.query<ColumnDescription & { oid: string; identity_code: string }>(
    `SELECT a.attrelid::text AS oid, a.attname AS name, format_type(a.atttypid, a.atttypmod) AS type,
            a.attnotnull AS "notNull",
            CASE WHEN a.attgenerated = '' THEN pg_get_expr(d.adbin, d.adrelid) END AS "default",
            CASE WHEN a.attcollation <> 0 AND a.attcollation <> t.typcollation THEN co.collname::text END AS collation,
            a.attidentity::text AS identity_code,
            CASE WHEN a.attgenerated <> '' THEN pg_get_expr(d.adbin, d.adrelid) END AS generated
       FROM pg_attribute a
       JOIN pg_type t ON t.oid = a.atttypid
       LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
       LEFT JOIN pg_collation co ON co.oid = a.attcollation
      WHERE a.attrelid = ANY($1::oid[]) AND a.attnum > 0 AND NOT a.attisdropped
      ORDER BY a.attrelid, a.attnum`,
    [oids],
  );
  return group(rows, (r) => ({
    name: r.name,
    type: r.type,
    notNull: r.notNull,
    default: r.default,
    collation: r.collation,
    identity: r.identity_code === 'a' ? 'always' : r.identity_code === 'd' ? 'by_default' : null,
    generated: r.generated,
  }));
}

async function readConstraints(
  client: pg.Client,
  oids: string[],
): Promise<Map<string, ConstraintDescription[]>> {
  const { rows } = await client.query<ConstraintDescription & { oid: string }>(
    `SELECT conrelid::text AS oid, conname AS name, contype::text AS type, pg_get_constraintdef(oid) AS definition
       FROM pg_constraint
      WHERE conrelid = ANY($1::oid[]) AND contype IN ('p', 'u', 'c', 'x', 'f') AND coninhcount = 0`,
    [oids],
  );
  const byTable = group(rows, (r) => ({ name: r.name, type: r.type, definition: r.definition }));
  for (const list of byTable.values())
    list.sort((a, b) => rank(a.type) - rank(b.type) || compare(a.name, b.name));
  return byTable;
}

async function readIndexes(
  client: pg.Client,
  oids: string[],
): Promise<Map<string, IndexDescription[]>> {
  const { rows } = await client.query<{
    oid: string;
    name: string;
    unique: boolean;
    definition: string;
    on: string;
  }>(
    `SELECT i.indrelid::text AS oid, ic.relname AS name, i.indisunique AS unique,
            pg_get_indexdef(i.indexrelid) AS definition,
            quote_ident(n.nspname) || '.' || quote_ident(c.relname) AS on
       FROM pg_index i
       JOIN pg_class ic ON ic.oid = i.indexrelid
       JOIN pg_class c ON c.oid = i.indrelid
       JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE i.indrelid = ANY($1::oid[])
        AND NOT EXISTS (SELECT 1 FROM pg_constraint k
                         WHERE k.conindid = i.indexrelid AND k.conrelid = i.indrelid AND k.contype IN ('p', 'u', 'x'))
      ORDER BY ic.relname`,
    [oids],
  );
  return group(rows, (r) => ({
    name: r.name,
    unique: r.unique,
    using: afterUsing(r.definition, r.on),
  }));
}

/** pg_get_indexdef always qualifies the table; keep only what follows it, to re-target it. */
function afterUsing(definition: string, on: string): string {
  for (const marker of [` ON ${on} USING `, ` ON ONLY ${on} USING `]) {
    const at = definition.indexOf(marker);
    if (at !== -1) return definition.slice(at + marker.length);
  }
  throw new LetheError(ErrorCode.INTERNAL, `unexpected index definition shape: ${definition}`);
}

async function readEnums(
  client: pg.Client,
  oids: string[],
  schema: string,
): Promise<EnumDescription[]> {
  const { rows } = await client.query<EnumDescription & { schema: string }>(
    `SELECT DISTINCT n.nspname AS schema, e.typname AS name,
            array(SELECT l.enumlabel::text FROM pg_enum l WHERE l.enumtypid = e.oid ORDER BY l.enumsortorder) AS labels
       FROM pg_attribute a
       JOIN pg_type t ON t.oid = a.atttypid
       JOIN pg_type e ON e.oid = CASE WHEN t.typcategory = 'A' THEN t.typelem ELSE t.oid END
       JOIN pg_namespace n ON n.oid = e.typnamespace
      WHERE a.attrelid = ANY($1::oid[]) AND a.attnum > 0 AND NOT a.attisdropped AND e.typtype = 'e'
      ORDER BY e.typname`,
    [oids],
  );
  const foreign = rows.filter((r) => r.schema !== schema);
  if (foreign.length > 0) {
    throw new LetheError(
      ErrorCode.MAPPING_INVALID,
      `enum types ${foreign.map((r) => `${r.schema}.${r.name}`).join(', ')} live outside schema "${schema}": ` +
        `move them into it, or create them in the restore target by hand`,
    );
  }
  return rows.map((r) => ({ name: r.name, labels: r.labels }));
}

async function readSequences(client: pg.Client, oids: string[]): Promise<SequenceDescription[]> {
  const { rows } = await client.query<SequenceDescription>(
    `SELECT s.relname AS name, t.relname AS table, a.attname AS column, d.deptype = 'i' AS identity,
            format_type(q.seqtypid, NULL) AS type, q.seqstart::text AS start, q.seqincrement::text AS increment,
            q.seqmin::text AS min, q.seqmax::text AS max, q.seqcache::text AS cache, q.seqcycle AS cycle
       FROM pg_depend d
       JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'
       JOIN pg_sequence q ON q.seqrelid = s.oid
       JOIN pg_class t ON t.oid = d.refobjid
       JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
      WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass
        AND d.refobjid = ANY($1::oid[]) AND d.deptype IN ('a', 'i')
      ORDER BY s.relname`,
    [oids],
  );
  return rows.map((r) => ({ ...r }));
}

function rank(type: ConstraintType): number {
  return CONSTRAINT_RANK[type];
}

function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
