import { z } from 'zod';
import type { SchemaDescription } from './schema-description.ts';

/**
 * Structural validation of a schema description read back from a manifest, before any of it
 * becomes SQL. The manifest is authenticated first (its sha256 against the vault's record
 * and its signature), so what reaches this check is what the backup itself read from the
 * chat store's catalogs; this is the second line: whatever the description says, the DDL
 * built from it is a fixed set of single statements in which every name is a quoted
 * identifier, every type name has the shape `format_type()` prints, and every expression
 * (defaults, generated columns, constraint and index definitions) is one balanced SQL
 * fragment that cannot end its statement or start a comment. schema-ddl.ts quotes every
 * identifier and literal; the restore runs each statement alone, with the extended query
 * protocol, which refuses more than one statement per call.
 */

/** Longest expression accepted; PostgreSQL's deparsed definitions are far shorter. */
const MAX_EXPRESSION_CHARS = 64 * 1024;
/** NAMEDATALEN - 1: PostgreSQL truncates longer identifiers, so a longer one is not from the catalogs. */
const MAX_IDENTIFIER_BYTES = 63;

const identifier = z
  .string()
  .min(1)
  .refine((s) => !s.includes('\0') && Buffer.byteLength(s, 'utf8') <= MAX_IDENTIFIER_BYTES, {
    error: 'not a PostgreSQL identifier (1 to 63 bytes, no NUL)',
  });

const WORD = '[a-z_][a-z0-9_$]*';
const QUOTED = '"(?:[^"\\0]|"")+"';
const NAME = `(?:${WORD}|${QUOTED})`;
/**
 * What `format_type()` prints: an optionally schema-qualified name of lower-case words or
 * quoted identifiers, an optional type modifier such as `(255)` or `(10,2)` (also inside,
 * as in `timestamp(3) with time zone`), and array brackets.
 */
const TYPE_NAME = new RegExp(`^${NAME}(?:\\.${NAME})?(?: ${WORD})*(?:\\(\\d+(?:,\\d+)?\\))?(?: ${WORD})*(?:\\[\\])*$`);

const typeName = z.string().regex(TYPE_NAME, 'not a type name as format_type() prints it');

const expression = z.string().min(1).max(MAX_EXPRESSION_CHARS).superRefine((text, ctx) => {
  const problem = sqlFragmentProblem(text);
  if (problem !== null) ctx.addIssue({ code: 'custom', message: problem });
});

const bigintText = z.string().regex(/^-?\d{1,20}$/, 'a whole number');

const SequenceSchema = z.strictObject({
  name: identifier,
  table: identifier,
  column: identifier,
  identity: z.boolean(),
  type: typeName,
  start: bigintText,
  increment: bigintText,
  min: bigintText,
  max: bigintText,
  cache: bigintText,
  cycle: z.boolean(),
});

const ColumnSchema = z.strictObject({
  name: identifier,
  type: typeName,
  notNull: z.boolean(),
  default: expression.nullable(),
  collation: identifier.nullable(),
  identity: z.enum(['always', 'by_default']).nullable(),
  generated: expression.nullable(),
});

const TableSchema = z.strictObject({
  name: identifier,
  columns: z.array(ColumnSchema).min(1),
  constraints: z.array(z.strictObject({ name: identifier, type: z.enum(['p', 'u', 'c', 'x', 'f']), definition: expression })),
  indexes: z.array(z.strictObject({ name: identifier, unique: z.boolean(), using: expression })),
});

/** A schema description as schema-ddl.ts needs it, with every string checked (see above). */
export const SchemaDescriptionSchema: z.ZodType<SchemaDescription> = z.strictObject({
  schema: identifier,
  enums: z.array(z.strictObject({ name: identifier, labels: z.array(z.string().refine((s) => !s.includes('\0'))) })),
  sequences: z.array(SequenceSchema),
  tables: z.array(TableSchema),
});

/**
 * Why `text` is not one self-contained SQL fragment, or null when it is: outside string
 * literals, quoted identifiers and dollar quotes it has no `;`, no comment (`--`, `/*`), no
 * backslash, and balanced parentheses; every literal and quote is closed. Escape-string
 * literals (`E'…'`, where a backslash escapes a quote) are followed as such.
 */
export function sqlFragmentProblem(text: string): string | null {
  let depth = 0;
  let i = 0;
  while (i < text.length) {
    const c = text[i] as string;
    const next = text[i + 1];
    if (c === "'") {
      const escapes = i > 0 && /[eE]/.test(text[i - 1] as string) && (i < 2 || !/[A-Za-z0-9_$]/.test(text[i - 2] as string));
      i += 1;
      for (;;) {
        if (i >= text.length) return 'a string literal is not closed';
        const d = text[i] as string;
        if (escapes && d === '\\') i += 2;
        else if (d === "'" && text[i + 1] === "'") i += 2;
        else if (d === "'") break;
        else i += 1;
      }
      i += 1;
      continue;
    }
    if (c === '"') {
      const end = text.indexOf('"', i + 1);
      if (end < 0) return 'a quoted identifier is not closed';
      // A doubled "" inside the identifier reads as two adjacent quoted identifiers: same extent.
      i = end + 1;
      continue;
    }
    if (c === '$') {
      const tag = /^\$([A-Za-z_][A-Za-z0-9_]*)?\$/.exec(text.slice(i));
      if (tag !== null && (i === 0 || !/[A-Za-z0-9_]/.test(text[i - 1] as string))) {
        const end = text.indexOf(tag[0], i + tag[0].length);
        if (end < 0) return 'a dollar-quoted string is not closed';
        i = end + tag[0].length;
        continue;
      }
    }
    if (c === ';') return 'it contains a statement separator (;)';
    if (c === '\\') return 'it contains a backslash outside a string';
    if (c === '-' && next === '-') return 'it contains a comment (--)';
    if (c === '/' && next === '*') return 'it contains a comment (/*)';
    if (c === '(') depth += 1;
    if (c === ')') {
      depth -= 1;
      if (depth < 0) return 'it closes a parenthesis it did not open';
    }
    i += 1;
  }
  return depth === 0 ? null : 'its parentheses are not balanced';
}
