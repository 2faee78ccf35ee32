import { ErrorCode, LetheError } from '../errors/index.ts';
import { BASE_ALIAS, parseColumnRef } from './identifiers.ts';
import type { DataClass, Mapping, TableMapping } from './schema.ts';

/** What the mapping says about one table: a full mapping, or "system data, no mapping". */
export type TableEntry =
  | { readonly kind: 'mapped'; readonly table: string; readonly mapping: TableMapping }
  | { readonly kind: 'system'; readonly table: string };

/**
 * The mapping entry for `table`. Throws TABLE_UNMAPPED when the table is neither mapped nor
 * listed under `system`.
 */
export function tableEntry(mapping: Mapping, table: string): TableEntry {
  const entry = Object.hasOwn(mapping.tables, table) ? mapping.tables[table] : undefined;
  if (entry !== undefined) return { kind: 'mapped', table, mapping: entry };
  if (mapping.system.includes(table)) return { kind: 'system', table };
  throw new LetheError(
    ErrorCode.TABLE_UNMAPPED,
    `table "${table}" has no mapping: add it under tables, or list it under system if it holds no tenant data`,
    { details: { table } },
  );
}

/**
 * The data class of `table`: its mapping's class, or `system` for a table listed under
 * `system`. Throws TABLE_UNMAPPED for any other table.
 */
export function classOf(mapping: Mapping, table: string): DataClass {
  const entry = tableEntry(mapping, table);
  return entry.kind === 'system' ? 'system' : entry.mapping.class;
}

/** A column reference resolved to the SQL alias and the real table it belongs to. */
export interface ResolvedColumn {
  /** `t` for the base table, else the join alias. */
  readonly alias: string;
  readonly table: string;
  readonly column: string;
}

/** Join aliases of a table mapping → joined table names (the base table is {@link BASE_ALIAS}). */
export function aliasTables(table: string, mapping: TableMapping): Map<string, string> {
  const aliases = new Map<string, string>([[BASE_ALIAS, table]]);
  for (const join of mapping.joins ?? []) aliases.set(join.as, join.table);
  return aliases;
}

/** Resolves `column` / `alias.column` against a validated table mapping. */
export function resolveColumn(table: string, mapping: TableMapping, ref: string): ResolvedColumn {
  const { alias, column } = parseColumnRef(ref);
  if (alias === undefined) return { alias: BASE_ALIAS, table, column };
  const joined = mapping.joins?.find((j) => j.as === alias);
  if (joined === undefined) {
    throw new LetheError(
      ErrorCode.MAPPING_INVALID,
      `tables.${table}: "${ref}" refers to undeclared alias "${alias}": add the join`,
    );
  }
  return { alias, table: joined.table, column };
}

/** The SQL alias a join reads from: the base table's `t` or an earlier join's alias. */
export function joinSource(table: string, from: string | undefined): string {
  return from === undefined || from === table ? BASE_ALIAS : from;
}
