import { DATA_CLASSES, type DataClass } from '../mapping/schema.ts';
import { decodeSubjects } from '../mapping/subjects.ts';

/**
 * Names of cells and keys. Components are percent-encoded so that an id from the chat
 * store (which may hold `/` or `:`) can never make two different tuples share a name.
 */

/** The dimension values a row is encrypted under. */
export interface CellTuple {
  /** Chat-store tenant id; null only for class `system`. */
  readonly tenant: string | null;
  readonly class: DataClass;
  /** Period label (`2026-03`, `2026-W11`, `2026-03-14`), or `-` for rows with no timestamp. */
  readonly period: string;
  /**
   * The row's subjects (the persons its subject columns name) as their canonical text
   * (src/mapping/subjects.ts): for one subject, its chat-store user id (with `\` and `,`
   * escaped); for several, their ids sorted and joined by `,`. Null when the row names
   * nobody. Read the ids with {@link subjectsOf}.
   */
  readonly author: string | null;
  /** Chat-store conversation id of the row; null when the table maps none (or the row has none). */
  readonly conversation: string | null;
}

// One list of data classes for the whole project: the mapping's.
export { DATA_CLASSES, type DataClass };

/** The period label of rows without a timestamp: they are kept until their tenant or author goes. */
export const NO_PERIOD = '-';

const enc = encodeURIComponent;

/** A nullable component: null is `-`, and a real `-` is escaped so the two never meet. */
function part(value: string | null): string {
  return value === null ? '-' : enc(value).replaceAll('-', '%2D');
}

/** The user ids of a tuple's subjects, in the canonical (byte) order; [] for none. */
export function subjectsOf(tuple: { readonly author: string | null }): string[] {
  return decodeSubjects(tuple.author);
}

/**
 * The subject component of a cell or cell key id: `-` for none, else each id
 * percent-encoded (and `-` escaped, as {@link part} does) and joined by `+`, which
 * encodeURIComponent always escapes, so a list can never read as one id. One subject
 * gives exactly `part(id)`.
 */
function subjectPart(author: string | null): string {
  const ids = decodeSubjects(author);
  return ids.length === 0 ? '-' : ids.map(part).join('+');
}

/** `tenant:T` */
export function tenantKeyId(tenant: string): string {
  return `tenant:${enc(tenant)}`;
}

/** `user:T/U` */
export function userKeyId(tenant: string, user: string): string {
  return `user:${enc(tenant)}/${enc(user)}`;
}

/** `conversation:T/C` */
export function conversationKeyId(tenant: string, conversation: string): string {
  return `conversation:${enc(tenant)}/${enc(conversation)}`;
}

/** `period:T/class/2026-03` */
export function periodKeyId(tenant: string, dataClass: DataClass, period: string): string {
  return `period:${enc(tenant)}/${dataClass}/${enc(period)}`;
}

export const SYSTEM_KEY_ID = 'system';

/**
 * The dimension keys a cell's key is derived from, in derivation order: period, then user,
 * then conversation, then tenant (docs/format.md). Destroying any one of them makes the cell unreadable. A
 * row with no timestamp has no period key; a row has one user key per subject (none when
 * it names nobody), in the subjects' canonical order; a row
 * with no conversation has no conversation key; system rows have only the system key.
 */
export function dimensionKeyIds(tuple: CellTuple): string[] {
  if (tuple.tenant === null) return [SYSTEM_KEY_ID];
  const ids: string[] = [];
  if (tuple.period !== NO_PERIOD) ids.push(periodKeyId(tuple.tenant, tuple.class, tuple.period));
  for (const user of subjectsOf(tuple)) ids.push(userKeyId(tuple.tenant, user));
  if (tuple.conversation !== null) ids.push(conversationKeyId(tuple.tenant, tuple.conversation));
  ids.push(tenantKeyId(tuple.tenant));
  return ids;
}

/** The kind of a dimension key id (`tenant`, `user`, `conversation`, `period`, `system`). */
export function dimensionKind(id: string): 'tenant' | 'user' | 'conversation' | 'period' | 'system' {
  if (id === SYSTEM_KEY_ID) return 'system';
  const kind = id.slice(0, id.indexOf(':'));
  if (kind === 'tenant' || kind === 'user' || kind === 'conversation' || kind === 'period') return kind;
  throw new Error(`not a dimension key id: ${id}`);
}

/** The cell key id of a tuple; one key serves the tuple's cells in every table of its class. */
export function cellKeyId(tuple: CellTuple): string {
  return `cell:${part(tuple.tenant)}/${tuple.class}/${enc(tuple.period)}/${subjectPart(tuple.author)}/${part(tuple.conversation)}`;
}

/** `<table>/<tenant>/<period>`: the segment (one object of a snapshot's tree) a cell belongs to. */
export function segmentId(table: string, tenant: string | null, period: string): string {
  return `${table}/${part(tenant)}/${enc(period)}`;
}

/**
 * The id of one table's cell for a tuple, unique within a snapshot:
 * `<table>/<tenant>/<period>/<subjects>/<conversation>`, its segment's id and two more
 * components (`<subjects>`: the subjects' encoded ids joined by `+`).
 */
export function cellId(table: string, tuple: CellTuple): string {
  return `${table}/${part(tuple.tenant)}/${enc(tuple.period)}/${subjectPart(tuple.author)}/${part(tuple.conversation)}`;
}
