import pg from 'pg';

/** Primary key order of each reference table, for stable content hashes. */
export const ORDER_BY: Readonly<Record<string, string>> = {
  tenants: 'id',
  users: 'id',
  conversations: 'id',
  memberships: 'conversation_id, user_id',
  messages: 'id',
  message_edits: 'id',
  attachments: 'id',
  files: 'id',
};

/** Runs `fn` with a connected client on `url`. */
export async function withDb<T>(url: string, fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

/** md5 over every row's text form, in primary-key order (`where` filters rows). */
export async function tableHash(
  client: pg.Client,
  table: string,
  where = 'true',
  schema = 'public',
): Promise<string> {
  const order = ORDER_BY[table] ?? 'id';
  const { rows } = await client.query<{ h: string | null }>(
    `SELECT md5(string_agg(md5(t::text), ',' ORDER BY ${order})) AS h FROM ${schema}.${table} t WHERE ${where}`,
  );
  return rows[0]?.h ?? '';
}

/** A single value from a query. */
export async function scalar<T>(
  client: pg.Client,
  sql: string,
  params: unknown[] = [],
): Promise<T> {
  const { rows } = await client.query<{ v: T }>(sql, params);
  const row = rows[0];
  if (row === undefined) throw new Error(`no row from ${sql}`);
  return row.v;
}
