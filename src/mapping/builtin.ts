import { parseMapping, type Mapping } from './schema.ts';

/**
 * The blob store the built-in mapping's `files` table points into: every config with
 * `mapping: builtin` needs `chatStore.blobStores.files` (the reference store's object store).
 */
export const BUILTIN_BLOB_STORE = 'files';

/**
 * The mapping of the reference chat store (src/store). Validated at load time and frozen.
 * Rows reach their tenant through joins where the table has no tenant column of its own:
 * memberships and messages via their conversation, message_edits and files via message →
 * conversation. A `files` row's bytes live in the chat service's object store, under the
 * row's object_key; they are backed up as the row's blob, with the row's keys.
 */
export const BUILTIN_MAPPING: Mapping = deepFreeze(
  parseMapping(
    {
      schema: 'public',
      tables: {
        tenants: { class: 'metadata', primaryKey: ['id'], tenant: 'id' },
        users: { class: 'profiles', primaryKey: ['id'], tenant: 'tenant_id', author: 'id' },
        conversations: {
          class: 'metadata',
          primaryKey: ['id'],
          tenant: 'tenant_id',
          conversation: 'id',
          timestamp: { column: 'created_at', type: 'timestamptz' },
        },
        memberships: {
          class: 'metadata',
          primaryKey: ['conversation_id', 'user_id'],
          joins: [{ table: 'conversations', as: 'c', on: { conversation_id: 'id' } }],
          tenant: 'c.tenant_id',
          author: 'user_id',
          conversation: 'conversation_id',
          timestamp: { column: 'joined_at', type: 'timestamptz' },
        },
        messages: {
          class: 'messages',
          primaryKey: ['id'],
          joins: [{ table: 'conversations', as: 'c', on: { conversation_id: 'id' } }],
          tenant: 'c.tenant_id',
          author: 'sender_id',
          conversation: 'conversation_id',
          timestamp: { column: 'created_at', type: 'timestamptz' },
        },
        message_edits: {
          class: 'messages',
          primaryKey: ['id'],
          joins: [
            { table: 'messages', as: 'm', on: { message_id: 'id' } },
            { table: 'conversations', as: 'c', from: 'm', on: { conversation_id: 'id' } },
          ],
          tenant: 'c.tenant_id',
          author: 'editor_id',
          conversation: 'm.conversation_id',
          timestamp: { column: 'edited_at_ms', type: 'epoch_ms' },
        },
        attachments: {
          class: 'attachments',
          primaryKey: ['id'],
          joins: [{ table: 'messages', as: 'm', on: { message_id: 'id' } }],
          tenant: 'tenant_id',
          author: 'uploader_id',
          conversation: 'm.conversation_id',
          timestamp: { column: 'created_at_ms', type: 'epoch_ms' },
        },
        files: {
          class: 'attachments',
          primaryKey: ['id'],
          joins: [
            { table: 'messages', as: 'm', on: { message_id: 'id' } },
            { table: 'conversations', as: 'c', from: 'm', on: { conversation_id: 'id' } },
          ],
          tenant: 'c.tenant_id',
          author: 'uploader_id',
          conversation: 'm.conversation_id',
          timestamp: { column: 'created_at_ms', type: 'epoch_ms' },
          blob: { column: 'object_key', store: BUILTIN_BLOB_STORE },
        },
      },
    },
    'built-in mapping',
  ),
);

function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null) {
    for (const child of Object.values(value)) deepFreeze(child);
    Object.freeze(value);
  }
  return value;
}
