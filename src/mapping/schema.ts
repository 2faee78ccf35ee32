import { z } from 'zod';
import { ErrorCode, LetheError } from '../errors/index.ts';
import {
  BASE_ALIAS,
  COLUMN_REF,
  IDENTIFIER,
  MAX_IDENTIFIER_LENGTH,
  parseColumnRef,
} from './identifiers.ts';

/** Data classes; retention is set per class. */
export const DATA_CLASSES = ['messages', 'attachments', 'profiles', 'metadata', 'system'] as const;
export type DataClass = (typeof DATA_CLASSES)[number];

/** How a timestamp column encodes time. Periods are computed in UTC for all of them. */
export const TIMESTAMP_TYPES = ['timestamptz', 'timestamp', 'epoch_ms', 'epoch_s'] as const;
export type TimestampType = (typeof TIMESTAMP_TYPES)[number];

/** A strict object whose unknown-key error lists the keys that are allowed. */
function strict<T extends z.ZodRawShape>(shape: T): z.ZodObject<T, z.core.$strict> {
  const allowed = Object.keys(shape).join(', ');
  return z.strictObject(shape, {
    error: (issue) =>
      issue.code === 'unrecognized_keys'
        ? `unknown key ${issue.keys.map((k) => JSON.stringify(k)).join(', ')}: remove it or fix its spelling (allowed: ${allowed})`
        : undefined,
  });
}

function identifier(what: string): z.ZodString {
  return z
    .string({ error: `${what} must be a string` })
    .max(MAX_IDENTIFIER_LENGTH, {
      error: `${what} is longer than ${MAX_IDENTIFIER_LENGTH} characters: shorten it`,
    })
    .regex(IDENTIFIER, {
      error: (issue) =>
        `${what} ${JSON.stringify(issue.input)} is not a plain lower-case SQL name: use letters a-z, digits and _ (not starting with a digit)`,
    });
}

const columnRef = z.string({ error: 'a column reference must be a string' }).regex(COLUMN_REF, {
  error: (issue) =>
    `column reference ${JSON.stringify(issue.input)} is malformed: write "column" for the table's own column or "alias.column" for a joined one`,
});

/**
 * A tenant given as a column reference. A quoted string (`"'acme'"`) is almost always meant
 * as a constant, so the error suggests `{ literal: … }` for it.
 */
const tenantColumnRef = z.string({ error: 'tenant must be a column reference or { literal: "id" }' }).check((ctx) => {
  if (COLUMN_REF.test(ctx.value)) return;
  const quoted = /^'(.*)'$/s.exec(ctx.value) ?? /^"(.*)"$/s.exec(ctx.value);
  const fix =
    quoted !== null
      ? `for the same tenant on every row write { literal: ${JSON.stringify(quoted[1])} }`
      : 'write "column" for the table\'s own column, "alias.column" for a joined one, or { literal: "id" } for the same tenant on every row';
  ctx.issues.push({
    code: 'custom',
    input: ctx.value,
    message: `column reference ${JSON.stringify(ctx.value)} is malformed: ${fix}`,
  });
});

/** The same tenant id for every row of a table: a single-tenant store, or users shared by every team. */
const TenantLiteralSchema = strict({
  literal: z
    .string({ error: 'tenant.literal must be a string (the tenant id)' })
    .min(1, { error: 'tenant.literal is empty: give the tenant id every row belongs to' })
    .max(1000, { error: 'tenant.literal is longer than 1000 characters: use a shorter tenant id' }),
});

/**
 * A tenant column whose empty value ('') stands for a tenant of its own, as team chats mark
 * direct channels (team_id ''): those rows get the tenant `whenEmpty`, an id an operator can
 * name on the command line (`--tenant ''` is refused as the likely result of an unset
 * variable), so such rows can be held and erased by themselves. NULL stays "no tenant",
 * which backup refuses.
 */
const TenantColumnSchema = strict({
  column: tenantColumnRef,
  whenEmpty: z
    .string({ error: 'tenant.whenEmpty must be a string (the tenant id for rows whose tenant column is empty)' })
    .min(1, { error: 'tenant.whenEmpty is empty: give the tenant id rows with an empty tenant column belong to' })
    .max(1000, { error: 'tenant.whenEmpty is longer than 1000 characters: use a shorter tenant id' }),
});

// A union reports only "Invalid input": repeat the failing option's own messages instead.
const TenantSchema = z.union([tenantColumnRef, TenantLiteralSchema, TenantColumnSchema], {
  error: (issue) => {
    const input = issue.input;
    const option =
      typeof input === 'string'
        ? tenantColumnRef
        : typeof input === 'object' && input !== null
          ? 'column' in input || 'whenEmpty' in input
            ? TenantColumnSchema
            : TenantLiteralSchema
          : undefined;
    const result = option?.safeParse(input);
    if (result === undefined || result.success) {
      return 'tenant must be a column reference ("column" or "alias.column"), { literal: "id" }, or { column: "…", whenEmpty: "id" }';
    }
    return result.error.issues.map((i) => i.message).join('; ');
  },
});

/** One subject column, or a list of them (every column of the row that names a person). */
const AuthorSchema = z.union(
  [
    columnRef,
    z
      .array(columnRef, { error: 'author must be a column reference or a list of them' })
      .min(1, { error: 'author lists no column: list the subject columns or remove author' }),
  ],
  {
    error: (issue) =>
      typeof issue.input === 'string' || Array.isArray(issue.input)
        ? undefined
        : 'author must be a column reference or a list of them (the subject columns)',
  },
);

const JoinSchema = strict({
  table: identifier('join table'),
  as: identifier('join alias'),
  from: identifier('join source').optional(),
  on: z.record(identifier('local column'), identifier('remote column')),
});

const TimestampSchema = strict({
  column: columnRef,
  type: z.enum(TIMESTAMP_TYPES, {
    error: `timestamp type must be one of ${TIMESTAMP_TYPES.join(', ')}`,
  }),
});

/**
 * A column of the base table holding the location of a file the row refers to, as a key
 * relative to the named `chatStore.blobStores` entry. The file's bytes are backed up as a
 * blob cell under the row's own tenant, class, period, author and conversation, so erasure,
 * retention and holds reach it exactly as they reach the row (docs/mapping.md).
 */
const BlobSchema = strict({
  column: identifier('blob column'),
  store: z
    .string({ error: 'blob store must be a string' })
    .regex(/^[a-z_][a-z0-9_-]*$/, {
      error: (issue) =>
        `blob store ${JSON.stringify(issue.input)} is not a blob store name: use the name of an entry under chatStore.blobStores`,
    }),
});

/**
 * How lethe reads one table: its data class, a key that orders its rows, and where each
 * row's tenant, author, conversation and timestamp live (possibly through inner joins).
 */
export const TableMappingSchema = strict({
  class: z.enum(DATA_CLASSES, { error: `class must be one of ${DATA_CLASSES.join(', ')}` }),
  primaryKey: z
    .array(identifier('primary key column'))
    .min(1, { error: 'primaryKey needs at least one column' }),
  joins: z.array(JoinSchema).optional(),
  tenant: TenantSchema.optional(),
  author: AuthorSchema.optional(),
  conversation: columnRef.optional(),
  timestamp: TimestampSchema.optional(),
  blob: BlobSchema.optional(),
});

/** The mapping of a whole chat store. */
export const MappingSchema = strict({
  schema: identifier('schema').default('public'),
  tables: z.record(identifier('table name'), TableMappingSchema),
  system: z.array(identifier('system table')).default([]),
}).superRefine((mapping, ctx) => {
  for (const [name, table] of Object.entries(mapping.tables)) {
    for (const problem of tableProblems(name, table)) {
      ctx.addIssue({
        code: 'custom',
        message: problem.message,
        path: ['tables', name, ...problem.path],
      });
    }
  }
  const seen = new Set<string>();
  mapping.system.forEach((name, i) => {
    if (name in mapping.tables) {
      ctx.addIssue({
        code: 'custom',
        path: ['system', i],
        message: `table "${name}" is both mapped under tables and listed as system: keep only one`,
      });
    }
    if (seen.has(name))
      ctx.addIssue({
        code: 'custom',
        path: ['system', i],
        message: `table "${name}" is listed twice: remove one`,
      });
    seen.add(name);
  });
});

export type JoinMapping = z.output<typeof JoinSchema>;
/** A table's tenant: a column reference, or the same id for every row. */
export type TenantMapping = z.output<typeof TenantSchema>;
export type BlobMapping = z.output<typeof BlobSchema>;
export type TableMapping = z.output<typeof TableMappingSchema>;
/** A validated mapping (defaults applied). */
export type Mapping = z.output<typeof MappingSchema>;
/** A mapping as written in config (schema and system optional). */
export type MappingInput = z.input<typeof MappingSchema>;

interface Problem {
  readonly path: (string | number)[];
  readonly message: string;
}

/** Cross-field rules zod's shapes cannot state: joins chain, aliases resolve, tenant rules. */
function tableProblems(name: string, table: TableMapping): Problem[] {
  const problems: Problem[] = [];
  if (table.class === 'system' && table.tenant !== undefined) {
    problems.push({
      path: ['tenant'],
      message: 'class system has no tenant: remove tenant, or choose another class',
    });
  }
  if (table.class === 'system') {
    // System cells are encrypted under the system key only: splitting them by author,
    // conversation or period would suggest an erasure or retention that can never reach them.
    for (const field of ['author', 'conversation', 'timestamp'] as const) {
      if (table[field] === undefined) continue;
      problems.push({
        path: [field],
        message: `class system is encrypted under the system key only, so no erasure or retention reaches its rows by ${field}: remove ${field}, or choose another class (with a tenant) so erasure and retention can reach the rows`,
      });
    }
  }
  if (table.class !== 'system' && table.tenant === undefined) {
    problems.push({
      path: [],
      message: `class ${table.class} needs a tenant: set tenant to the column (or alias.column) holding the tenant id, or to { literal: "id" } when every row has the same tenant, or use class system`,
    });
  }
  table.primaryKey.forEach((column, i) => {
    if (table.primaryKey.indexOf(column) !== i) {
      problems.push({
        path: ['primaryKey', i],
        message: `column "${column}" appears twice in primaryKey: remove one`,
      });
    }
  });

  const aliases = new Set<string>();
  (table.joins ?? []).forEach((join, i) => {
    if (join.as === BASE_ALIAS || join.as === name) {
      problems.push({
        path: ['joins', i, 'as'],
        message: `alias "${join.as}" is reserved for the base table: choose another alias`,
      });
    } else if (aliases.has(join.as)) {
      problems.push({
        path: ['joins', i, 'as'],
        message: `alias "${join.as}" is used twice: give each join its own alias`,
      });
    }
    if (join.from !== undefined && join.from !== name && !aliases.has(join.from)) {
      problems.push({
        path: ['joins', i, 'from'],
        message: `join source "${join.from}" is neither the table "${name}" nor an alias declared by an earlier join (${[...aliases].join(', ') || 'none'}): fix it or reorder the joins`,
      });
    }
    if (Object.keys(join.on).length === 0) {
      problems.push({
        path: ['joins', i, 'on'],
        message: 'join needs at least one column pair { localColumn: remoteColumn }',
      });
    }
    aliases.add(join.as);
  });

  const used = new Set<string>();
  const refs: [(string | number)[], string | undefined][] = [
    [['tenant'], tenantColumn(table)],
    ...subjectRefs(table).map((ref, i): [(string | number)[], string] => [
      Array.isArray(table.author) ? ['author', i] : ['author'],
      ref,
    ]),
    [['conversation'], table.conversation],
    [['timestamp', 'column'], table.timestamp?.column],
  ];
  subjectRefs(table).forEach((ref, i, all) => {
    if (all.indexOf(ref) !== i) {
      problems.push({ path: ['author', i], message: `subject column "${ref}" is listed twice: remove one` });
    }
  });
  for (const [path, ref] of refs) {
    // A malformed reference has its own error; its text says nothing about aliases.
    if (ref === undefined || !COLUMN_REF.test(ref)) continue;
    const { alias } = parseColumnRef(ref);
    if (alias === undefined) continue;
    used.add(alias);
    if (!aliases.has(alias)) {
      problems.push({
        path,
        message: `"${ref}" refers to alias "${alias}", which no join declares (${[...aliases].join(', ') || 'no joins'}): add the join or fix the alias`,
      });
    }
  }
  // A join that nothing uses would still drop rows (it is an inner join): reject it.
  const joins = table.joins ?? [];
  for (const join of joins) if (join.from !== undefined) used.add(join.from);
  joins.forEach((join, i) => {
    if (!used.has(join.as)) {
      problems.push({
        path: ['joins', i],
        message: `join "${join.as}" is not used by tenant, author, conversation, timestamp or another join: remove it`,
      });
    }
  });
  return problems;
}

/** The column reference of a table's tenant (plain or `{ column, whenEmpty }`); undefined for none or a literal tenant. */
export function tenantColumn(table: TableMapping): string | undefined {
  const tenant = table.tenant;
  if (typeof tenant === 'string') return tenant;
  return tenant !== undefined && 'column' in tenant ? tenant.column : undefined;
}

/** The constant tenant id of a table mapped with `tenant: { literal }`; undefined otherwise. */
export function tenantLiteral(table: TableMapping): string | undefined {
  const tenant = table.tenant;
  return typeof tenant === 'object' && 'literal' in tenant ? tenant.literal : undefined;
}

/** The tenant id of rows whose tenant column is '' (`tenant: { column, whenEmpty }`); undefined otherwise. */
export function tenantWhenEmpty(table: TableMapping): string | undefined {
  const tenant = table.tenant;
  return typeof tenant === 'object' && 'whenEmpty' in tenant ? tenant.whenEmpty : undefined;
}

/** A table's subject columns (`author`, one reference or a list), in mapping order; [] for none. */
export function subjectRefs(table: TableMapping): readonly string[] {
  if (table.author === undefined) return [];
  return typeof table.author === 'string' ? [table.author] : table.author;
}

/**
 * Every mapped table with at least one subject column, by table name (byte order), and the
 * column references (`column` or `alias.column`, as mapped) that name a person in its rows:
 * the columns an erasure of a person reaches.
 */
export function subjectColumns(mapping: Mapping): { table: string; columns: string[] }[] {
  return Object.entries(mapping.tables)
    .filter(([, table]) => subjectRefs(table).length > 0)
    .map(([name, table]) => ({ table: name, columns: [...subjectRefs(table)] }))
    .sort((a, b) => (a.table < b.table ? -1 : a.table > b.table ? 1 : 0));
}

/** `tables.messages.joins[0].on` from a zod path. */
export function formatPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const segment of path) {
    if (typeof segment === 'number') out += `[${segment}]`;
    else out += out === '' ? String(segment) : `.${String(segment)}`;
  }
  return out === '' ? '(top level)' : out;
}

/**
 * Validates a mapping (as read from config or code) and applies defaults. Throws
 * MAPPING_INVALID listing every problem, each with its path (`tables.x.joins[0].on`) and
 * the fix; `details.issues` holds them as `{ path, message }`.
 */
export function parseMapping(input: unknown, source = 'table mapping'): Mapping {
  const result = MappingSchema.safeParse(input);
  if (result.success) return result.data;
  const issues = result.error.issues.map((issue) => {
    const nested =
      issue.code === 'invalid_key' ? issue.issues.map((i) => i.message).join('; ') : '';
    return { path: formatPath(issue.path), message: nested === '' ? issue.message : nested };
  });
  throw new LetheError(
    ErrorCode.MAPPING_INVALID,
    `${source} is invalid:\n${issues.map((i) => `  - ${i.path}: ${i.message}`).join('\n')}`,
    { details: { issues } },
  );
}

/**
 * Checks that every table's `blob.store` names a configured blob store. Throws
 * MAPPING_INVALID naming each table, the store and the names that are configured.
 */
export function checkBlobStores(mapping: Mapping, configured: readonly string[]): void {
  const issues: { path: string; message: string }[] = [];
  for (const [name, table] of Object.entries(mapping.tables)) {
    if (table.blob === undefined || configured.includes(table.blob.store)) continue;
    issues.push({
      path: `tables.${name}.blob.store`,
      message:
        `blob store "${table.blob.store}" is not configured (configured: ${configured.join(', ') || 'none'}): ` +
        `add it under chatStore.blobStores, e.g. ${table.blob.store}: { url: file:///srv/chat/files }, or fix the name`,
    });
  }
  if (issues.length === 0) return;
  throw new LetheError(
    ErrorCode.MAPPING_INVALID,
    `the table mapping names blob stores the config does not have:\n${issues.map((i) => `  - ${i.path}: ${i.message}`).join('\n')}`,
    { details: { issues } },
  );
}
