import { readFile } from 'node:fs/promises';
import { dirname, isAbsolute, resolve } from 'node:path';
import { parse as parseYaml } from 'yaml';
import type { z } from 'zod';
import { ErrorCode, LetheError } from '../errors/index.ts';
import { ConfigSchema, type Config } from './schema.ts';
import { URL_SCHEME } from './blob-store-url.ts';

/** Fields holding file-system paths, resolved against the config file's directory. */
const PATH_FIELDS: readonly (readonly string[])[] = [
  ['storage', 'path'],
  ['storage', 'caFile'],
  ['chatStore', 'database', 'caFile'],
  ['vault', 'database', 'caFile'],
  ['masterKey', 'file'],
  ['master', 'file'],
  ['master', 'module'],
  ['master', 'pin', 'file'],
  ['master', 'caFile'],
  ['embedded', 'dataDir'],
  ['embedded', 'passwordFile'],
  ['signingKeys', 'backup', 'file'],
  ['signingKeys', 'lifecycle', 'file'],
  ['alerts', 'webhooks', '*', 'secret', 'file'],
  ['daemon', 'token', 'file'],
  ['chatStore', 'blobStores', '*', 'caFile'],
];

/** Levels of nesting a config document may have; lethe's deepest setting is a handful down. */
const MAX_DEPTH = 64;

const ENV_REF = /\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g;

/**
 * Replaces `${NAME}` in every string value with the environment variable NAME. Throws
 * CONFIG_SECRET_MISSING naming the field and the variable when one is unset or empty, and
 * CONFIG_INVALID for a document nested deeper than any config can be.
 * Only this module reads `process.env` for config.
 */
export function interpolateEnv(value: unknown, env: NodeJS.ProcessEnv, path: string[] = []): unknown {
  if (path.length > MAX_DEPTH) {
    // Walking on would overflow the stack (a RangeError, not an error naming the fix).
    throw new LetheError(
      ErrorCode.CONFIG_INVALID,
      `config field \`${path.slice(0, 8).join('.')}…\` nests deeper than ${MAX_DEPTH} levels: no lethe setting is nested that deep; see config/lethe.example.yaml`,
      { details: { field: path.slice(0, 8).join('.') } },
    );
  }
  if (typeof value === 'string') {
    return value.replace(ENV_REF, (_m, name: string) => {
      const found = env[name];
      if (found === undefined || found === '') {
        throw new LetheError(
          ErrorCode.CONFIG_SECRET_MISSING,
          `config field \`${path.join('.')}\` refers to \${${name}}, which is not set: ` +
            `export ${name} in the environment of this job`,
          { details: { field: path.join('.'), variable: name } },
        );
      }
      return found;
    });
  }
  if (Array.isArray(value)) return value.map((v, i) => interpolateEnv(v, env, [...path, String(i)]));
  if (value !== null && typeof value === 'object') {
    return Object.fromEntries(
      Object.entries(value).map(([k, v]) => [k, interpolateEnv(v, env, [...path, k])]),
    );
  }
  return value;
}

/** One line per zod issue: the field path, what is wrong, and the value's type when useful. */
export function formatIssues(issues: readonly z.core.$ZodIssue[]): string {
  return issues
    .map((issue) => {
      const field = issue.path.length === 0 ? '(top level)' : issue.path.map(String).join('.');
      if (issue.code === 'unrecognized_keys') {
        const where = issue.path.length === 0 ? 'at the top level' : `in \`${field}\``;
        return `- unknown key${issue.keys.length > 1 ? 's' : ''} ${issue.keys.map((k) => `\`${k}\``).join(', ')} ${where}: remove or correct ${issue.keys.length > 1 ? 'them' : 'it'} (see config/lethe.example.yaml)`;
      }
      if (issue.code === 'invalid_type' && / received undefined$/.test(issue.message)) {
        return `- config field \`${field}\` is required: ${REQUIRED_HINTS[field] ?? `add it (${issue.expected === 'object' ? 'a section' : `a ${issue.expected}`}; see config/lethe.example.yaml)`}`;
      }
      return `- \`${field}\`: ${issue.message}`;
    })
    .join('\n');
}

/** What to write for a required field that is missing, for the fields a new config most often lacks. */
const REQUIRED_HINTS: Readonly<Record<string, string>> = {
  chatStore: 'the chat store to back up, e.g. `chatStore: { database: { url: postgres://lethe_backup@db/chat } }`',
  'chatStore.database': 'give `url: postgres://…` or `embeddedDatabase: NAME`',
  vault: 'the key vault database, e.g. `vault: { database: { url: postgres://lethe@db/lethe_vault } }`',
  'vault.database': 'give `url: postgres://…` or `embeddedDatabase: NAME`',
  storage: 'where snapshots go, e.g. `storage: { type: filesystem, path: /srv/lethe }` or `storage: { type: s3, bucket: …, … }`',
  'storage.type': '`filesystem` or `s3`',
  'storage.path': 'the directory `lethe init` creates the store in',
  'masterKey.file': 'the age identity file `lethe init` creates, e.g. `masterKey: { file: /etc/lethe/master.key }`',
  'embedded.dataDir': 'the embedded PostgreSQL data directory, e.g. `dataDir: pg`',
  'embedded.passwordFile': 'a 0600 file holding the embedded superuser password',
};

/** Holders of the last field of `path` in `node`; `*` steps into every element of an array or value of a map. */
function holdersOf(node: unknown, path: readonly string[]): Record<string, unknown>[] {
  if (node === null || typeof node !== 'object') return [];
  if (path.length <= 1) return [node as Record<string, unknown>];
  const [part, ...rest] = path;
  if (part === '*') return (Array.isArray(node) ? node : Object.values(node)).flatMap((item) => holdersOf(item, rest));
  return holdersOf((node as Record<string, unknown>)[part ?? ''], rest);
}

function resolvePaths(raw: unknown, baseDir: string): unknown {
  if (raw === null || typeof raw !== 'object') return raw;
  const copy = structuredClone(raw) as Record<string, unknown>;
  for (const path of PATH_FIELDS) {
    const field = path.at(-1);
    if (field === undefined) continue;
    for (const record of holdersOf(copy, path)) {
      const value = record[field];
      if (typeof value === 'string' && value !== '' && !isAbsolute(value)) {
        record[field] = resolve(baseDir, value);
      }
    }
  }
  // A blob store's url is a URL (file://, s3://) or a directory path; only a path is resolved.
  for (const store of holdersOf(copy, ['chatStore', 'blobStores', '*', 'url'])) {
    const url = store['url'];
    if (typeof url === 'string' && url !== '' && !URL_SCHEME.test(url) && !isAbsolute(url)) {
      store['url'] = resolve(baseDir, url);
    }
  }
  return copy;
}

/**
 * Validates an already-parsed config document. Relative paths are resolved against
 * `baseDir`. Throws CONFIG_INVALID listing every problem, or CONFIG_SECRET_MISSING.
 */
export function parseConfig(raw: unknown, baseDir: string, env: NodeJS.ProcessEnv = process.env): Config {
  const interpolated = interpolateEnv(raw, env);
  const result = ConfigSchema.safeParse(resolvePaths(interpolated, baseDir));
  if (!result.success) {
    throw new LetheError(
      ErrorCode.CONFIG_INVALID,
      `invalid config:\n${formatIssues(result.error.issues)}`,
      { details: { issues: result.error.issues.map((i) => ({ path: i.path.map(String), message: i.message })) } },
    );
  }
  return result.data;
}

/**
 * Reads, interpolates and validates the YAML config at `path`. Throws CONFIG_INVALID when
 * the file is missing, is not YAML, or fails validation; the message names each field.
 */
export async function loadConfig(path: string, env: NodeJS.ProcessEnv = process.env): Promise<Config> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new LetheError(
      ErrorCode.CONFIG_INVALID,
      `cannot read config file ${path}: ${(err as NodeJS.ErrnoException).code ?? 'error'}; ` +
        'pass --config FILE or set LETHE_CONFIG (see config/lethe.example.yaml)',
      { cause: err },
    );
  }
  let raw: unknown;
  try {
    raw = parseYaml(text);
  } catch (err) {
    // Only the first line: the rest of a YAML error quotes the file, which may hold a secret.
    const first = (err as Error).message.split('\n')[0] ?? 'parse error';
    throw new LetheError(ErrorCode.CONFIG_INVALID, `config file ${path} is not valid YAML: ${first}`);
  }
  return parseConfig(raw, dirname(resolve(path)), env);
}

/** The config path from `--config`, else LETHE_CONFIG, else `./lethe.yaml`. */
export function configPath(flag: string | undefined, env: NodeJS.ProcessEnv = process.env): string {
  return flag ?? env['LETHE_CONFIG'] ?? 'lethe.yaml';
}
