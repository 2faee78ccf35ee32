/**
 * A JSON-serialisable description of the tables lethe backs up, enough to recreate them
 * empty (see schema-ddl.ts). Read from the catalogs by read-schema.ts with `search_path` set
 * to the described schema, so every definition names objects of that schema unqualified
 * and can be replayed into another schema. Arrays are in a fixed order, so two descriptions
 * of equal schemas are deep-equal.
 */
export interface SchemaDescription {
  /** The PostgreSQL schema described. */
  readonly schema: string;
  /** Enum types used by the tables' columns (directly or as array elements), by name. */
  readonly enums: readonly EnumDescription[];
  /** Sequences owned by the tables' columns (serial and identity), by name. */
  readonly sequences: readonly SequenceDescription[];
  /** By name. */
  readonly tables: readonly TableDescription[];
}

export interface EnumDescription {
  readonly name: string;
  /** In sort order. */
  readonly labels: readonly string[];
}

/** A sequence owned by a column. Numeric settings are decimal strings (they are bigints). */
export interface SequenceDescription {
  readonly name: string;
  readonly table: string;
  readonly column: string;
  /** True for an identity column's sequence (created with the table), false for OWNED BY. */
  readonly identity: boolean;
  readonly type: string;
  readonly start: string;
  readonly increment: string;
  readonly min: string;
  readonly max: string;
  readonly cache: string;
  readonly cycle: boolean;
}

export interface ColumnDescription {
  readonly name: string;
  /** format_type(), e.g. `bigint`, `character varying(20)`, `conversation_kind[]`. */
  readonly type: string;
  readonly notNull: boolean;
  /** Default expression (pg_get_expr), null when none or when the column is generated. */
  readonly default: string | null;
  /** Collation name when it differs from the type's default, else null. */
  readonly collation: string | null;
  readonly identity: 'always' | 'by_default' | null;
  /** Generation expression of a STORED generated column, else null. */
  readonly generated: string | null;
}

/** Constraint types: primary key, unique, check, exclusion, foreign key. */
export type ConstraintType = 'p' | 'u' | 'c' | 'x' | 'f';

export interface ConstraintDescription {
  readonly name: string;
  readonly type: ConstraintType;
  /** pg_get_constraintdef(), e.g. `FOREIGN KEY (tenant_id) REFERENCES tenants(id)`. */
  readonly definition: string;
}

/** An index that backs no constraint. */
export interface IndexDescription {
  readonly name: string;
  readonly unique: boolean;
  /** pg_get_indexdef() after `USING `: method, keys and options, e.g. `btree (lower(email))`. */
  readonly using: string;
}

export interface TableDescription {
  readonly name: string;
  /** In attnum order. */
  readonly columns: readonly ColumnDescription[];
  /** Primary key, unique, check, exclusion, then foreign keys; by name within each. */
  readonly constraints: readonly ConstraintDescription[];
  /** By name. */
  readonly indexes: readonly IndexDescription[];
}

/** Order in which constraints are listed and created: keys first, foreign keys last. */
export const CONSTRAINT_RANK: Readonly<Record<ConstraintType, number>> = {
  p: 0,
  u: 1,
  c: 2,
  x: 3,
  f: 4,
};
