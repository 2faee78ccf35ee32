import type pg from 'pg';
import { ErrorCode, LetheError } from '../errors/index.ts';
import { languageOf } from './corpus.ts';
import { copyRows } from './copy-load.ts';
import { addFilesToNewMessages } from './files.ts';
import { COPY_NULL, copyBool, copyRow, copyText, copyTimestamp } from './copy-text.ts';
import { inTransaction, withClient } from './pg-client.ts';
import { CumulativeTable, Prng, zipfWeights } from './random.ts';
import { REFERENCE_END } from './reference-schema.ts';
import { COLUMNS } from './rows.ts';
import { messageBody } from './text.ts';

/** New messages land in this window before `at`. */
const WINDOW_MS = 3 * 86_400_000;
/** Conversations count as active when they had a message this long before `at`. */
const ACTIVE_MS = 30 * 86_400_000;
const PURPOSE_ADD = 20;
const PURPOSE_ADD_BODY = 21;
const MAX_COUNT = 1_000_000;

export interface AddMessagesOptions {
  /** How many messages to append (1 … 1,000,000). */
  readonly count: number;
  readonly seed: number;
  /** End of the window the new messages fall in (the 3 days before it); default REFERENCE_END. */
  readonly at?: Date;
  /**
   * The chat store's object store (table `files`): when given, about 1% of the new messages
   * carry a file, whose bytes are written there. Without it, no file is added.
   */
  readonly filesDir?: string;
  readonly signal?: AbortSignal;
}

export interface AddedMessages {
  readonly messages: number;
  /** Files added with the messages, and their bytes (0 without `filesDir`). */
  readonly files: number;
  readonly fileBytes: number;
}

/**
 * Appends `count` messages to a seeded reference store, as a chat service would between
 * two backups: new ids after the current maximum, timestamps in the three days before `at`
 * (so only the latest month or two change), in conversations active in the 30 days before
 * `at` (any conversation if none is), each sent by a member. No existing row is modified.
 *
 * With `filesDir`, about 1% of the new messages also get a file from their sender: its bytes
 * are written to `filesDir` before its `files` row (see files.ts).
 *
 * Deterministic for the same database contents and seed; a second call with the same seed
 * appends different messages, since the current maximum id is part of the stream. One
 * transaction; the messages table is locked against concurrent writers meanwhile.
 *
 * Throws USAGE for a bad count, NOT_FOUND when the store has no conversation with members,
 * ABORTED when `signal` fires, STORAGE when a file cannot be written, DATABASE otherwise.
 */
export async function addMessages(
  url: string,
  options: AddMessagesOptions,
): Promise<AddedMessages> {
  const { count, seed, signal } = options;
  const atMs = (options.at ?? REFERENCE_END).getTime();
  if (!Number.isSafeInteger(count) || count < 1 || count > MAX_COUNT) {
    throw new LetheError(
      ErrorCode.USAGE,
      `count must be an integer from 1 to ${MAX_COUNT}, got ${String(count)}`,
    );
  }
  if (!Number.isSafeInteger(seed) || seed < 0 || !Number.isFinite(atMs)) {
    throw new LetheError(
      ErrorCode.USAGE,
      `seed must be a non-negative integer and at a valid date`,
    );
  }
  return withClient(
    url,
    'adding messages to the reference chat store',
    (client) =>
      inTransaction(client, async () => {
        await client.query('LOCK TABLE public.messages IN SHARE ROW EXCLUSIVE MODE');
        const maxRow = await client.query<{ max: string }>(
          'SELECT COALESCE(max(id), 0)::text AS max FROM public.messages',
        );
        const maxId = Number(maxRow.rows[0]?.max ?? 0);
        const candidates =
          (await activeConversations(client, atMs, true)) ??
          (await activeConversations(client, atMs, false));
        if (candidates === undefined) {
          throw new LetheError(
            ErrorCode.NOT_FOUND,
            'the store has no conversation with members: seed it first (`seedChatStore`)',
          );
        }
        const rng = new Prng(seed, maxId, PURPOSE_ADD);
        const bodyRng = new Prng(seed);
        const conversationZipf = new CumulativeTable(zipfWeights(candidates.length, 1.1));
        const times = Float64Array.from({ length: count }, () => atMs - rng.int(WINDOW_MS)).sort();
        const rows = function* (): Generator<string> {
          for (const [i, createdAtMs] of times.entries()) {
            const conversation = candidates[conversationZipf.sample(rng)];
            const k = rng.int(conversation?.members.length ?? 0);
            const sender = conversation?.members[k];
            if (conversation === undefined || sender === undefined)
              throw new RangeError('empty conversation');
            const id = maxId + i + 1;
            bodyRng.reseed(seed, id, PURPOSE_ADD_BODY);
            const body = messageBody(bodyRng, languageOf(conversation.locales[k] ?? 'en'));
            yield copyRow([
              String(id),
              conversation.id,
              sender,
              COPY_NULL,
              copyText(body),
              copyTimestamp(createdAtMs),
              copyBool(false),
            ]);
          }
        };
        const messages = await copyRows(client, 'public.messages', COLUMNS.messages, rows(), {
          signal,
        });
        if (options.filesDir === undefined) return { messages, files: 0, fileBytes: 0 };
        const added = await addFilesToNewMessages(client, {
          seed,
          afterMessageId: BigInt(maxId),
          dir: options.filesDir,
          signal,
          doing: 'adding files to the reference chat store',
        });
        return { messages, files: added.files, fileBytes: added.bytes };
      }),
    signal,
  );
}

interface Candidate {
  readonly id: string;
  readonly members: readonly string[];
  readonly locales: readonly string[];
}

async function activeConversations(
  client: pg.Client,
  atMs: number,
  recentOnly: boolean,
): Promise<Candidate[] | undefined> {
  const { rows } = await client.query<Candidate>(
    `SELECT c.id::text AS id, array_agg(u.id::text ORDER BY u.id) AS members, array_agg(u.locale ORDER BY u.id) AS locales
       FROM public.conversations c
       JOIN public.memberships mb ON mb.conversation_id = c.id
       JOIN public.users u ON u.id = mb.user_id
      WHERE c.created_at <= $1
        AND (NOT $3 OR EXISTS (SELECT 1 FROM public.messages m
                                WHERE m.conversation_id = c.id AND m.created_at > $2 AND m.created_at <= $1))
      GROUP BY c.id
      ORDER BY c.id`,
    [new Date(atMs), new Date(atMs - ACTIVE_MS), recentOnly],
  );
  return rows.length > 0 ? rows : undefined;
}
