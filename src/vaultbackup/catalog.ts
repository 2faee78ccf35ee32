import { ErrorCode, LetheError } from '../errors/index.ts';
import { query, type Queryable } from '../vault/db.ts';
import type { VaultBackupTable } from './format.ts';

/** A vault table as the catalogs describe it. */
export interface CatalogTable extends VaultBackupTable {
  /** Primary-key columns, in key order; empty when the table has none. */
  readonly primaryKey: readonly string[];
  /** Columns whose default draws from a sequence (bigserial), with that sequence. */
  readonly sequences: readonly { column: string; sequence: string }[];
  /** Tables this one's foreign keys point to, itself excluded. */
  readonly parents: readonly string[];
  /** True when a foreign key points back into the table itself. */
  readonly selfReferencing: boolean;
}

/** The table that records applied migrations: stands as `schemaVersion`, never dumped. */
export const MIGRATIONS_TABLE = 'migrations';

/**
 * Every ordinary table of `schema` except `migrations`, from the catalogs (so a table a
 * later migration adds is backed up without code changes here), in load order: each table
 * after the tables its foreign keys reference, ties by name.
 */
export async function readVaultCatalog(db: Queryable, schema: string): Promise<CatalogTable[]> {
  const doing = `reading the tables of the vault schema "${schema}"`;
  const columns = await query<{
    table: string;
    column: string;
    type: string;
    sequence: string | null;
  }>(
    db,
    doing,
    `SELECT c.relname AS table, a.attname AS column, format_type(a.atttypid, a.atttypmod) AS type,
            pg_get_serial_sequence(format('%I.%I', n.nspname, c.relname), a.attname) AS sequence
       FROM pg_class c
       JOIN pg_namespace n ON n.oid = c.relnamespace
       JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
      WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') AND c.relname <> $2
      ORDER BY c.relname, a.attnum`,
    [schema, MIGRATIONS_TABLE],
  );
  const keys = await query<{
    table: string;
    kind: string;
    columns: string[];
    parent: string | null;
  }>(
    db,
    doing,
    `SELECT c.relname AS table, con.contype AS kind, p.relname AS parent,
            ARRAY(SELECT a.attname FROM unnest(con.conkey) WITH ORDINALITY AS k(num, pos)
                    JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.num
                   ORDER BY k.pos)::text[] AS columns
       FROM pg_constraint con
       JOIN pg_class c ON c.oid = con.conrelid
       JOIN pg_namespace n ON n.oid = c.relnamespace
       LEFT JOIN pg_class p ON p.oid = con.confrelid
      WHERE n.nspname = $1 AND con.contype IN ('p', 'f')`,
    [schema],
  );
  const tables = new Map<
    string,
    { columns: { name: string; type: string }[]; sequences: { column: string; sequence: string }[] }
  >();
  for (const row of columns.rows) {
    let table = tables.get(row.table);
    if (table === undefined) {
      table = { columns: [], sequences: [] };
      tables.set(row.table, table);
    }
    table.columns.push({ name: row.column, type: row.type });
    if (row.sequence !== null) table.sequences.push({ column: row.column, sequence: row.sequence });
  }
  const primaryKeys = new Map<string, string[]>();
  const parents = new Map<string, Set<string>>();
  const selfRefs = new Set<string>();
  for (const row of keys.rows) {
    if (row.kind === 'p') primaryKeys.set(row.table, row.columns);
    else if (row.parent === row.table) selfRefs.add(row.table);
    else if (row.parent !== null) {
      const set = parents.get(row.table) ?? new Set<string>();
      set.add(row.parent);
      parents.set(row.table, set);
    }
  }
  const all = [...tables.entries()].map(([name, t]) => ({
    name,
    columns: t.columns,
    primaryKey: primaryKeys.get(name) ?? [],
    sequences: t.sequences,
    parents: [...(parents.get(name) ?? [])].filter((p) => tables.has(p)).sort(),
    selfReferencing: selfRefs.has(name),
  }));
  return loadOrder(all, schema);
}

/** Kahn's algorithm, smallest name first among the ready tables, so the order is stable. */
function loadOrder(tables: CatalogTable[], schema: string): CatalogTable[] {
  const byName = new Map(tables.map((t) => [t.name, t]));
  const placed = new Set<string>();
  const out: CatalogTable[] = [];
  while (out.length < tables.length) {
    const ready = tables
      .filter((t) => !placed.has(t.name) && t.parents.every((p) => placed.has(p)))
      .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    const next = ready[0];
    if (next === undefined) {
      const left = tables.filter((t) => !placed.has(t.name)).map((t) => t.name);
      throw new LetheError(
        ErrorCode.VAULT,
        `the vault schema "${schema}" has a cycle of foreign keys among ${left.join(', ')}; ` +
          'lethe cannot order them for a backup',
      );
    }
    placed.add(next.name);
    out.push(byName.get(next.name) ?? next);
  }
  return out;
}

/**
 * The order rows are dumped in. A table whose foreign key points into itself needs each
 * referenced row before the rows that reference it: snapshots name their previous snapshot,
 * which always started earlier. Other tables go in primary-key order, so two dumps of the
 * same vault are byte-identical apart from the header's time.
 */
export function rowOrder(table: CatalogTable): readonly string[] {
  if (table.name === 'snapshots') return ['started_at', 'id'];
  return table.primaryKey.length > 0 ? table.primaryKey : table.columns.map((c) => c.name);
}

/** `name` as a quoted SQL identifier. Names come from the catalogs, never from a backup file. */
export function quoteIdent(name: string): string {
  return `"${name.replaceAll('"', '""')}"`;
}

/**
 * Session settings under which values are written as text (dump) and read back (restore),
 * so that a server or role with another DateStyle or IntervalStyle cannot make a timestamp
 * mean something else on the way back. Transaction-local.
 */
export const SESSION_SETTINGS =
  "SET LOCAL DateStyle = 'ISO, YMD'; SET LOCAL IntervalStyle = 'postgres'; " +
  "SET LOCAL TimeZone = 'UTC'; SET LOCAL extra_float_digits = 3";
