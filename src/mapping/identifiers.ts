/**
 * Identifiers and SQL quoting. Mapping identifiers are restricted to lower-case SQL names
 * ({@link IDENTIFIER}); every identifier lethe puts in SQL is also quoted, so even a name
 * that slipped past validation could not inject SQL.
 */

/** A mapping identifier: a lower-case, unquoted-style SQL name of at most 63 bytes. */
export const IDENTIFIER = /^[a-z_][a-z0-9_]*$/;
/** `column` (of the base table) or `alias.column` (of a joined table). */
export const COLUMN_REF = /^(?:[a-z_][a-z0-9_]*\.)?[a-z_][a-z0-9_]*$/;
/** PostgreSQL truncates longer names (NAMEDATALEN - 1). */
export const MAX_IDENTIFIER_LENGTH = 63;

/** The alias of the base table in generated queries; mappings may not use it for a join. */
export const BASE_ALIAS = 't';

/** A SQL identifier in double quotes, embedded quotes doubled. Safe for any name. */
export function quoteIdent(name: string): string {
  return `"${name.replaceAll('"', '""')}"`;
}

/** `"schema"."name"`. */
export function qualified(schema: string, name: string): string {
  return `${quoteIdent(schema)}.${quoteIdent(name)}`;
}

/**
 * A SQL string literal, correct whatever `standard_conforming_strings` says: a value with a
 * backslash becomes an E'' literal with the backslashes doubled.
 */
export function quoteLiteral(value: string): string {
  const quoted = value.replaceAll("'", "''");
  return value.includes('\\') ? `E'${quoted.replaceAll('\\', '\\\\')}'` : `'${quoted}'`;
}

/** A parsed column reference: `alias` is undefined for a column of the base table. */
export interface ColumnRefParts {
  readonly alias: string | undefined;
  readonly column: string;
}

/** Splits `alias.column` / `column`; assumes the value matched {@link COLUMN_REF}. */
export function parseColumnRef(ref: string): ColumnRefParts {
  const dot = ref.indexOf('.');
  return dot === -1
    ? { alias: undefined, column: ref }
    : { alias: ref.slice(0, dot), column: ref.slice(dot + 1) };
}
