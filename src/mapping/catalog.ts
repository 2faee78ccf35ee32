import type pg from 'pg';

/** A column as the catalogs describe it. */
export interface CatalogColumn {
  readonly name: string;
  /** pg_type.typname: `timestamptz`, `int8`, … */
  readonly typeName: string;
  /** format_type: `timestamp with time zone`, `bigint`, … */
  readonly type: string;
  /** A stored generated column: COPY FROM cannot write it. */
  readonly generated: boolean;
}

/** A table of the mapped schema. */
export interface CatalogTable {
  readonly name: string;
  /** In attnum order, dropped columns left out. */
  readonly columns: readonly CatalogColumn[];
  /** Key columns of the primary key, [] when there is none. */
  readonly primaryKey: readonly string[];
  /** Column sets guaranteed unique: primary key, unique constraints, full unique indexes. */
  readonly uniqueKeys: readonly (readonly string[])[];
}

/**
 * The ordinary and partitioned tables of `schema` (partitions and extension-owned tables
 * left out), by name. Reads pg_class, pg_attribute and pg_index only.
 */
export async function readCatalog(
  client: pg.Client,
  schema: string,
): Promise<Map<string, CatalogTable>> {
  const tables = await client.query<{ oid: string; name: string }>(
    `SELECT c.oid::text AS oid, c.relname AS name
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') AND NOT c.relispartition
        AND NOT EXISTS (SELECT 1 FROM pg_depend d
                         WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
      ORDER BY c.relname`,
    [schema],
  );
  const oids = tables.rows.map((r) => r.oid);
  const columns = await client.query<{
    oid: string;
    name: string;
    type_name: string;
    type: string;
    generated: boolean;
  }>(
    `SELECT a.attrelid::text AS oid, a.attname AS name, t.typname AS type_name,
            format_type(a.atttypid, a.atttypmod) AS type, a.attgenerated <> '' AS generated
       FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
      WHERE a.attrelid = ANY($1::oid[]) AND a.attnum > 0 AND NOT a.attisdropped
      ORDER BY a.attrelid, a.attnum`,
    [oids],
  );
  const keys = await client.query<{ oid: string; primary: boolean; columns: string[] }>(
    `SELECT i.indrelid::text AS oid, i.indisprimary AS primary,
            array(SELECT a.attname::text FROM unnest((i.indkey::int2[])[0:i.indnkeyatts - 1]) AS k(attnum)
                   JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
                  ORDER BY a.attnum) AS columns
       FROM pg_index i
      WHERE i.indrelid = ANY($1::oid[]) AND i.indisunique AND i.indisvalid
        AND i.indpred IS NULL AND i.indexprs IS NULL
      ORDER BY i.indrelid, i.indexrelid`,
    [oids],
  );
  const result = new Map<string, CatalogTable>();
  for (const table of tables.rows) {
    const unique = keys.rows.filter((k) => k.oid === table.oid);
    result.set(table.name, {
      name: table.name,
      columns: columns.rows
        .filter((c) => c.oid === table.oid)
        .map((c) => ({
          name: c.name,
          typeName: c.type_name,
          type: c.type,
          generated: c.generated,
        })),
      primaryKey: unique.find((k) => k.primary)?.columns ?? [],
      uniqueKeys: unique.map((k) => k.columns),
    });
  }
  return result;
}
