import { ErrorCode, LetheError } from '../errors/index.ts';
import { inTransaction, withClient } from '../store/index.ts';
import { readCatalog, type CatalogTable } from './catalog.ts';
import { joinSource, resolveColumn } from './resolve.ts';
import { subjectRefs, tenantColumn, type DataClass, type Mapping, type TableMapping, type TimestampType } from './schema.ts';

/** A table lethe backs up, as found in the chat store. */
export interface TableInfo {
  readonly name: string;
  readonly class: DataClass;
  /** Every column, in attnum order. */
  readonly columns: readonly string[];
  /** The columns to COPY: all but stored generated ones, in attnum order. */
  readonly copyColumns: readonly string[];
  /** The mapping's primary key; for a table listed under system, the catalog's (maybe []). */
  readonly primaryKey: readonly string[];
}

const TIMESTAMP_TYPENAMES: Readonly<Record<TimestampType, readonly string[]>> = {
  timestamptz: ['timestamptz'],
  timestamp: ['timestamp'],
  epoch_ms: ['int8', 'int4', 'numeric'],
  epoch_s: ['int8', 'int4', 'numeric'],
};

/**
 * Checks `mapping` against the chat store's catalogs (never pg_dump) and describes every
 * table to back up, sorted by name.
 *
 * Collects every finding before failing:
 *  - MAPPING_INVALID when a mapped or system table, a join table, or a column (primary key,
 *    join `on` either side, tenant, author, conversation, timestamp, blob) does not exist; when a
 *    timestamp column's type does not match its declared type or a blob column is not text; when the primary key or a
 *    join's remote columns are not covered by a unique constraint or index (rows would be
 *    unordered or duplicated). The message also lists unmapped tables, if any.
 *  - TABLE_UNMAPPED (when the mapping is otherwise valid) naming every table of the schema
 *    that is neither mapped nor listed under `system`.
 * `details` holds `{ unmapped: string[], invalid: { path, message }[] }`. DATABASE when the
 * store cannot be read.
 */
export async function checkCoverage(
  url: string,
  mapping: Mapping,
  options: { signal?: AbortSignal } = {},
): Promise<{ tables: TableInfo[] }> {
  const catalog = await withClient(
    url,
    `reading the catalogs of schema "${mapping.schema}"`,
    (client) =>
      inTransaction(
        client,
        () => readCatalog(client, mapping.schema),
        'ISOLATION LEVEL REPEATABLE READ READ ONLY',
      ),
    options.signal,
  );
  const invalid: { path: string; message: string }[] = [];
  const unmapped = [...catalog.keys()].filter(
    (name) => !Object.hasOwn(mapping.tables, name) && !mapping.system.includes(name),
  );

  const infos: TableInfo[] = [];
  for (const [name, tm] of Object.entries(mapping.tables)) {
    const problems = tableProblems(mapping.schema, catalog, name, tm);
    invalid.push(
      ...problems.map((p) => ({
        path: p.at === '' ? `tables.${name}` : `tables.${name}.${p.at}`,
        message: p.message,
      })),
    );
    const table = catalog.get(name);
    if (table !== undefined && problems.length === 0)
      infos.push(info(table, tm.class, tm.primaryKey));
  }
  mapping.system.forEach((name, i) => {
    const table = catalog.get(name);
    if (table === undefined) {
      invalid.push({
        path: `system[${i}]`,
        message: `table "${mapping.schema}.${name}" does not exist: remove it from system or fix the name`,
      });
    } else {
      infos.push(info(table, 'system', table.primaryKey));
    }
  });

  const unmappedText =
    unmapped.length === 0
      ? ''
      : `unmapped tables in schema "${mapping.schema}": ${unmapped.join(', ')} — add a mapping for each under tables, ` +
        `or list it under system if it holds no tenant data`;
  if (invalid.length > 0) {
    const lines = invalid.map((p) => `  - ${p.path}: ${p.message}`);
    if (unmappedText !== '') lines.push(`  - ${unmappedText}`);
    throw new LetheError(
      ErrorCode.MAPPING_INVALID,
      `the table mapping does not match the chat store:\n${lines.join('\n')}`,
      {
        details: { unmapped, invalid },
      },
    );
  }
  if (unmapped.length > 0) {
    throw new LetheError(ErrorCode.TABLE_UNMAPPED, unmappedText, {
      details: { unmapped, invalid },
    });
  }
  return { tables: infos.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0)) };
}

function info(table: CatalogTable, dataClass: DataClass, primaryKey: readonly string[]): TableInfo {
  return {
    name: table.name,
    class: dataClass,
    columns: table.columns.map((c) => c.name),
    copyColumns: table.columns.filter((c) => !c.generated).map((c) => c.name),
    primaryKey: [...primaryKey],
  };
}

interface Problem {
  /** Path below `tables.<name>`; '' for the table itself. */
  readonly at: string;
  readonly message: string;
}

/** Every way the mapping of one table disagrees with the catalogs. */
function tableProblems(
  schema: string,
  catalog: Map<string, CatalogTable>,
  name: string,
  tm: TableMapping,
): Problem[] {
  const base = catalog.get(name);
  if (base === undefined)
    return [
      {
        at: '',
        message: `table "${schema}.${name}" does not exist: fix the name or remove its mapping`,
      },
    ];
  const problems: Problem[] = [];
  const add = (at: string, message: string): void => {
    problems.push({ at, message });
  };
  const aliasTable = new Map<string, CatalogTable | undefined>([['t', base]]);
  const hasColumn = (table: CatalogTable, column: string): boolean =>
    table.columns.some((c) => c.name === column);

  tm.primaryKey.forEach((column, i) => {
    if (!hasColumn(base, column))
      add(`primaryKey[${i}]`, noColumn(base, column));
  });
  if (problems.length === 0 && !coversUniqueKey(base, tm.primaryKey)) {
    add(
      'primaryKey',
      `(${tm.primaryKey.join(', ')}) is not unique in "${name}" (no primary key, unique constraint or unique ` +
        `index within it): use the table's primary key`,
    );
  }

  (tm.joins ?? []).forEach((join, i) => {
    const target = catalog.get(join.table);
    const sourceAlias = joinSource(name, join.from);
    const source = aliasTable.get(sourceAlias);
    aliasTable.set(join.as, target);
    if (target === undefined) {
      add(`joins[${i}].table`, `table "${schema}.${join.table}" does not exist: fix the name`);
      return;
    }
    for (const [local, remote] of Object.entries(join.on)) {
      if (source !== undefined && !hasColumn(source, local)) {
        add(
          `joins[${i}].on`,
          noColumn(source, local, ' (the join source)'),
        );
      }
      if (!hasColumn(target, remote)) {
        add(`joins[${i}].on`, noColumn(target, remote));
      }
    }
    const remotes = Object.values(join.on);
    if (remotes.every((c) => hasColumn(target, c)) && !coversUniqueKey(target, remotes)) {
      add(
        `joins[${i}].on`,
        `(${remotes.join(', ')}) is not a unique key of "${join.table}", so rows could be duplicated: ` +
          `join on its primary key or a unique constraint`,
      );
    }
  });

  const refs: [string, string | undefined][] = [
    ['tenant', tenantColumn(tm)],
    ...subjectRefs(tm).map((ref, i): [string, string] => [Array.isArray(tm.author) ? `author[${i}]` : 'author', ref]),
    ['conversation', tm.conversation],
    ['timestamp.column', tm.timestamp?.column],
  ];
  for (const [field, ref] of refs) {
    if (ref === undefined) continue;
    const resolved = resolveColumn(name, tm, ref);
    const table = aliasTable.get(resolved.alias);
    if (table === undefined) continue; // the join's own problem was reported above
    const column = table.columns.find((c) => c.name === resolved.column);
    if (column === undefined) {
      add(field, noColumn(table, resolved.column));
    } else if (field === 'timestamp.column' && tm.timestamp !== undefined) {
      const declared = tm.timestamp.type;
      if (!TIMESTAMP_TYPENAMES[declared].includes(column.typeName)) {
        add(
          'timestamp.type',
          `column "${table.name}.${column.name}" is ${column.type}, not ${declared}: declare type ${suggestType(column.typeName)}`,
        );
      }
    }
  }
  if (tm.blob !== undefined) {
    const column = base.columns.find((c) => c.name === tm.blob?.column);
    if (column === undefined) {
      add('blob.column', `column "${tm.blob.column}" does not exist in "${name}": name the column holding the file's location`);
    } else if (!BLOB_TYPENAMES.includes(column.typeName)) {
      add(
        'blob.column',
        `column "${name}.${column.name}" is ${column.type}, not text or varchar: a blob column holds the file's location as text`,
      );
    }
  }
  return problems;
}

/** Types a blob column may have: it holds a location key as text. */
const BLOB_TYPENAMES: readonly string[] = ['text', 'varchar'];

/** Columns of a table a missing-column message lists, at most. */
const COLUMNS_LISTED = 30;

/**
 * The message for a column the mapping names and the table does not have. A column the
 * chat product renamed in a release looks exactly like a typo, so the message lists the
 * table's columns as they are now: the new name is among them.
 */
function noColumn(table: CatalogTable, column: string, note = ''): string {
  const names = table.columns.map((c) => c.name);
  const listed = names.slice(0, COLUMNS_LISTED).join(', ') + (names.length > COLUMNS_LISTED ? `, … (${names.length - COLUMNS_LISTED} more)` : '');
  return (
    `column "${column}" does not exist in "${table.name}"${note}: fix the name; if the chat store renamed it, ` +
    `put its new name here (columns of "${table.name}" now: ${listed})`
  );
}

function coversUniqueKey(table: CatalogTable, columns: readonly string[]): boolean {
  return table.uniqueKeys.some((key) => key.length > 0 && key.every((c) => columns.includes(c)));
}

function suggestType(typeName: string): string {
  if (typeName === 'timestamptz') return 'timestamptz';
  if (typeName === 'timestamp') return 'timestamp';
  if (['int8', 'int4', 'numeric'].includes(typeName)) return 'epoch_ms or epoch_s';
  return 'timestamptz, timestamp, epoch_ms or epoch_s — or convert the column';
}
