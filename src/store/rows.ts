import { ATTACHMENT_KINDS, ATTACHMENT_STEMS } from './corpus.ts';
import { randomContent, textContent } from './attachment-content.ts';
import {
  COPY_NULL,
  copyBool,
  copyBytea,
  copyNullableText,
  copyRow,
  copyText,
  copyTimestamp,
} from './copy-text.ts';
import { FILE_COLUMNS } from './files.ts';
import { Prng } from './random.ts';
import { REFERENCE_END } from './reference-schema.ts';
import type { ScaleParams } from './scale.ts';
import { messageBody, previousBody } from './text.ts';
import { timeline, type MessageSkeleton } from './timeline.ts';
import type { World } from './world.ts';

/**
 * COPY-text row emitters for each reference table, with the column lists they fill. Every
 * emitter is a lazy generator: rows are produced as COPY pulls them.
 */
export const COLUMNS = {
  tenants: ['id', 'slug', 'name', 'created_at'],
  users: ['id', 'tenant_id', 'handle', 'display_name', 'email', 'locale', 'created_at'],
  conversations: ['id', 'tenant_id', 'kind', 'title', 'created_by', 'created_at'],
  memberships: ['conversation_id', 'user_id', 'joined_at', 'role'],
  messages: [
    'id',
    'conversation_id',
    'sender_id',
    'thread_root_id',
    'body',
    'created_at',
    'edited',
  ],
  message_edits: ['id', 'message_id', 'editor_id', 'previous_body', 'edited_at_ms'],
  attachments: [
    'id',
    'tenant_id',
    'message_id',
    'uploader_id',
    'filename',
    'mime_type',
    'content',
    'created_at_ms',
  ],
  files: FILE_COLUMNS,
} as const;

const PURPOSE_BODY = 10;
const PURPOSE_EDIT = 11;
const PURPOSE_ATTACHMENT = 12;
const MIN_ATTACHMENT_BYTES = 2048;

export function* tenantRows(world: World): Generator<string> {
  for (const t of world.tenants) {
    yield copyRow([String(t.id), copyText(t.slug), copyText(t.name), copyTimestamp(t.createdAtMs)]);
  }
}

export function* userRows(world: World): Generator<string> {
  for (const u of world.users) {
    yield copyRow([
      String(u.id),
      String(u.tenantId),
      copyText(u.handle),
      copyText(u.displayName),
      copyText(u.email),
      copyText(u.locale),
      copyTimestamp(u.createdAtMs),
    ]);
  }
}

export function* conversationRows(world: World): Generator<string> {
  for (const c of world.conversations) {
    yield copyRow([
      String(c.id),
      String(c.tenantId),
      c.kind,
      copyNullableText(c.title),
      c.createdBy === null ? COPY_NULL : String(c.createdBy),
      copyTimestamp(c.createdAtMs),
    ]);
  }
}

export function* membershipRows(world: World): Generator<string> {
  for (const c of world.conversations) {
    for (const [i, user] of c.members.entries()) {
      const role =
        user.id === c.createdBy ? 'owner' : c.kind === 'channel' && i < 3 ? 'admin' : 'member';
      yield copyRow([String(c.id), String(user.id), copyTimestamp(c.createdAtMs + i * 1000), role]);
    }
  }
}

/** The body of a message, derived from (seed, id) alone so edits can recompute it. */
function bodyOf(rng: Prng, seed: number, m: MessageSkeleton): string {
  rng.reseed(seed, m.id, PURPOSE_BODY);
  // Attachment-only messages are common: many carry an empty body.
  if (m.attachment && rng.chance(0.4)) return '';
  return messageBody(rng, m.sender.language);
}

export function* messageRows(world: World, params: ScaleParams, seed: number): Generator<string> {
  const rng = new Prng(seed);
  for (const m of timeline(world, params, seed)) {
    yield copyRow([
      String(m.id),
      String(m.conversation.id),
      String(m.sender.id),
      m.threadRootId === 0 ? COPY_NULL : String(m.threadRootId),
      copyText(bodyOf(rng, seed, m)),
      copyTimestamp(m.createdAtMs),
      copyBool(m.edits > 0),
    ]);
  }
}

export function* editRows(world: World, params: ScaleParams, seed: number): Generator<string> {
  const bodyRng = new Prng(seed);
  const rng = new Prng(seed);
  const end = REFERENCE_END.getTime();
  let id = 0;
  for (const m of timeline(world, params, seed)) {
    if (m.edits === 0) continue;
    const body = bodyOf(bodyRng, seed, m);
    rng.reseed(seed, m.id, PURPOSE_EDIT);
    let at = m.createdAtMs;
    for (let k = 0; k < m.edits; k++) {
      // Edits come seconds to two days later; some cross into the next month.
      at = Math.min(end, at + rng.logUniform(5_000, 2 * 86_400_000));
      id++;
      yield copyRow([
        String(id),
        String(m.id),
        String(m.sender.id),
        copyText(previousBody(rng, body, m.sender.language)),
        String(at),
      ]);
    }
  }
}

export function* attachmentRows(
  world: World,
  params: ScaleParams,
  seed: number,
): Generator<string> {
  const rng = new Prng(seed);
  let id = 0;
  for (const m of timeline(world, params, seed)) {
    if (!m.attachment) continue;
    id++;
    rng.reseed(seed, m.id, PURPOSE_ATTACHMENT);
    const [ext, mime] = rng.pick(ATTACHMENT_KINDS);
    const size = rng.logUniform(MIN_ATTACHMENT_BYTES, params.attachmentMaxBytes);
    const content =
      ext === 'txt'
        ? textContent(messageBody(rng, m.sender.language), size)
        : randomContent(seed, id, size);
    yield copyRow([
      String(id),
      String(m.conversation.tenantId),
      String(m.id),
      String(m.sender.id),
      copyText(`${rng.pick(ATTACHMENT_STEMS)}-${rng.range(1, 999)}.${ext}`),
      copyText(mime),
      copyBytea(content),
      // Uploaded up to a minute before the message was sent.
      String(m.createdAtMs - rng.int(60_000)),
    ]);
  }
}
