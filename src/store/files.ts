import { mkdir, readdir, rm, unlink, writeFile } from 'node:fs/promises';
import { dirname, isAbsolute, join, resolve, sep } from 'node:path';
import type pg from 'pg';
import { ErrorCode, LetheError, throwIfAborted } from '../errors/index.ts';
import { randomContent, textContent } from './attachment-content.ts';
import { ATTACHMENT_STEMS, FILE_KINDS, LOCALES, languageOf } from './corpus.ts';
import { copyRows } from './copy-load.ts';
import { copyRow, copyText } from './copy-text.ts';
import { Prng } from './random.ts';
import type { ScaleParams } from './scale.ts';
import { messageBody } from './text.ts';
import { timeline } from './timeline.ts';
import type { World } from './world.ts';

/**
 * The reference store's files: uploads whose bytes a chat service keeps outside PostgreSQL,
 * in its own object store (here a directory), while a `files` row holds the object's key,
 * as Mattermost's FileInfo.Path does. Everything is derived from (seed, ids), so the same
 * seed writes the same bytes under the same keys.
 */

/** Columns of `public.files` the generator fills, in COPY order. */
export const FILE_COLUMNS = [
  'id',
  'message_id',
  'uploader_id',
  'object_key',
  'filename',
  'content_type',
  'byte_size',
  'created_at_ms',
] as const;

const PURPOSE_FILE = 13;
const PURPOSE_FILE_CONTENT = 14;
const PURPOSE_ADD_FILE = 33;
/** Share of seeded files that are a forwarded copy of an earlier upload (same bytes, own key). */
const FORWARD_RATE = 0.05;
/** Share of messages added by churn or addMessages that carry a file, and their sizes. */
export const ADDED_FILE_RATE = 0.01;
const ADDED_FILE_MIN_BYTES = 4 * 1024;
const ADDED_FILE_MAX_BYTES = 256 * 1024;
/** New messages read per round trip when files are added to them. */
const BATCH = 2_000;

/** One upload: its row, and the content id its bytes derive from. */
export interface PlannedFile {
  readonly id: number;
  readonly messageId: number;
  readonly uploaderId: number;
  readonly objectKey: string;
  readonly filename: string;
  readonly contentType: string;
  readonly byteSize: number;
  readonly createdAtMs: number;
  /** The bytes are those of content `contentId` (the file's own id unless it was forwarded). */
  readonly contentId: number;
  readonly minBytes: number;
  readonly maxBytes: number;
}

interface ContentShape {
  readonly ext: string;
  readonly contentType: string;
  readonly compressible: boolean;
  readonly size: number;
}

/** Kind and size of content `contentId`: a function of (seed, contentId, size range) alone. */
function contentShape(
  seed: number,
  contentId: number,
  minBytes: number,
  maxBytes: number,
): ContentShape {
  const rng = new Prng(seed, contentId, PURPOSE_FILE_CONTENT);
  const [ext, contentType, compressible] = rng.pick(FILE_KINDS);
  return { ext, contentType, compressible, size: rng.logUniform(minBytes, maxBytes) };
}

/**
 * The bytes of `file`: incompressible (keystream) for media and archives, repeated text of
 * the uploader's kind for text kinds. Deterministic; the buffer is the file's size.
 */
export function fileBytes(seed: number, file: PlannedFile): Buffer {
  const shape = contentShape(seed, file.contentId, file.minBytes, file.maxBytes);
  if (!shape.compressible) return randomContent(seed, file.contentId, shape.size, 'files');
  const rng = new Prng(seed, file.contentId, PURPOSE_FILE_CONTENT + 100);
  return textContent(messageBody(rng, languageOf(rng.pick(LOCALES))), shape.size);
}

/** `t<tenant>/<yyyy>/<mm>/<16 hex>/<id>.<ext>`: ASCII only, relative, no dot segments. */
function objectKey(
  rng: Prng,
  tenantId: number,
  createdAtMs: number,
  id: number,
  ext: string,
): string {
  const at = new Date(createdAtMs);
  const month = String(at.getUTCMonth() + 1).padStart(2, '0');
  const hex =
    rng.nextU32().toString(16).padStart(8, '0') + rng.nextU32().toString(16).padStart(8, '0');
  return `t${tenantId}/${at.getUTCFullYear()}/${month}/${hex}/${id}.${ext}`;
}

function plan(
  rng: Prng,
  seed: number,
  fields: { id: number; messageId: number; uploaderId: number; tenantId: number; sentAtMs: number },
  contentId: number,
  minBytes: number,
  maxBytes: number,
): PlannedFile {
  const shape = contentShape(seed, contentId, minBytes, maxBytes);
  // Uploaded up to a minute before the message was sent.
  const createdAtMs = fields.sentAtMs - rng.int(60_000);
  return {
    id: fields.id,
    messageId: fields.messageId,
    uploaderId: fields.uploaderId,
    objectKey: objectKey(rng, fields.tenantId, createdAtMs, fields.id, shape.ext),
    filename: `${rng.pick(ATTACHMENT_STEMS)}-${rng.range(1, 999)}.${shape.ext}`,
    contentType: shape.contentType,
    byteSize: shape.size,
    createdAtMs,
    contentId,
    minBytes,
    maxBytes,
  };
}

/**
 * The seeded store's files in id order: about `params.fileRate` of the messages carry one,
 * sent by the message's sender, sizes log-uniform in [fileMinBytes, fileMaxBytes]; some are
 * forwarded copies of an earlier upload. Replays the timeline; holds one file at a time.
 */
export function* seededFiles(
  world: World,
  params: ScaleParams,
  seed: number,
): Generator<PlannedFile> {
  const rng = new Prng(seed);
  let id = 0;
  for (const m of timeline(world, params, seed)) {
    rng.reseed(seed, m.id, PURPOSE_FILE);
    if (!rng.chance(params.fileRate)) continue;
    id++;
    const contentId = id > 1 && rng.chance(FORWARD_RATE) ? 1 + rng.int(id - 1) : id;
    yield plan(
      rng,
      seed,
      {
        id,
        messageId: m.id,
        uploaderId: m.sender.id,
        tenantId: m.conversation.tenantId,
        sentAtMs: m.createdAtMs,
      },
      contentId,
      params.fileMinBytes,
      params.fileMaxBytes,
    );
  }
}

/** The COPY-text row of `file` (columns {@link FILE_COLUMNS}). */
export function fileRow(file: PlannedFile): string {
  return copyRow([
    String(file.id),
    String(file.messageId),
    String(file.uploaderId),
    copyText(file.objectKey),
    copyText(file.filename),
    copyText(file.contentType),
    String(file.byteSize),
    String(file.createdAtMs),
  ]);
}

/**
 * Where `key` lives under `dir`. Keys come from the generator or from the store's rows:
 * throws USAGE for one that is absolute or would leave `dir`.
 */
export function objectPath(dir: string, key: string): string {
  const root = resolve(dir);
  const path = resolve(root, key);
  if (isAbsolute(key) || key.split('/').includes('..') || !path.startsWith(root + sep)) {
    throw new LetheError(
      ErrorCode.USAGE,
      `object key ${JSON.stringify(key)} is not a relative path inside ${root}`,
    );
  }
  return path;
}

/** Writes one object (creating its directories); throws FILESYSTEM naming the path. */
export async function writeObject(dir: string, key: string, bytes: Uint8Array): Promise<void> {
  const path = objectPath(dir, key);
  try {
    await mkdir(dirname(path), { recursive: true, mode: 0o755 });
    await writeFile(path, bytes, { mode: 0o644 });
  } catch (err) {
    throw new LetheError(
      ErrorCode.STORAGE,
      `cannot write the chat store's file ${path}: ${(err as Error).message}`,
      { cause: err },
    );
  }
}

/** Removes objects by key; one already gone is not an error. */
export async function removeObjects(dir: string, keys: Iterable<string>): Promise<void> {
  for (const key of keys) {
    try {
      await unlink(objectPath(dir, key));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
        throw new LetheError(
          ErrorCode.STORAGE,
          `cannot remove the chat store's file ${key} in ${dir}: ${(err as Error).message}`,
          { cause: err },
        );
      }
    }
  }
}

/**
 * Makes sure `dir` exists and is empty, as the seeder needs it; throws TARGET_NOT_EMPTY
 * naming it when it holds anything, FILESYSTEM when it cannot be created.
 */
export async function prepareEmptyDirectory(dir: string): Promise<void> {
  try {
    await mkdir(dir, { recursive: true, mode: 0o755 });
  } catch (err) {
    throw new LetheError(
      ErrorCode.STORAGE,
      `cannot create the chat store's file directory ${dir}: ${(err as Error).message}`,
      { cause: err },
    );
  }
  const entries = await readdir(dir);
  if (entries.length > 0) {
    throw new LetheError(
      ErrorCode.TARGET_NOT_EMPTY,
      `refusing to seed: the chat store's file directory ${dir} is not empty (${entries.slice(0, 3).join(', ')}${entries.length > 3 ? ', …' : ''}); give an empty or new directory`,
      { details: { dir } },
    );
  }
}

/** Empties `dir` (after a failed seed wrote into the directory it found empty). */
export async function emptyDirectory(dir: string): Promise<void> {
  for (const entry of await readdir(dir))
    await rm(join(dir, entry), { recursive: true, force: true });
}

export interface AddedFiles {
  readonly files: number;
  readonly bytes: number;
}

/**
 * Gives about {@link ADDED_FILE_RATE} of the messages with id > `afterMessageId` a file
 * from their sender: writes its bytes into `dir` first, then its `files` row (ids after the
 * current maximum), as a chat service stores the object before the row that points at it.
 * Runs on `client` inside the caller's transaction; reads the new messages in batches.
 * Which messages get one depends on (seed, message id) only.
 */
export async function addFilesToNewMessages(
  client: pg.Client,
  options: {
    seed: number;
    afterMessageId: bigint;
    dir: string;
    signal?: AbortSignal | undefined;
    doing: string;
  },
): Promise<AddedFiles> {
  const { seed, dir, signal, doing } = options;
  const maxRow = await client.query<{ max: string }>(
    'SELECT COALESCE(max(id), 0)::text AS max FROM public.files',
  );
  let nextId = Number(maxRow.rows[0]?.max ?? 0) + 1;
  const rng = new Prng(seed);
  let after = options.afterMessageId.toString();
  let files = 0;
  let bytes = 0;
  for (;;) {
    throwIfAborted(signal, doing);
    const { rows } = await client.query<{
      id: string;
      sender: string;
      tenant: string;
      sent_ms: string;
    }>(
      `SELECT m.id::text AS id, m.sender_id::text AS sender, c.tenant_id::text AS tenant,
              floor(extract(epoch FROM m.created_at) * 1000)::bigint::text AS sent_ms
         FROM public.messages m JOIN public.conversations c ON c.id = m.conversation_id
        WHERE m.id > $1::bigint ORDER BY m.id LIMIT $2`,
      [after, BATCH],
    );
    const last = rows.at(-1);
    if (last === undefined) return { files, bytes };
    after = last.id;
    const planned: PlannedFile[] = [];
    for (const row of rows) {
      rng.reseed(seed, Number(row.id), PURPOSE_ADD_FILE);
      if (!rng.chance(ADDED_FILE_RATE)) continue;
      const id = nextId++;
      planned.push(
        plan(
          rng,
          seed,
          {
            id,
            messageId: Number(row.id),
            uploaderId: Number(row.sender),
            tenantId: Number(row.tenant),
            sentAtMs: Number(row.sent_ms),
          },
          id,
          ADDED_FILE_MIN_BYTES,
          ADDED_FILE_MAX_BYTES,
        ),
      );
    }
    for (const file of planned) {
      throwIfAborted(signal, doing);
      await writeObject(dir, file.objectKey, fileBytes(seed, file));
      bytes += file.byteSize;
    }
    files += await copyRows(client, 'public.files', FILE_COLUMNS, planned.map(fileRow), { signal });
  }
}
