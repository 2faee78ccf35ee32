import pg from 'pg';
import { REFERENCE_SCHEMA_SQL } from '../../../src/store/index.ts';
import { createTestDatabase } from '../../helpers/postgres.ts';
import type { TestDatabase } from '../../helpers/lethe-env.ts';

/**
 * A template database holding the reference chat schema with a handful of hand-written rows,
 * for tests that need a real backup of every table but not a seeded store's hundreds of
 * cells (one backup takes well under a second). Clone it with `createLetheEnv({ template })`.
 *
 * The rows the tests rely on: tenant 3 has users 21 and 22 and conversations 7 (group) and 8
 * (dm); user 21 wrote messages 9001–9003 in conversation 7 in January 2026 (bodies with a
 * tab, a newline, a backslash and non-ASCII text), so `messages/3/2026-01/21/7` is a cell
 * whose key needs all four dimension kinds (period, user, conversation, tenant) and holds
 * three rows; its tuple also has a message_edits and an attachments cell. Tenant 4 has one
 * user, one conversation and one message, so a backup makes two encapsulations.
 */
export const FOUR_DIMENSION_CELL = {
  id: 'messages/3/2026-01/21/7',
  tenant: '3',
  user: '21',
  conversation: '7',
  period: '2026-01',
  messageIds: ['9001', '9002', '9003'],
} as const;

/** The rows described in the module comment, for a store on a server of a test's own. */
export const ROWS_SQL = `
INSERT INTO public.tenants (id, slug, name, created_at) VALUES
  (3, 'acme', 'Acme', '2025-06-01 00:00:00+00'),
  (4, 'globex', 'Globex', '2025-06-01 00:00:00+00');
INSERT INTO public.users (id, tenant_id, handle, display_name, email, created_at) VALUES
  (21, 3, 'ada', 'Ada', 'ada@acme.example', '2025-06-02 00:00:00+00'),
  (22, 3, 'bob', 'Bob', 'bob@acme.example', '2025-06-02 00:00:00+00'),
  (31, 4, 'cy', 'Cy', 'cy@globex.example', '2025-06-02 00:00:00+00');
INSERT INTO public.conversations (id, tenant_id, kind, title, created_by, created_at) VALUES
  (7, 3, 'group', 'plans', 21, '2025-12-01 10:00:00+00'),
  (8, 3, 'dm', NULL, 22, '2025-12-02 10:00:00+00'),
  (9, 4, 'channel', 'general', 31, '2025-12-03 10:00:00+00');
INSERT INTO public.memberships (conversation_id, user_id, joined_at, role) VALUES
  (7, 21, '2025-12-01 10:00:00+00', 'owner'),
  (7, 22, '2025-12-01 10:05:00+00', 'member'),
  (8, 21, '2025-12-02 10:00:00+00', 'member'),
  (8, 22, '2025-12-02 10:00:00+00', 'owner'),
  (9, 31, '2025-12-03 10:00:00+00', 'owner');
INSERT INTO public.messages (id, conversation_id, sender_id, thread_root_id, body, created_at, edited) VALUES
  (9001, 7, 21, NULL, 'hello, world', '2026-01-05 09:30:00+00', true),
  (9002, 7, 21, 9001, E'see you\\ttomorrow\\nat 10', '2026-01-05 09:31:12+00', false),
  (9003, 7, 21, NULL, E'back\\\\slash and h\\u00e9llo \\U0001F30D', '2026-01-20 17:00:00+00', false),
  (9004, 7, 21, NULL, 'february', '2026-02-02 08:00:00+00', false),
  (9005, 7, 22, 9001, 'reply from bob', '2026-01-05 09:40:00+00', false),
  (9006, 8, 21, NULL, 'a direct message', '2026-01-06 12:00:00+00', false),
  (9007, 9, 31, NULL, 'globex news', '2026-01-07 12:00:00+00', false);
INSERT INTO public.message_edits (message_id, editor_id, previous_body, edited_at_ms) VALUES
  (9001, 21, 'helo, world', 1767605460000);
INSERT INTO public.attachments (id, tenant_id, message_id, uploader_id, filename, mime_type, content, created_at_ms) VALUES
  (1, 3, 9002, 21, 'plan.txt', 'text/plain', '\\x00ff10200a5c', 1767605472000);
`;

/** Creates the template database (see the module comment); drop it in afterAll. */
export async function createTinyChatTemplate(prefix: string): Promise<TestDatabase> {
  const db = await createTestDatabase(prefix);
  const client = new pg.Client({ connectionString: db.url });
  try {
    await client.connect();
    await client.query(REFERENCE_SCHEMA_SQL);
    await client.query(ROWS_SQL);
  } catch (err) {
    await client.end().catch(() => undefined);
    await db.drop();
    throw err;
  }
  await client.end();
  return db;
}
