import { restore } from '../../../src/jobs/tasks.ts';
import { tableContents, type LetheEnv, type TableContent } from '../../helpers/lethe-env.ts';

/**
 * Row filters (alias `t`) selecting the rows a chat-store user authored, by the store's own
 * columns (not lethe's mapping): what an erasure of that user must remove.
 */
export function byUser(table: string, user: string): string {
  const u = `'${user.replaceAll("'", "''")}'::bigint`;
  switch (table) {
    case 'users':
      return `t.id = ${u}`;
    case 'memberships':
      return `t.user_id = ${u}`;
    case 'messages':
      return `t.sender_id = ${u}`;
    case 'message_edits':
      return `t.editor_id = ${u}`;
    case 'attachments':
    case 'files':
      return `t.uploader_id = ${u}`;
    case 'tenants':
    case 'conversations':
      return 'false';
    default:
      throw new Error(`no user filter for table ${table}`);
  }
}

export function notByUser(table: string, user: string): string {
  return `NOT (${byUser(table, user)})`;
}

/** Restores `snapshot` into a new database of the environment; returns its URL. */
export async function restoreToNewDatabase(env: LetheEnv, snapshot: string, prefix = 'lc_restore'): Promise<string> {
  const db = await env.database(prefix);
  await restore(env.rt, { snapshot, targetUrl: db.url, replace: false, blobTarget: env.blobTarget(), actor: 'test' });
  return db.url;
}

/** Contents of `url`'s tables with `where` applied (see tableContents). */
export function contents(url: string, where?: (table: string) => string): Promise<Record<string, TableContent>> {
  return tableContents(url, where === undefined ? {} : { where });
}
