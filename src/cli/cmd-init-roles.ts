import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { ErrorCode, ExitCode, LetheError } from '../errors/index.ts';
import { readSecretFile } from '../jobs/runtime.ts';
import {
  applyVaultRoles,
  checkRolePassword,
  checkRolePrefix,
  migrateVault,
  rolesPrivilegeError,
  vaultRoleNames,
  vaultRolesScript,
  Vault,
  VAULT_ROLE_PURPOSE,
  VAULT_ROLES,
  type VaultRole,
  type VaultRolesResult,
} from '../vault/index.ts';
import type { CommandContext } from './commands.ts';
import { actorName, stringOpt } from './format.ts';

/** The options `lethe init` takes for its `--roles` mode. */
export const INIT_ROLES_OPTIONS = {
  roles: { type: 'boolean' },
  'print-sql': { type: 'boolean' },
  'role-prefix': { type: 'string' },
  login: { type: 'boolean' },
  'password-dir': { type: 'string' },
} as const;

/** True when the command line has any of the roles options (all but `--roles` itself need `--roles`). */
export function wantsRoles(values: CommandContext['values']): boolean {
  return Object.keys(INIT_ROLES_OPTIONS).some((o) => values[o] !== undefined);
}

/**
 * `lethe init --roles`: brings the vault schema up to date (migrations only: no key files are
 * touched) and creates or updates the per-job vault roles; with `--print-sql`, prints the
 * SQL for a DBA and touches nothing.
 */
export async function runInitRoles(ctx: CommandContext): Promise<number> {
  const others = ['print-sql', 'role-prefix', 'login', 'password-dir'].filter((o) => ctx.values[o] !== undefined);
  if (ctx.values['roles'] !== true) {
    throw new LetheError(ErrorCode.USAGE, `--${others[0] ?? 'print-sql'} works with --roles: lethe init --roles [--print-sql] …`);
  }
  const rt = await ctx.runtime();
  const schema = rt.config.vault.schema;
  const prefixFlag = stringOpt(ctx.values, 'role-prefix');
  const prefix = prefixFlag === undefined ? undefined : checkRolePrefix(prefixFlag);
  const options = { schema, login: ctx.values['login'] === true, ...(prefix === undefined ? {} : { prefix }) };
  const names = vaultRoleNames(options);
  const passwordDir = stringOpt(ctx.values, 'password-dir');

  if (ctx.values['print-sql'] === true) {
    if (passwordDir !== undefined) {
      throw new LetheError(
        ErrorCode.USAGE,
        '--password-dir does not go with --print-sql: the printed SQL never holds a password (it says how to set them)',
      );
    }
    const sql = vaultRolesScript(options);
    ctx.out(ctx.json ? JSON.stringify({ schema, roles: names, sql }) : sql);
    return ExitCode.OK;
  }

  const passwords = passwordDir === undefined ? new Map<VaultRole, string>() : await readPasswords(passwordDir, names);
  if (passwords.size > 0 && !options.login) {
    throw new LetheError(ErrorCode.USAGE, '--password-dir sets passwords of roles that log in: add --login');
  }
  const url = await rt.vaultUrl();
  let applied: number[];
  try {
    ({ applied } = await migrateVault(url, schema));
  } catch (err) {
    throw rolesPrivilegeError(err, `migrating the vault schema "${schema}" before its roles`) ?? err;
  }
  const result = await applyVaultRoles(url, { ...options, passwords });
  if (result.changed || [...result.roles].some((r) => r.password === 'set')) {
    const vault = await Vault.open(url, schema);
    try {
      await vault.appendAudit({
        actor: actorName(undefined),
        action: 'vault.roles',
        subject: schema,
        details: {
          roles: result.roles.map((r) => ({ role: r.role, name: r.name, created: r.created, login: r.login, password: r.password })),
          objects: [...result.objects],
          unknown: [...result.unknown],
        },
      });
    } finally {
      await vault.close();
    }
  }
  for (const w of result.warnings) ctx.warn(w);
  if (result.unknown.length > 0) {
    ctx.warn(
      `the vault schema has ${result.unknown.join(', ')}, which this lethe's grant table does not know: no job role may ` +
        'use them (upgrade lethe, then run `lethe init --roles` again)',
    );
  }
  if (ctx.json) {
    ctx.out(JSON.stringify({ ...result, migrationsApplied: applied }));
    return ExitCode.OK;
  }
  printResult(ctx, result, applied);
  return ExitCode.OK;
}

/**
 * Reads `dir/<role>` for each vault role that has a file there (mode 0600, one password,
 * trimmed): `owner`, `backup`, `verify`, `lifecycle`, `daemon`. Entries starting with a dot
 * are ignored (a Kubernetes Secret volume's `..data`); any other name is refused, so a
 * misspelt file never leaves a role without its password.
 */
async function readPasswords(dir: string, names: Readonly<Record<VaultRole, string>>): Promise<Map<VaultRole, string>> {
  let entries: string[];
  try {
    entries = await readdir(dir);
  } catch (err) {
    throw new LetheError(ErrorCode.USAGE, `--password-dir ${dir}: cannot list it (${(err as NodeJS.ErrnoException).code ?? 'error'}): check the path`);
  }
  const known = new Set<string>(VAULT_ROLES);
  const stray = entries.filter((e) => !e.startsWith('.') && !known.has(e));
  if (stray.length > 0) {
    throw new LetheError(
      ErrorCode.USAGE,
      `--password-dir ${dir} holds ${stray.join(', ')}: name each file after its role (${VAULT_ROLES.join(', ')})`,
    );
  }
  const out = new Map<VaultRole, string>();
  for (const role of VAULT_ROLES) {
    if (!entries.includes(role)) continue;
    const path = join(dir, role);
    const password = await readSecretFile(path, `--password-dir ${role}`);
    checkRolePassword(password, names[role], path);
    out.set(role, password);
  }
  if (out.size === 0) {
    throw new LetheError(ErrorCode.USAGE, `--password-dir ${dir} has no password file (name them ${VAULT_ROLES.join(', ')})`);
  }
  return out;
}

function printResult(ctx: CommandContext, result: VaultRolesResult, applied: readonly number[]): void {
  ctx.out(
    `vault roles for schema ${result.schema}: ${result.changed ? 'updated' : 'up to date'}` +
      (applied.length > 0 ? ` (migrations ${applied.join(', ')} applied first)` : ''),
  );
  for (const r of result.roles) {
    const state = [
      r.created ? 'created' : 'exists',
      r.login ? 'LOGIN' : 'NOLOGIN',
      ...(r.password === 'none' ? [] : [r.password === 'set' ? 'password set' : 'password unchanged']),
    ].join(', ');
    ctx.out(`  ${r.name.padEnd(24)} ${state.padEnd(32)} ${VAULT_ROLE_PURPOSE[r.role]}`);
  }
  if (result.absent.length > 0) ctx.out(`  not in this vault yet: ${result.absent.join(', ')}`);
  const byName = new Map(result.roles.map((r) => [r.role, r]));
  const loginWithout = result.roles.filter((r) => r.login && r.password === 'none');
  if (loginWithout.length > 0) {
    ctx.out(`set the password of ${loginWithout.map((r) => r.name).join(', ')} (in psql: \\password ROLE; never on a command line),`);
    ctx.out('  or give them as files: lethe init --roles --login --password-dir DIR');
  }
  if (byName.get('backup')?.login !== true) {
    ctx.out(`the roles cannot log in: grant each to the login role its job uses, e.g. GRANT ${byName.get('backup')?.name ?? ''} TO backup_service;`);
  }
  ctx.out("next: give each job's config a vault.database.url that connects as its role (docs/operations.md, \"Vault roles\")");
}
