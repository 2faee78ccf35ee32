import { createHash } from 'node:crypto';
import type { ColumnDescription, SchemaDescription, TableDescription } from './schema-description.ts';

/**
 * Which schema a snapshot holds, and what changed between two: pure functions over the
 * schema descriptions manifests carry (src/mapping/schema-description.ts), for `lethe
 * verify`, `lethe backup` and `lethe snapshots`.
 */

/** A schema in one line: its id and size. */
export interface SchemaSummary {
  /** First 12 hex digits of the sha256 of the canonical description (see {@link schemaId}). */
  readonly id: string;
  readonly tables: number;
  readonly columns: number;
}

/** Column properties other than the name and type whose change {@link diffSchemas} reports. */
export type ColumnProperty = 'not null' | 'default' | 'collation' | 'identity' | 'generated';

/** One difference between two schema descriptions. A renamed table or column reads as a removal and an addition. */
export type SchemaChange =
  | { readonly kind: 'schema-renamed'; readonly from: string; readonly to: string }
  | { readonly kind: 'enum-added' | 'enum-removed'; readonly name: string }
  | { readonly kind: 'enum-changed'; readonly name: string; readonly from: readonly string[]; readonly to: readonly string[] }
  | { readonly kind: 'sequence-added' | 'sequence-removed' | 'sequence-changed'; readonly name: string }
  | { readonly kind: 'table-added' | 'table-removed'; readonly table: string; readonly columns: number }
  | { readonly kind: 'column-added' | 'column-removed'; readonly table: string; readonly column: string; readonly type: string }
  | { readonly kind: 'column-type'; readonly table: string; readonly column: string; readonly from: string; readonly to: string }
  | { readonly kind: 'column-changed'; readonly table: string; readonly column: string; readonly properties: readonly ColumnProperty[] }
  | { readonly kind: 'column-moved'; readonly table: string; readonly from: readonly string[]; readonly to: readonly string[] }
  | { readonly kind: 'constraint-added' | 'constraint-removed' | 'constraint-changed'; readonly table: string; readonly name: string }
  | { readonly kind: 'index-added' | 'index-removed' | 'index-changed'; readonly table: string; readonly name: string };

/**
 * JSON with every object's keys sorted (by UTF-16 code unit, as `jq -S` and
 * `Object.keys().sort()` do), no whitespace, arrays in their order. Undefined members are
 * left out, as JSON.stringify leaves them.
 */
export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map((v) => (v === undefined ? 'null' : canonicalJson(v))).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
  }
  return JSON.stringify(value);
}

/**
 * The schema's id: the first 12 hex digits of the sha256 of its canonical JSON (the bytes
 * `jq -cS .schema` prints from a manifest, for names without control characters). Equal
 * descriptions have equal ids; any change to a table, column, type, default, constraint,
 * index, enum or owned sequence changes it.
 */
export function schemaId(schema: SchemaDescription): string {
  return createHash('sha256').update(canonicalJson(schema), 'utf8').digest('hex').slice(0, 12);
}

/** The schema's id and how many tables and columns it has. */
export function summarizeSchema(schema: SchemaDescription): SchemaSummary {
  return { id: schemaId(schema), tables: schema.tables.length, columns: schema.tables.reduce((n, t) => n + t.columns.length, 0) };
}

function byName<T extends { readonly name: string }>(items: readonly T[]): Map<string, T> {
  return new Map(items.map((item) => [item.name, item]));
}

function sorted(names: Iterable<string>): string[] {
  return [...names].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
}

function columnProperties(a: ColumnDescription, b: ColumnDescription): ColumnProperty[] {
  const changed: ColumnProperty[] = [];
  if (a.notNull !== b.notNull) changed.push('not null');
  if (a.default !== b.default) changed.push('default');
  if (a.collation !== b.collation) changed.push('collation');
  if (a.identity !== b.identity) changed.push('identity');
  if (a.generated !== b.generated) changed.push('generated');
  return changed;
}

/** Named items removed or changed (by name), then added (by name); `text` is what "changed" compares. */
function namedChanges<T extends { readonly name: string }>(
  before: readonly T[],
  after: readonly T[],
  text: (item: T) => string,
): [string, 'added' | 'removed' | 'changed'][] {
  const old = byName(before);
  const now = byName(after);
  const out: [string, 'added' | 'removed' | 'changed'][] = [];
  for (const name of sorted(old.keys())) {
    const a = old.get(name) as T;
    const b = now.get(name);
    if (b === undefined) out.push([name, 'removed']);
    else if (text(a) !== text(b)) out.push([name, 'changed']);
  }
  for (const name of sorted(now.keys())) if (!old.has(name)) out.push([name, 'added']);
  return out;
}

function tableChanges(a: TableDescription, b: TableDescription): SchemaChange[] {
  const table = a.name;
  const out: SchemaChange[] = [];
  const before = byName(a.columns);
  const after = byName(b.columns);
  for (const col of a.columns) if (!after.has(col.name)) out.push({ kind: 'column-removed', table, column: col.name, type: col.type });
  for (const col of b.columns) if (!before.has(col.name)) out.push({ kind: 'column-added', table, column: col.name, type: col.type });
  for (const col of a.columns) {
    const now = after.get(col.name);
    if (now === undefined) continue;
    if (now.type !== col.type) out.push({ kind: 'column-type', table, column: col.name, from: col.type, to: now.type });
    const properties = columnProperties(col, now);
    if (properties.length > 0) out.push({ kind: 'column-changed', table, column: col.name, properties });
  }
  // The columns both have, in a different order: COPY text follows the order, so it matters.
  const keptBefore = a.columns.map((c) => c.name).filter((n) => after.has(n));
  const keptAfter = b.columns.map((c) => c.name).filter((n) => before.has(n));
  if (keptBefore.join('\0') !== keptAfter.join('\0')) out.push({ kind: 'column-moved', table, from: keptBefore, to: keptAfter });
  for (const [name, change] of namedChanges(a.constraints, b.constraints, (x) => `${x.type} ${x.definition}`)) {
    out.push({ kind: `constraint-${change}`, table, name });
  }
  for (const [name, change] of namedChanges(a.indexes, b.indexes, (x) => `${String(x.unique)} ${x.using}`)) {
    out.push({ kind: `index-${change}`, table, name });
  }
  return out;
}

/**
 * What changed from `before` to `after`, in a fixed order: the schema's name, enum types,
 * owned sequences, tables added, tables removed, then per table (by name) columns removed, added, retyped,
 * otherwise changed, reordered, and constraints and indexes. Empty when the two are equal.
 * A rename (of a table or a column) is reported as a removal and an addition: the catalogs
 * keep no history, and a guess from types and positions would be wrong where it matters.
 */
export function diffSchemas(before: SchemaDescription, after: SchemaDescription): SchemaChange[] {
  const out: SchemaChange[] = [];
  if (before.schema !== after.schema) out.push({ kind: 'schema-renamed', from: before.schema, to: after.schema });
  const enumsBefore = byName(before.enums);
  const enumsAfter = byName(after.enums);
  for (const name of sorted(enumsBefore.keys())) {
    const old = enumsBefore.get(name);
    const now = enumsAfter.get(name);
    if (now === undefined) out.push({ kind: 'enum-removed', name });
    else if (old !== undefined && old.labels.join('\0') !== now.labels.join('\0')) out.push({ kind: 'enum-changed', name, from: old.labels, to: now.labels });
  }
  for (const name of sorted(enumsAfter.keys())) if (!enumsBefore.has(name)) out.push({ kind: 'enum-added', name });
  for (const [name, change] of namedChanges(before.sequences, after.sequences, canonicalJson)) out.push({ kind: `sequence-${change}`, name });
  const tablesBefore = byName(before.tables);
  const tablesAfter = byName(after.tables);
  for (const name of sorted(tablesAfter.keys())) {
    if (!tablesBefore.has(name)) out.push({ kind: 'table-added', table: name, columns: tablesAfter.get(name)?.columns.length ?? 0 });
  }
  for (const name of sorted(tablesBefore.keys())) {
    if (!tablesAfter.has(name)) out.push({ kind: 'table-removed', table: name, columns: tablesBefore.get(name)?.columns.length ?? 0 });
  }
  for (const name of sorted(tablesBefore.keys())) {
    const a = tablesBefore.get(name);
    const b = tablesAfter.get(name);
    if (a !== undefined && b !== undefined) out.push(...tableChanges(a, b));
  }
  return out;
}

/** One change as a line for people, e.g. `posts: + column pinned boolean`. */
export function describeSchemaChange(change: SchemaChange): string {
  switch (change.kind) {
    case 'schema-renamed':
      return `schema ${change.from} is now ${change.to}`;
    case 'enum-added':
      return `+ enum type ${change.name}`;
    case 'enum-removed':
      return `- enum type ${change.name}`;
    case 'enum-changed':
      return `enum type ${change.name}: labels (${change.from.join(', ')}) → (${change.to.join(', ')})`;
    case 'sequence-added':
      return `+ sequence ${change.name}`;
    case 'sequence-removed':
      return `- sequence ${change.name}`;
    case 'sequence-changed':
      return `sequence ${change.name} changed`;
    case 'table-added':
      return `+ table ${change.table} (${change.columns} columns)`;
    case 'table-removed':
      return `- table ${change.table} (${change.columns} columns)`;
    case 'column-added':
      return `${change.table}: + column ${change.column} ${change.type}`;
    case 'column-removed':
      return `${change.table}: - column ${change.column} ${change.type}`;
    case 'column-type':
      return `${change.table}: column ${change.column} type ${change.from} → ${change.to}`;
    case 'column-changed':
      return `${change.table}: column ${change.column} changed ${change.properties.join(', ')}`;
    case 'column-moved':
      return `${change.table}: column order (${change.from.join(', ')}) → (${change.to.join(', ')})`;
    case 'constraint-added':
      return `${change.table}: + constraint ${change.name}`;
    case 'constraint-removed':
      return `${change.table}: - constraint ${change.name}`;
    case 'constraint-changed':
      return `${change.table}: constraint ${change.name} changed`;
    case 'index-added':
      return `${change.table}: + index ${change.name}`;
    case 'index-removed':
      return `${change.table}: - index ${change.name}`;
    case 'index-changed':
      return `${change.table}: index ${change.name} changed`;
  }
}
