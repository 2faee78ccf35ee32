import type pg from 'pg';

/**
 * Why the role a restore or verify connects as has more power than restoring needs, one
 * sentence each; empty when it is an ordinary role. A restore creates tables and loads rows:
 * a role that owns the target database (or schema) needs nothing more. A superuser, or a
 * member of the roles that run programs or touch server files, turns any SQL that reached
 * the server into code execution on the database host, so lethe says so loudly
 * (docs/architecture.md, "Threat model"; runbooks/restore-role.md shows the role to use).
 */
export async function excessPrivileges(client: pg.Client): Promise<string[]> {
  const { rows } = await client.query<{ superuser: boolean; roles: string[] }>(
    `SELECT r.rolsuper AS superuser,
            ARRAY(SELECT g FROM unnest(ARRAY['pg_execute_server_program', 'pg_write_server_files', 'pg_read_server_files']) AS g
                   WHERE pg_has_role(current_user, g, 'MEMBER')) AS roles
       FROM pg_roles r WHERE r.rolname = current_user`,
  );
  const row = rows[0];
  if (row === undefined) return [];
  const out: string[] = [];
  if (row.superuser) out.push('it connects as a superuser, which can run programs and read or write any file on the database server');
  else if (row.roles.length > 0) out.push(`its role is a member of ${row.roles.join(', ')}, which lets SQL reach the database server's files or programs`);
  return out;
}
