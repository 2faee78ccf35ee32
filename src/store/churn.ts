import type pg from 'pg';
import { ErrorCode, LetheError, throwIfAborted } from '../errors/index.ts';
import { languageOf } from './corpus.ts';
import { copyRows } from './copy-load.ts';
import { addFilesToNewMessages, removeObjects } from './files.ts';
import { COPY_NULL, copyBool, copyRow, copyText, copyTimestamp } from './copy-text.ts';
import { inTransaction, withClient } from './pg-client.ts';
import { Prng } from './random.ts';
import { COLUMNS } from './rows.ts';
import { messageBody } from './text.ts';

/**
 * Churn as a chat service makes it between two backups: new messages in the latest month,
 * edits and deletions anywhere in the history. The benchmark applies it before the
 * incremental backup; tests use it to find "the edited two-year-old message".
 *
 * Selection is done by the server: every candidate is ranked by md5(seed, purpose, id) and
 * the first N are kept in a temporary table (a top-N sort, so memory is bounded by N on
 * the server, and the client only ever holds one batch). md5 rather than hashtext because
 * md5 is the same on every platform and PostgreSQL version, so a seed means the same rows
 * everywhere.
 */

const DAY_MS = 86_400_000;
/** New messages, and the edits' edited_at_ms, fall in the store's last 30 days. */
const WINDOW_MS = 30 * DAY_MS;
/** Rows per round trip when editing and adding: the client holds at most one batch. */
const BATCH = 2_000;
const PURPOSE_ADD_BODY = 30;
const PURPOSE_ADD_TIME = 31;
const PURPOSE_EDIT = 32;

export interface ChurnOptions {
  /** Messages to add, as a share of the messages in the store before the churn: 0.01 adds 1%. In [0, 1]. */
  readonly addFraction: number;
  /** Existing messages to edit, as a share of the messages before the churn. In [0, 1]. */
  readonly editFraction: number;
  /** Existing messages to delete, as a share of the messages before the churn. In [0, 1]. */
  readonly deleteFraction: number;
  /** Non-negative safe integer: the same store and seed give the same churn. */
  readonly seed: number;
  /**
   * The chat store's object store (table `files`): when given, about 1% of the added
   * messages carry a file written there, and the files of deleted messages are removed
   * from it after the commit. Without it, no file is added and no bytes are removed.
   */
  readonly filesDir?: string;
  readonly signal?: AbortSignal;
}

/** One message the churn touched, as it was before the churn. */
export interface ChurnedMessage {
  readonly id: string;
  readonly createdAt: Date;
}

export interface ChurnResult {
  /** Messages in the store before the churn: the base of the three fractions. */
  readonly messagesBefore: number;
  readonly added: number;
  readonly edited: number;
  readonly deleted: number;
  /** Rows deleted with the deleted messages because they refer to them. */
  readonly deletedDependents: {
    readonly messageEdits: number;
    readonly attachments: number;
    readonly files: number;
  };
  /** Files added with the new messages (0 without `filesDir`), and their bytes. */
  readonly addedFiles: { readonly files: number; readonly bytes: number };
  /**
   * The edited message created first (of the edits, the one deepest in the history: the
   * "edited two-year-old message" of the tests); null when nothing was edited.
   */
  readonly oldestEdited: ChurnedMessage | null;
  /** The deleted message created first; null when nothing was deleted. */
  readonly oldestDeleted: ChurnedMessage | null;
  /**
   * The store's last 30 days, ending at its newest message before the churn: the added
   * messages' created_at and the edits' edited_at_ms fall in it.
   */
  readonly window: { readonly start: Date; readonly end: Date };
}

/**
 * Applies one round of churn to a seeded reference store (schema `public`), in one
 * transaction (the messages table is locked against other writers meanwhile):
 *
 * - deletes round(deleteFraction × N) existing messages, N being the messages before the
 *   churn, chosen uniformly over the whole history among the messages no reply points
 *   at. A thread root stays (a chat service shows it as "message deleted" rather than
 *   orphan the replies), so no other message is rewritten. A deleted message's
 *   message_edits, attachments and files rows go first: they belong to it, and their
 *   foreign keys would refuse the delete otherwise. With `filesDir`, the deleted files'
 *   bytes are removed once the transaction has committed (never before: a rollback keeps
 *   the rows that point at them).
 * - edits round(editFraction × N) other existing messages, chosen uniformly over the whole
 *   history: each gets a message_edits row (editor the sender, previous_body the old
 *   body, edited_at_ms a moment in the window, and at least a second after the message
 *   was created), a new body in the sender's language, and `edited = true`.
 * - adds round(addFraction × N) messages with ids after the current maximum, created_at
 *   spread evenly over the window; each goes to the conversation and sender of an
 *   existing message of the window, so busy conversations and senders get most of them.
 *   With `filesDir`, about 1% of them carry a file, written there before its row.
 *
 * Deterministic for the same database contents and seed. Memory stays bounded at any
 * fraction: selection happens in the server and the client works in batches.
 *
 * Throws USAGE for a fraction outside [0, 1] or a bad seed, NOT_FOUND when the store has no
 * messages, ABORTED when `signal` fires, STORAGE when a file cannot be written or removed,
 * DATABASE otherwise (nothing is changed in the database then).
 */
export async function applyChurn(url: string, options: ChurnOptions): Promise<ChurnResult> {
  const { removedKeys, result } = await churnInTransaction(url, options);
  if (options.filesDir !== undefined) await removeObjects(options.filesDir, removedKeys);
  return result;
}

async function churnInTransaction(
  url: string,
  options: ChurnOptions,
): Promise<{ removedKeys: string[]; result: ChurnResult }> {
  const { seed, signal } = options;
  for (const name of ['addFraction', 'editFraction', 'deleteFraction'] as const) {
    const f = options[name];
    if (!Number.isFinite(f) || f < 0 || f > 1) {
      throw new LetheError(
        ErrorCode.USAGE,
        `${name} must be a number from 0 to 1, got ${String(f)}`,
      );
    }
  }
  if (!Number.isSafeInteger(seed) || seed < 0) {
    throw new LetheError(
      ErrorCode.USAGE,
      `seed must be a non-negative integer, got ${String(seed)}`,
    );
  }
  const doing = 'applying churn to the reference chat store';
  return withClient(
    url,
    doing,
    (client) =>
      inTransaction(client, async () => {
        await client.query('LOCK TABLE public.messages IN SHARE ROW EXCLUSIVE MODE');
        const { rows } = await client.query<{
          n: string;
          max_id: string | null;
          end_ms: string | null;
        }>(
          `SELECT count(*)::text AS n, max(id)::text AS max_id,
                  floor(extract(epoch FROM max(created_at)) * 1000)::bigint::text AS end_ms
             FROM public.messages`,
        );
        const head = rows[0];
        if (head === undefined || head.max_id === null || head.end_ms === null) {
          throw new LetheError(
            ErrorCode.NOT_FOUND,
            'the chat store has no messages to churn: seed it first (`seedChatStore`)',
          );
        }
        const before = Number(head.n);
        const endMs = Number(head.end_ms);
        const window = { startMs: endMs - WINDOW_MS, endMs };
        const counts = {
          add: Math.round(options.addFraction * before),
          edit: Math.round(options.editFraction * before),
          delete: Math.round(options.deleteFraction * before),
        };

        // Everything is chosen from the store as it was before the churn, then applied.
        await client.query(`
          CREATE TEMP TABLE lethe_churn_deleted (id bigint PRIMARY KEY, created_at timestamptz NOT NULL) ON COMMIT DROP;
          CREATE TEMP TABLE lethe_churn_edited (id bigint PRIMARY KEY, created_at timestamptz NOT NULL) ON COMMIT DROP;
          CREATE TEMP TABLE lethe_churn_template (
            k integer PRIMARY KEY, conversation_id bigint NOT NULL, sender_id bigint NOT NULL, locale text NOT NULL
          ) ON COMMIT DROP`);
        await client.query(
          `INSERT INTO lethe_churn_deleted (id, created_at)
           SELECT m.id, m.created_at FROM public.messages m
            WHERE NOT EXISTS (SELECT 1 FROM public.messages r WHERE r.thread_root_id = m.id)
            ORDER BY md5($1::text || m.id::text), m.id
            LIMIT $2`,
          [`${seed}:delete:`, counts.delete],
        );
        await client.query(
          `INSERT INTO lethe_churn_edited (id, created_at)
           SELECT m.id, m.created_at FROM public.messages m
            WHERE NOT EXISTS (SELECT 1 FROM lethe_churn_deleted d WHERE d.id = m.id)
            ORDER BY md5($1::text || m.id::text), m.id
            LIMIT $2`,
          [`${seed}:edit:`, counts.edit],
        );
        // The window always holds the newest message, so there is at least one template.
        const templates = await client.query(
          `INSERT INTO lethe_churn_template (k, conversation_id, sender_id, locale)
           SELECT (row_number() OVER (ORDER BY md5($1::text || m.id::text), m.id) - 1)::integer,
                  m.conversation_id, m.sender_id, u.locale
             FROM public.messages m JOIN public.users u ON u.id = m.sender_id
            WHERE m.created_at >= $2
            ORDER BY md5($1::text || m.id::text), m.id
            LIMIT $3`,
          [`${seed}:add:`, new Date(window.startMs), Math.max(1, counts.add)],
        );
        throwIfAborted(signal, doing);

        const dependents = await deleteChosen(client);
        const edited = await editChosen(client, seed, window, signal, doing);
        const added = await addNewMessages(
          client,
          {
            seed,
            count: counts.add,
            firstId: BigInt(head.max_id) + 1n,
            templates: templates.rowCount ?? 0,
            window,
          },
          signal,
          doing,
        );
        const addedFiles =
          options.filesDir === undefined
            ? { files: 0, bytes: 0 }
            : await addFilesToNewMessages(client, {
                seed,
                afterMessageId: BigInt(head.max_id),
                dir: options.filesDir,
                signal,
                doing,
              });
        const result: ChurnResult = {
          messagesBefore: before,
          added,
          edited,
          deleted: dependents.messages,
          deletedDependents: {
            messageEdits: dependents.messageEdits,
            attachments: dependents.attachments,
            files: dependents.fileKeys.length,
          },
          addedFiles,
          oldestEdited: await oldestOf(client, 'lethe_churn_edited'),
          oldestDeleted: await oldestOf(client, 'lethe_churn_deleted'),
          window: { start: new Date(window.startMs), end: new Date(window.endMs) },
        };
        return { removedKeys: dependents.fileKeys, result };
      }),
    signal,
  );
}

/**
 * Deletes the chosen messages, their edit history, attachments and files first (foreign
 * keys). Returns the deleted files' object keys: as many as the deleted messages carried,
 * a bounded share of them.
 */
async function deleteChosen(
  client: pg.Client,
): Promise<{ messages: number; messageEdits: number; attachments: number; fileKeys: string[] }> {
  const edits = await client.query(
    'DELETE FROM public.message_edits e USING lethe_churn_deleted d WHERE e.message_id = d.id',
  );
  const attachments = await client.query(
    'DELETE FROM public.attachments a USING lethe_churn_deleted d WHERE a.message_id = d.id',
  );
  const files = await client.query<{ key: string }>(
    'DELETE FROM public.files f USING lethe_churn_deleted d WHERE f.message_id = d.id RETURNING f.object_key AS key',
  );
  const messages = await client.query(
    'DELETE FROM public.messages m USING lethe_churn_deleted d WHERE m.id = d.id',
  );
  return {
    messages: messages.rowCount ?? 0,
    messageEdits: edits.rowCount ?? 0,
    attachments: attachments.rowCount ?? 0,
    fileKeys: files.rows.map((r) => r.key),
  };
}

interface Window {
  readonly startMs: number;
  readonly endMs: number;
}

/** Edits the chosen messages in batches of {@link BATCH}, in id order. */
async function editChosen(
  client: pg.Client,
  seed: number,
  window: Window,
  signal: AbortSignal | undefined,
  doing: string,
): Promise<number> {
  const rng = new Prng(seed);
  let edited = 0;
  let after = '0';
  for (;;) {
    throwIfAborted(signal, doing);
    const { rows } = await client.query<{
      id: string;
      body: string;
      locale: string;
      created_ms: string;
    }>(
      `SELECT c.id::text AS id, m.body, u.locale,
              floor(extract(epoch FROM m.created_at) * 1000)::bigint::text AS created_ms
         FROM lethe_churn_edited c
         JOIN public.messages m ON m.id = c.id
         JOIN public.users u ON u.id = m.sender_id
        WHERE c.id > $1
        ORDER BY c.id
        LIMIT $2`,
      [after, BATCH],
    );
    const last = rows.at(-1);
    if (last === undefined) return edited;
    const ids: string[] = [];
    const bodies: string[] = [];
    const times: string[] = [];
    for (const row of rows) {
      rng.reseed(seed, Number(row.id), PURPOSE_EDIT);
      // The edit happens in the window, and after the message was written.
      const from = Math.max(window.startMs, Number(row.created_ms) + 1000);
      const at = from >= window.endMs ? from : from + rng.int(window.endMs - from);
      const fresh = messageBody(rng, languageOf(row.locale));
      ids.push(row.id);
      bodies.push(fresh === row.body ? `${fresh} (edited)` : fresh);
      times.push(String(at));
    }
    await client.query(
      `INSERT INTO public.message_edits (message_id, editor_id, previous_body, edited_at_ms)
       SELECT m.id, m.sender_id, m.body, v.at
         FROM unnest($1::bigint[], $2::bigint[]) AS v(id, at)
         JOIN public.messages m ON m.id = v.id
        ORDER BY m.id`,
      [ids, times],
    );
    const updated = await client.query(
      `UPDATE public.messages m SET body = v.body, edited = true
         FROM unnest($1::bigint[], $2::text[]) AS v(id, body)
        WHERE m.id = v.id`,
      [ids, bodies],
    );
    edited += updated.rowCount ?? 0;
    after = last.id;
  }
}

interface AddPlan {
  readonly seed: number;
  readonly count: number;
  readonly firstId: bigint;
  /** Rows in lethe_churn_template (k = 0 … templates − 1). */
  readonly templates: number;
  readonly window: Window;
}

/**
 * Appends `count` messages in batches: message i (0-based) gets id firstId + i, a
 * created_at in the i-th of `count` equal slices of the window (so ids follow time, as
 * in the seeded history), and the conversation and sender of template i mod templates.
 */
async function addNewMessages(
  client: pg.Client,
  plan: AddPlan,
  signal: AbortSignal | undefined,
  doing: string,
): Promise<number> {
  const { seed, count, firstId, templates, window } = plan;
  if (count === 0) return 0;
  const slice = (window.endMs - window.startMs) / count;
  const rng = new Prng(seed);
  let added = 0;
  for (let from = 0; from < count; from += BATCH) {
    throwIfAborted(signal, doing);
    const n = Math.min(BATCH, count - from);
    const keys = Array.from({ length: n }, (_, j) => (from + j) % templates);
    const { rows } = await client.query<{
      k: number;
      conversation: string;
      sender: string;
      locale: string;
    }>(
      `SELECT k, conversation_id::text AS conversation, sender_id::text AS sender, locale
         FROM lethe_churn_template WHERE k = ANY($1::integer[])`,
      [[...new Set(keys)]],
    );
    const byKey = new Map(rows.map((r) => [r.k, r]));
    const lines = function* (): Generator<string> {
      for (const [j, k] of keys.entries()) {
        const t = byKey.get(k);
        if (t === undefined) throw new RangeError(`churn template ${k} is missing`);
        const i = from + j;
        const id = firstId + BigInt(i);
        rng.reseed(seed, i, PURPOSE_ADD_TIME);
        const createdAtMs = Math.min(
          window.endMs,
          Math.floor(window.startMs + (i + rng.next()) * slice),
        );
        rng.reseed(seed, Number(id), PURPOSE_ADD_BODY);
        yield copyRow([
          id.toString(),
          t.conversation,
          t.sender,
          COPY_NULL,
          copyText(messageBody(rng, languageOf(t.locale))),
          copyTimestamp(createdAtMs),
          copyBool(false),
        ]);
      }
    };
    added += await copyRows(client, 'public.messages', COLUMNS.messages, lines(), { signal });
  }
  return added;
}

async function oldestOf(
  client: pg.Client,
  table: 'lethe_churn_edited' | 'lethe_churn_deleted',
): Promise<ChurnedMessage | null> {
  const { rows } = await client.query<{ id: string; created_at: Date }>(
    `SELECT id::text AS id, created_at FROM ${table} ORDER BY created_at, id LIMIT 1`,
  );
  const row = rows[0];
  return row === undefined ? null : { id: row.id, createdAt: row.created_at };
}
