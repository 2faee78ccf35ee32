import pg from 'pg';
import { ErrorCode, LetheError, wrapForeign } from '../errors/index.ts';
import { pgClientConfig } from '../tls/index.ts';
import {
  VAULT_FUNCTIONS,
  VAULT_GRANTS,
  VAULT_JOB_ROLES,
  VAULT_ROLE_PURPOSE,
  VAULT_ROLES,
  grantRuleViolations,
  type Access,
  type VaultJobRole,
  type VaultObject,
  type VaultRole,
} from './role-grants.ts';
import { checkSchemaName, lockKeyText } from './schema-name.ts';
import { isScramVerifier, scramSha256Verifier, scramVerifierAccepts } from './scram.ts';

/**
 * `lethe init --roles`: per-job PostgreSQL roles in the vault database, with exactly the
 * privileges of the grant table (role-grants.ts). One generator makes the SQL; `--print-sql`
 * prints it for a DBA and {@link applyVaultRoles} runs the very same statements, in one
 * transaction. Every statement is idempotent: running it again changes nothing, and after a
 * migration it owns and grants the new tables.
 */

/** Role names are `<prefix>_<role>`: lower-case, so psql and the catalogs agree on the spelling. */
const PREFIX = /^[a-z_][a-z0-9_]*$/;
/** PostgreSQL truncates identifiers past 63 bytes; the longest suffix is `_lifecycle`. */
const MAX_PREFIX = 63 - '_lifecycle'.length;

/** The dollar-quote tag of every DO block (no statement body contains it). */
const TAG = '$lethe$';

export interface VaultRolesOptions {
  /** The vault schema (checked). */
  readonly schema: string;
  /** Role names are `<prefix>_<role>`; default: the schema name (`lethe_backup` for `lethe`). */
  readonly prefix?: string;
  /**
   * Roles may log in: new roles are created LOGIN and existing ones get LOGIN. Without it new
   * roles are NOLOGIN (grant them to login roles you manage) and existing ones keep theirs.
   */
  readonly login?: boolean;
}

/**
 * Returns `prefix` when it makes valid role names; otherwise throws USAGE naming the rule.
 * It is spliced into SQL as an identifier, so this check is what keeps that safe.
 */
export function checkRolePrefix(prefix: string): string {
  if (!PREFIX.test(prefix) || prefix.length > MAX_PREFIX) {
    throw new LetheError(
      ErrorCode.USAGE,
      `role prefix ${JSON.stringify(prefix)} is not allowed: use lower-case letters, digits and underscores, ` +
        `starting with a letter or underscore, at most ${MAX_PREFIX} characters (roles are named <prefix>_backup …)`,
    );
  }
  return prefix;
}

/** The role name of each vault role for these options. */
export function vaultRoleNames(options: Pick<VaultRolesOptions, 'schema' | 'prefix'>): Readonly<Record<VaultRole, string>> {
  const prefix = checkRolePrefix(options.prefix ?? checkSchemaName(options.schema));
  return Object.fromEntries(VAULT_ROLES.map((r) => [r, `${prefix}_${r}`])) as Record<VaultRole, string>;
}

/** `"name"`: every name here was checked to be a plain lower-case identifier. */
function q(name: string): string {
  return `"${name}"`;
}

/** A SQL string literal of a checked name (no quotes inside). */
function lit(text: string): string {
  return `'${text.replaceAll("'", "''")}'`;
}

function doBlock(body: readonly string[], declare?: string): string {
  return [`DO ${TAG}`, ...(declare === undefined ? [] : [`DECLARE ${declare};`]), 'BEGIN', ...body.map((l) => `  ${l}`), 'END', `${TAG};`].join('\n');
}

/** `text` as SQL comment lines, long lines wrapped at word boundaries near 100 columns. */
function comment(text: string): string {
  const lines: string[] = [];
  for (const paragraph of text.split('\n')) {
    if (paragraph.length <= 97) {
      lines.push(paragraph);
      continue;
    }
    let line = '';
    for (const word of paragraph.split(' ')) {
      if (line !== '' && line.length + word.length + 1 > 97) {
        lines.push(line);
        line = `  ${word}`;
      } else {
        line = line === '' ? word : `${line} ${word}`;
      }
    }
    lines.push(line);
  }
  return lines.map((l) => (l === '' ? '--' : `-- ${l}`)).join('\n');
}

/** `SELECT (a, b), INSERT` … for one role's access (empty when none). */
function privilegeList(access: Access | undefined): string[] {
  if (access === undefined) return [];
  const one = (name: string, columns: Access['select']): string[] =>
    columns === undefined ? [] : columns === 'all' ? [name] : [`${name} (${columns.join(', ')})`];
  return [
    ...one('SELECT', access.select),
    ...one('INSERT', access.insert),
    ...one('UPDATE', access.update),
    ...(access.delete === true ? ['DELETE'] : []),
  ];
}

/** The statements for one table or view: ownership, revocation, grants, sequences, policies. */
function objectBlock(
  schema: string,
  prefix: string,
  name: string,
  object: VaultObject,
  roles: Readonly<Record<VaultRole, string>>,
): string {
  const rel = `${q(schema)}.${q(name)}`;
  const owner = object.ownedBy === 'lifecycle' ? roles.lifecycle : roles.owner;
  // Revoke from everyone but the owner (an owner's own rights must not be revoked), then
  // grant exactly the table's rows: what some earlier version or a hand granted goes.
  const others = [roles.owner, ...VAULT_JOB_ROLES.map((r) => roles[r]), roles.daemon].filter((r) => r !== owner).map(q);
  const body: string[] = [
    `IF to_regclass(${lit(rel)}) IS NULL THEN`,
    `  RAISE NOTICE 'lethe: % is not in this vault yet (migration ${object.since}): no grants', ${lit(rel)};`,
    '  RETURN;',
    'END IF;',
    // ALTER TABLE also takes a view (snapshot_cells was a table before migration 6).
    `ALTER TABLE ${rel} OWNER TO ${q(owner)};`,
    `REVOKE ALL ON TABLE ${rel} FROM PUBLIC, ${others.join(', ')};`,
  ];
  // Columns a later migration added to the table are granted only once they exist, so an
  // older vault still gets the rest.
  const later = object.columnsSince ?? {};
  const withoutLater = (columns: Access['select']): Access['select'] =>
    columns === undefined || columns === 'all' ? columns : columns.filter((c) => !(c in later));
  for (const role of VAULT_JOB_ROLES) {
    if (roles[role] === owner) continue;
    const access = object.access[role];
    const base: Access | undefined =
      access === undefined
        ? undefined
        : {
            ...(access.select === undefined ? {} : { select: withoutLater(access.select) ?? 'all' }),
            ...(access.insert === undefined ? {} : { insert: withoutLater(access.insert) ?? 'all' }),
            ...(access.update === undefined ? {} : { update: withoutLater(access.update) ?? 'all' }),
            ...(access.delete === true ? { delete: true as const } : {}),
          };
    const privileges = privilegeList(base);
    if (privileges.length > 0) body.push(`GRANT ${privileges.join(', ')} ON TABLE ${rel} TO ${q(roles[role])};`);
    for (const column of Object.keys(later)) {
      const kinds = (['select', 'insert', 'update'] as const).filter((k) => {
        const cols = access?.[k];
        return cols !== undefined && cols !== 'all' && cols.includes(column);
      });
      if (kinds.length === 0) continue;
      body.push(
        `IF EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass(${lit(rel)}) AND attname = ${lit(column)} AND NOT attisdropped) THEN`,
        `  GRANT ${kinds.map((k) => `${k.toUpperCase()} (${q(column)})`).join(', ')} ON TABLE ${rel} TO ${q(roles[role])};`,
        'END IF;',
      );
    }
  }
  for (const [sequence, users] of Object.entries(object.sequences ?? {})) {
    const seq = `${q(schema)}.${q(sequence)}`;
    const grantees = users.filter((r) => roles[r] !== owner).map((r) => q(roles[r]));
    body.push(
      `IF to_regclass(${lit(seq)}) IS NOT NULL THEN`,
      `  REVOKE ALL ON SEQUENCE ${seq} FROM PUBLIC, ${others.join(', ')};`,
      ...(grantees.length > 0 ? [`  GRANT USAGE ON SEQUENCE ${seq} TO ${grantees.join(', ')};`] : []),
      'END IF;',
    );
  }
  if (object.policies !== undefined) {
    body.push(`ALTER TABLE ${rel} ENABLE ROW LEVEL SECURITY;`);
    for (const p of object.policies) {
      const policy = q(`${prefix}_${p.name}`);
      body.push(
        `DROP POLICY IF EXISTS ${policy} ON ${rel};`,
        `CREATE POLICY ${policy} ON ${rel} FOR ${p.command} TO ${p.roles.map((r) => q(roles[r])).join(', ')}` +
          `${p.using === undefined ? '' : ` USING (${p.using})`}${p.check === undefined ? '' : ` WITH CHECK (${p.check})`};`,
      );
    }
  }
  const what = `${name} (${object.kind}, vault migration ${object.since}${object.class === 'record' ? '' : `, ${object.class} table`})`;
  return `${comment(`${what}: ${object.why}`)}\n${doBlock(body)}`;
}

/**
 * The SQL of `lethe init --roles`, as a list of statements (each may be a DO block), for the
 * vault schema and role names of `options`. Run them in one transaction as a superuser, or
 * as a role with CREATEROLE that owns the vault schema's objects. Throws USAGE for a bad
 * prefix, CONFIG_INVALID for a bad schema name, INTERNAL when the grant table breaks one of
 * its own rules.
 */
export function vaultRolesStatements(options: VaultRolesOptions): string[] {
  const schema = checkSchemaName(options.schema);
  const prefix = checkRolePrefix(options.prefix ?? schema);
  const roles = vaultRoleNames(options);
  const broken = grantRuleViolations();
  if (broken.length > 0) throw new LetheError(ErrorCode.INTERNAL, `the vault grant table breaks its rules: ${broken.join('; ')}`);
  const all = VAULT_ROLES.map((r) => roles[r]);
  const jobs = VAULT_JOB_ROLES.map((r) => q(roles[r]));
  const login = options.login === true;
  const out: string[] = [];

  out.push(
    `${comment('One run at a time, and never during `lethe init` migrating this schema.')}\n` +
      `SELECT pg_advisory_xact_lock(hashtextextended(${lit(lockKeyText(schema, 'migrate'))}, 0));`,
  );
  out.push(
    doBlock([
      `IF to_regclass(${lit(`${q(schema)}.migrations`)}) IS NULL THEN`,
      `  RAISE EXCEPTION 'no lethe vault in schema "${schema}" of database %: run \`lethe init\` first', current_database();`,
      'END IF;',
    ]),
  );

  // Roles: created when missing. NOLOGIN unless --login.
  out.push(
    `${comment(`The roles (cluster-wide). ${login ? 'LOGIN: set each password (see below).' : 'NOLOGIN: grant them to the login roles you manage.'}`)}\n` +
      doBlock(
        all.flatMap((name) => [
          `IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = ${lit(name)}) THEN`,
          `  CREATE ROLE ${q(name)} ${login ? 'LOGIN' : 'NOLOGIN'};`,
          ...(login ? ['ELSE', `  ALTER ROLE ${q(name)} LOGIN;`] : []),
          'END IF;',
        ]),
      ),
  );
  // A role that can bypass grants would make all of this a pretence: refuse rather than
  // silently take away what someone gave it on purpose.
  const jobPairs = (['backup', 'verify'] as const).flatMap((r) =>
    (['owner', 'lifecycle'] as const).map((above) => [roles[r], roles[above]] as const),
  );
  out.push(
    doBlock(
      [
        `SELECT string_agg(rolname, ', ' ORDER BY rolname) INTO bad FROM pg_catalog.pg_roles`,
        `  WHERE rolname IN (${all.map(lit).join(', ')})`,
        '    AND (rolsuper OR rolcreaterole OR rolcreatedb OR rolreplication OR rolbypassrls);',
        'IF bad IS NOT NULL THEN',
        "  RAISE EXCEPTION 'role(s) % have SUPERUSER, CREATEROLE, CREATEDB, REPLICATION or BYPASSRLS, which voids every grant: " +
          "run ALTER ROLE … NOSUPERUSER NOCREATEROLE NOCREATEDB NOREPLICATION NOBYPASSRLS, or choose another --role-prefix', bad;",
        'END IF;',
        ...[...jobPairs, [roles.lifecycle, roles.owner] as const].flatMap(([member, of]) => [
          `IF pg_has_role(${lit(member)}, ${lit(of)}, 'USAGE') THEN`,
          `  RAISE EXCEPTION 'role ${member} has the privileges of ${of} (a membership): revoke it (REVOKE ${of} FROM ${member}), or every grant here is void';`,
          'END IF;',
        ]),
      ],
      'bad text',
    ),
  );
  out.push(
    VAULT_ROLES.map(
      (r) => `COMMENT ON ROLE ${q(roles[r])} IS ${lit(`lethe vault role for schema ${schema}: ${VAULT_ROLE_PURPOSE[r].replaceAll('`', '')}`)};`,
    ).join('\n'),
  );
  out.push(
    `${comment('The owner may alter the tables lifecycle owns (migrations); the daemon runs every job.')}\n` +
      `GRANT ${q(roles.lifecycle)} TO ${q(roles.owner)};\n` +
      `GRANT ${jobs.join(', ')} TO ${q(roles.daemon)};`,
  );
  out.push(
    `${comment('Whoever runs this (and so `lethe init`) acts as the owner; a superuser already does.')}\n` +
      doBlock([
        `IF NOT pg_has_role(current_user, ${lit(roles.owner)}, 'MEMBER') THEN`,
        `  EXECUTE format('GRANT %I TO %I', ${lit(roles.owner)}, current_user);`,
        'END IF;',
      ]),
  );
  out.push(
    doBlock([
      `EXECUTE format('GRANT CONNECT ON DATABASE %I TO ${all.map(q).join(', ')}', current_database());`,
    ]),
  );
  const schemaRef = q(schema);
  out.push(
    `${comment('The schema: owned by the owner role; the job roles may only use what is granted in it.')}\n` +
      `ALTER SCHEMA ${schemaRef} OWNER TO ${q(roles.owner)};\n` +
      `REVOKE ALL ON SCHEMA ${schemaRef} FROM PUBLIC, ${[...jobs, q(roles.daemon)].join(', ')};\n` +
      // ALTER … OWNER TO needs the new owner to have CREATE on the schema (unless a superuser
      // runs it); lifecycle gets it only for the length of this transaction.
      `GRANT CREATE ON SCHEMA ${schemaRef} TO ${q(roles.lifecycle)};`,
  );
  for (const [name, object] of Object.entries(VAULT_GRANTS)) out.push(objectBlock(schema, prefix, name, object, roles));
  out.push(
    `REVOKE CREATE ON SCHEMA ${schemaRef} FROM ${q(roles.lifecycle)};\n` +
      `GRANT USAGE ON SCHEMA ${schemaRef} TO ${jobs.join(', ')};`,
  );
  for (const fn of VAULT_FUNCTIONS) {
    const ref = `${schemaRef}.${fn.signature}`;
    out.push(
      `${comment(`${fn.signature} (function, vault migration ${fn.since}): ${fn.why}`)}\n` +
        doBlock([
          `IF to_regprocedure(${lit(ref)}) IS NULL THEN RETURN; END IF;`,
          `ALTER FUNCTION ${ref} OWNER TO ${q(roles.owner)};`,
          `REVOKE ALL ON FUNCTION ${ref} FROM PUBLIC, ${[...jobs, q(roles.daemon)].join(', ')};`,
        ]),
    );
  }
  // lifecycle reads what the server keeps of destroyed keys (WAL archiving, replicas, slots)
  // and waits for other sessions' old snapshots before VACUUM FULL: both need pg_monitor.
  out.push(
    doBlock([
      `GRANT pg_monitor TO ${q(roles.lifecycle)};`,
      'EXCEPTION WHEN insufficient_privilege THEN',
      `  RAISE WARNING 'lethe: could not GRANT pg_monitor TO ${roles.lifecycle} (%): lifecycle cannot see other sessions'' snapshots or the WAL archive settings; a superuser can grant it', SQLERRM;`,
    ]),
  );
  return out;
}

/**
 * The SQL of {@link vaultRolesStatements} as one script for `psql` (`--print-sql`), in one
 * transaction, with instructions for passwords when the roles log in.
 */
export function vaultRolesScript(options: VaultRolesOptions): string {
  const roles = vaultRoleNames(options);
  const head = [
    `lethe vault roles for schema "${options.schema}": generated by \`lethe init --roles --print-sql\`.`,
    'Run it with psql, connected to the vault database as a superuser (or as a role with CREATEROLE',
    "that can act as the vault schema's owner), after `lethe init`, and again after every lethe",
    'upgrade. Idempotent: a second run changes nothing.',
    '',
    ...VAULT_ROLES.map((r) => `${roles[r].padEnd(20)} ${VAULT_ROLE_PURPOSE[r].replaceAll('`', '')}`),
  ];
  const tail =
    options.login === true
      ? [
          'The roles can log in; set each password without putting it on a command line, e.g. in psql:',
          ...VAULT_ROLES.map((r) => `  \\password ${roles[r]}`),
          '(psql sends a SCRAM verifier, never the password), or run `lethe init --roles --login --password-dir DIR`.',
        ]
      : [
          'The roles are NOLOGIN: grant each to the login role a job connects as, e.g.',
          `  GRANT ${roles.backup} TO backup_service;`,
        ];
  return [
    comment(head.join('\n')),
    '',
    'BEGIN;',
    '',
    vaultRolesStatements(options).join('\n\n'),
    '',
    'COMMIT;',
    '',
    comment(tail.join('\n')),
    '',
  ].join('\n');
}

/** What {@link applyVaultRoles} did to one role. */
export interface AppliedRole {
  readonly role: VaultRole;
  readonly name: string;
  readonly created: boolean;
  readonly login: boolean;
  /** `set` (changed now), `unchanged` (the given password already worked), `none` (no password given). */
  readonly password: 'set' | 'unchanged' | 'none';
}

export interface VaultRolesResult {
  readonly schema: string;
  readonly roles: readonly AppliedRole[];
  /** False when the run changed no role, membership, owner, grant or policy (passwords apart). */
  readonly changed: boolean;
  /** Vault tables and views granted per the grant table. */
  readonly objects: readonly string[];
  /** Tables of the grant table this vault does not have (yet). */
  readonly absent: readonly string[];
  /** Tables and views in the schema the grant table does not know: no job role may touch them. */
  readonly unknown: readonly string[];
  /** What PostgreSQL warned about (e.g. pg_monitor could not be granted). */
  readonly warnings: readonly string[];
}

/** Everything the roles script decides, as text, to tell whether a run changed anything. */
const STATE_SQL = `
SELECT md5(coalesce(string_agg(x, E'\\n' ORDER BY x), '')) AS state FROM (
  SELECT format('role %s login=%s super=%s inherit=%s createrole=%s createdb=%s replication=%s bypassrls=%s comment=%s',
                r.rolname, r.rolcanlogin, r.rolsuper, r.rolinherit, r.rolcreaterole, r.rolcreatedb, r.rolreplication,
                r.rolbypassrls, shobj_description(r.oid, 'pg_authid')) AS x
    FROM pg_catalog.pg_roles r WHERE r.rolname = ANY($1::text[])
  UNION ALL
  SELECT format('member %s of %s admin=%s', m.member::regrole, m.roleid::regrole, m.admin_option)
    FROM pg_catalog.pg_auth_members m
   WHERE m.member IN (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = ANY($1::text[]))
      OR m.roleid IN (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = ANY($1::text[]))
  UNION ALL
  SELECT format('database %s', ARRAY(SELECT unnest(d.datacl)::text ORDER BY 1))
    FROM pg_catalog.pg_database d WHERE d.datname = current_database()
  UNION ALL
  SELECT format('schema owner=%s acl=%s', n.nspowner::regrole, ARRAY(SELECT unnest(n.nspacl)::text ORDER BY 1))
    FROM pg_catalog.pg_namespace n WHERE n.nspname = $2
  UNION ALL
  SELECT format('relation %s kind=%s owner=%s rls=%s acl=%s', c.relname, c.relkind, c.relowner::regrole, c.relrowsecurity,
                ARRAY(SELECT unnest(c.relacl)::text ORDER BY 1))
    FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
   WHERE n.nspname = $2 AND c.relkind IN ('r', 'p', 'v', 'S')
  UNION ALL
  SELECT format('column %s.%s acl=%s', c.relname, a.attname, ARRAY(SELECT unnest(a.attacl)::text ORDER BY 1))
    FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
   WHERE n.nspname = $2 AND a.attacl IS NOT NULL
  UNION ALL
  SELECT format('policy %s.%s %s to=%s using=%s check=%s', p.tablename, p.policyname, p.cmd, p.roles::text, p.qual, p.with_check)
    FROM pg_catalog.pg_policies p WHERE p.schemaname = $2
  UNION ALL
  SELECT format('function %s owner=%s acl=%s', f.oid::regprocedure, f.proowner::regrole, ARRAY(SELECT unnest(f.proacl)::text ORDER BY 1))
    FROM pg_catalog.pg_proc f JOIN pg_catalog.pg_namespace n ON n.oid = f.pronamespace WHERE n.nspname = $2
) AS facts`;

/**
 * Creates or updates the vault roles in the database at `url` (see {@link vaultRolesStatements}),
 * in one transaction, and sets the passwords given (role → password, checked by the caller
 * with checkRolePassword) as SCRAM verifiers computed here, so no password reaches the
 * server; a password the role already has is left alone. Passwords need `login`.
 *
 * Throws DATABASE naming the fix when the connected user may not create roles or change
 * owners (print the SQL for a DBA instead), VAULT when the schema holds no vault, USAGE for
 * a bad prefix or a password for a role that cannot log in.
 */
export async function applyVaultRoles(
  url: string,
  options: VaultRolesOptions & { passwords?: ReadonlyMap<VaultRole, string> },
): Promise<VaultRolesResult> {
  const schema = checkSchemaName(options.schema);
  const names = vaultRoleNames(options);
  const passwords = options.passwords ?? new Map<VaultRole, string>();
  if (passwords.size > 0 && options.login !== true) {
    throw new LetheError(ErrorCode.USAGE, 'role passwords are for roles that log in: add --login');
  }
  const statements = vaultRolesStatements(options);
  const doing = `creating the vault roles for schema "${schema}"`;
  const client = new pg.Client(pgClientConfig(url, { application_name: 'lethe init --roles' }));
  client.on('error', () => undefined);
  const warnings: string[] = [];
  client.on('notice', (notice) => {
    if (notice.severity === 'WARNING' && notice.message !== undefined) warnings.push(notice.message.replace(/^lethe: /, ''));
  });
  try {
    await client.connect();
  } catch (err) {
    throw wrapForeign(ErrorCode.DATABASE, `${doing}: connecting to the vault database`, err);
  }
  const run = async <R extends pg.QueryResultRow>(text: string, values: unknown[] = []): Promise<pg.QueryResult<R>> => {
    try {
      return await client.query<R>(text, values);
    } catch (err) {
      throw rolesError(err, doing, schema);
    }
  };
  try {
    await run('BEGIN');
    try {
      const [lock, ...rest] = statements;
      if (lock !== undefined) await run(lock);
      const existing = new Set(
        (await run<{ rolname: string }>('SELECT rolname FROM pg_catalog.pg_roles WHERE rolname = ANY($1::text[])', [Object.values(names)])).rows.map(
          (r) => r.rolname,
        ),
      );
      const state = async (): Promise<string> =>
        (await run<{ state: string }>(STATE_SQL, [Object.values(names), schema])).rows[0]?.state ?? '';
      const before = await state();
      for (const statement of rest) await run(statement);
      const passwordState = new Map<VaultRole, AppliedRole['password']>();
      for (const [role, password] of passwords) {
        passwordState.set(role, await setPassword(run, names[role], password));
      }
      const after = await state();
      const login = new Map(
        (await run<{ rolname: string; rolcanlogin: boolean }>(
          'SELECT rolname, rolcanlogin FROM pg_catalog.pg_roles WHERE rolname = ANY($1::text[])',
          [Object.values(names)],
        )).rows.map((r) => [r.rolname, r.rolcanlogin]),
      );
      const present = (
        await run<{ relname: string }>(
          `SELECT c.relname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = $1 AND c.relkind IN ('r', 'p', 'v') ORDER BY c.relname`,
          [schema],
        )
      ).rows.map((r) => r.relname);
      await run('COMMIT');
      const known = new Set(Object.keys(VAULT_GRANTS));
      return {
        schema,
        roles: VAULT_ROLES.map((role) => ({
          role,
          name: names[role],
          created: !existing.has(names[role]),
          login: login.get(names[role]) === true,
          password: passwordState.get(role) ?? 'none',
        })),
        changed: before !== after,
        objects: present.filter((t) => known.has(t)),
        absent: [...known].filter((t) => !present.includes(t)),
        unknown: present.filter((t) => !known.has(t)),
        warnings,
      };
    } catch (err) {
      await client.query('ROLLBACK').catch(() => undefined);
      throw err;
    }
  } finally {
    await client.end().catch(() => undefined);
  }
}

/**
 * Sets `role`'s password to a fresh SCRAM verifier of `password`, unless the stored verifier
 * (readable by a superuser) already accepts it. The password itself is never sent.
 */
async function setPassword(
  run: <R extends pg.QueryResultRow>(text: string, values?: unknown[]) => Promise<pg.QueryResult<R>>,
  role: string,
  password: string,
): Promise<'set' | 'unchanged'> {
  const readable = await run<{ ok: boolean }>("SELECT has_table_privilege('pg_catalog.pg_authid', 'SELECT') AS ok");
  if (readable.rows[0]?.ok === true) {
    const stored = await run<{ rolpassword: string | null }>('SELECT rolpassword FROM pg_catalog.pg_authid WHERE rolname = $1', [role]);
    const current = stored.rows[0]?.rolpassword ?? null;
    if (scramVerifierAccepts(current, password)) return 'unchanged';
  }
  const verifier = scramSha256Verifier(password);
  if (!isScramVerifier(verifier)) throw new LetheError(ErrorCode.INTERNAL, `the SCRAM verifier for ${role} has an unexpected form`);
  // ALTER ROLE takes no parameters: the verifier (base64, digits, '$' and ':') is spliced as a literal.
  await run(`ALTER ROLE ${q(role)} PASSWORD ${lit(verifier)}`);
  return 'set';
}

/**
 * When `err` is PostgreSQL refusing a privilege (SQLSTATE 42501, raw or inside a DATABASE
 * LetheError), the error `lethe init --roles` shows instead, naming who may run it and the
 * --print-sql way out; otherwise undefined.
 */
export function rolesPrivilegeError(err: unknown, doing: string): LetheError | undefined {
  const cause = err instanceof LetheError ? err.cause : err;
  if (!(cause instanceof pg.DatabaseError) || cause.code !== '42501') return undefined;
  return new LetheError(
    ErrorCode.DATABASE,
    `${doing}: the vault database user may not do this (${cause.message}): run \`lethe init --roles\` with a config whose ` +
      'vault.database.url names a superuser (or a role with CREATEROLE that can act as the vault schema\'s owner), or ' +
      'print the SQL with `lethe init --roles --print-sql` and give it to your DBA',
    { cause },
  );
}

/** A pg failure of the roles script as a LetheError that says what to do. */
function rolesError(err: unknown, doing: string, schema: string): LetheError {
  const refused = rolesPrivilegeError(err, doing);
  if (refused !== undefined) return refused;
  if (err instanceof pg.DatabaseError) {
    if (err.code === 'P0001' && err.message.includes('lethe init')) {
      return new LetheError(ErrorCode.VAULT, err.message, { cause: err, details: { schema } });
    }
    if (err.code === 'P0001') return new LetheError(ErrorCode.DATABASE, `${doing}: ${err.message}`, { cause: err });
  }
  return wrapForeign(ErrorCode.DATABASE, doing, err);
}

/** The job roles a grant-table entry gives any privilege to (for docs and tests). */
export function rolesWithAccess(object: VaultObject): VaultJobRole[] {
  return VAULT_JOB_ROLES.filter((r) => privilegeList(object.access[r]).length > 0 || object.ownedBy === r);
}
