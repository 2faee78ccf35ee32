import { createPrivateKey } from 'node:crypto';
import type { ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdir, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { gunzipSync, gzipSync } from 'node:zlib';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigSchema } from '../../src/config/schema.ts';
import { decodeIdentity } from '../../src/crypto/bech32.ts';
import { verifyAlertSignature } from '../../src/daemon/alerts.ts';
import { startDaemon, waitFor } from '../helpers/daemon.ts';
import { createLetheEnv, expectExit, jsonOut, type CliResult, type LetheEnv, type RawConfig, type TestDatabase } from '../helpers/lethe-env.ts';
import { withAdmin } from '../helpers/postgres.ts';
import { startS3rver, type S3rverHandle } from '../helpers/s3.ts';
import { recordFigures, seededRandom, sweepSeed, sweepSize } from '../helpers/sweep.ts';
import { createTinyChatTemplate } from '../integration/e2e/tiny-chat-store.ts';

/**
 * Sweep `secrets` (issue 11, item 6): every job runs through the real CLI at debug level
 * with sentinel secrets — the master identity `lethe init` generates (and its raw scalar),
 * the signing keys it generates, the S3 secret access key, the passwords of the chat store's
 * and the vault's database roles (PostgreSQL roles created for the run), a wrong database
 * password a failing job meets, the daemon's bearer token and the webhook HMAC key — and
 * then every place a secret could leak to is searched for every one of them, raw and in
 * simple encodings (lower and upper case, URL-encoding, hex, base64 and base64url at every
 * alignment, and inside gzip): each run's stdout and stderr (the debug log); the argv of the
 * lethe process and the argv and environment of every process it starts, read from /proc
 * while it runs; every file under the deployment directory and the temp directory lethe is
 * given (polled while each job runs, so short-lived files are read too) and whatever
 * appeared in the system temp directory; every row of every vault table (live and restored);
 * every object in the bucket; the alert bodies and headers the webhook receiver got; and the
 * daemon's status page and metrics. Figures: placesScanned, hits (target 0).
 *
 * Where a secret belongs is not a hit: the key files and secret files the config names, and
 * the environment the operator gives the lethe process itself (systemd's EnvironmentFile=,
 * a Kubernetes Secret), which the config reads as `${NAME}`. Those places are scanned too,
 * as controls: the scan must find the secrets there, or it is not looking.
 *
 * fast (`npm test`): init, backup, verify, restore, erase request and approve, lifecycle
 * apply and the daemon with its alert. full (`npm run test:sweep`): every job.
 */

const SIZE = sweepSize();
const SEED = sweepSeed();
const random = seededRandom(SEED);

/** A sentinel secret: a recognisable label and `length` seeded characters of `alphabet`. */
function sentinel(label: string, length: number, alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789'): string {
  let out = `${label}-`;
  for (let i = 0; i < length; i++) out += alphabet[Math.floor(random() * alphabet.length)] ?? 'x';
  return out;
}

/** The middle of `bytes` in base64 (or base64url) as it reads at any 3-byte alignment of surrounding data. */
function base64Cores(bytes: Buffer, encoding: 'base64' | 'base64url'): string[] {
  return [0, 1, 2].map((k) => {
    const text = Buffer.concat([Buffer.alloc(k, 0xa5), bytes]).toString(encoding);
    // The first characters mix in the k filler bytes; the last group may mix in what follows.
    return text.slice(k === 0 ? 0 : k + 1, text.length - 4);
  });
}

/** Byte patterns a secret given as bytes could be written in. */
function byteForms(bytes: Buffer): Buffer[] {
  const hex = bytes.toString('hex');
  return [bytes, ...[hex, hex.toUpperCase(), ...base64Cores(bytes, 'base64'), ...base64Cores(bytes, 'base64url')].map((t) => Buffer.from(t, 'latin1'))];
}

/** Byte patterns a secret given as text could be written in. */
function textForms(text: string): Buffer[] {
  const variants = [...new Set([text, text.toLowerCase(), text.toUpperCase(), encodeURIComponent(text), encodeURIComponent(text).toLowerCase()])];
  return [...variants.map((v) => Buffer.from(v, 'utf8')), ...byteForms(Buffer.from(text, 'utf8')).slice(1)];
}

interface Secret {
  readonly name: string;
  readonly forms: readonly Buffer[];
}

interface Hit {
  readonly place: string;
  readonly secret: string;
}

/** Counts the places scanned and the secrets found in each. */
class Scanner {
  readonly secrets: Secret[] = [];
  readonly places = new Set<string>();
  readonly hits: Hit[] = [];
  /** Secrets found where they belong (key files, the lethe process's own environment): the controls. */
  readonly expected: Hit[] = [];

  add(name: string, forms: readonly Buffer[]): void {
    for (const f of forms) if (f.length < 16) throw new Error(`a form of ${name} is too short to look for`);
    this.secrets.push({ name, forms });
  }

  /** The names of the secrets in `bytes` (decompressed too, when gzip). */
  find(bytes: Buffer): string[] {
    const variants = [bytes];
    if (bytes.length > 2 && bytes[0] === 0x1f && bytes[1] === 0x8b) {
      try {
        variants.push(gunzipSync(bytes));
      } catch {
        // bytes that merely start like gzip
      }
    }
    return this.secrets.filter((s) => variants.some((v) => s.forms.some((f) => v.includes(f)))).map((s) => s.name);
  }

  /** Scans one place; `allowed` names the secrets that belong there. */
  scan(place: string, bytes: Buffer | string, allowed: ReadonlySet<string> = new Set()): void {
    this.places.add(place);
    for (const secret of this.find(typeof bytes === 'string' ? Buffer.from(bytes, 'utf8') : bytes)) {
      (allowed.has(secret) ? this.expected : this.hits).push({ place, secret });
    }
  }
}

/** Every regular file under `root`; entries that vanish or cannot be read are skipped. */
async function filesIn(root: string, maxDepth = 12): Promise<string[]> {
  const out: string[] = [];
  const walk = async (dir: string, depth: number): Promise<void> => {
    if (depth > maxDepth) return;
    let entries;
    try {
      entries = await readdir(dir, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      const path = join(dir, e.name);
      if (e.isDirectory()) await walk(path, depth + 1);
      else if (e.isFile()) out.push(path);
    }
  };
  await walk(root, 0);
  return out;
}

async function readIfSmall(path: string, limit = 8 * 1024 * 1024): Promise<Buffer | undefined> {
  try {
    if ((await stat(path)).size > limit) return undefined;
    return await readFile(path);
  } catch {
    return undefined; // gone meanwhile, or not readable
  }
}

/**
 * While a lethe process runs: every 20 ms, the argv and environment of it and of every
 * process descended from it (from /proc), and every file under `tmp` (so a temp file that
 * lives for a moment is read too). The lethe process's own environment is what the operator
 * gave it: the secrets in `givenEnv` are expected there.
 */
class Watch {
  readonly #seen = new Set<string>();
  readonly #files = new Map<string, string>();
  #running = true;
  readonly #loop: Promise<void>;
  /** Processes seen: the lethe process and its descendants. */
  readonly pids = new Set<number>();

  constructor(
    readonly scanner: Scanner,
    readonly label: string,
    readonly rootPid: number,
    readonly tmp: string,
    readonly givenEnv: ReadonlySet<string>,
  ) {
    this.#loop = this.#run();
  }

  async #run(): Promise<void> {
    while (this.#running) {
      await this.poll();
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  async poll(): Promise<void> {
    const parent = new Map<number, number>();
    let names: string[];
    try {
      names = await readdir('/proc');
    } catch {
      return;
    }
    await Promise.all(
      names
        .filter((n) => /^\d+$/.test(n))
        .map(async (n) => {
          try {
            const text = await readFile(`/proc/${n}/stat`, 'utf8');
            // pid (comm) state ppid …: comm may hold spaces and parentheses, so read after the last ')'.
            const ppid = Number(text.slice(text.lastIndexOf(')') + 2).split(' ')[1]);
            parent.set(Number(n), ppid);
          } catch {
            // exited meanwhile
          }
        }),
    );
    const isOurs = (pid: number): boolean => {
      for (let p: number | undefined = pid, hops = 0; p !== undefined && p > 1 && hops < 64; p = parent.get(p), hops++) {
        if (p === this.rootPid) return true;
      }
      return false;
    };
    for (const pid of parent.keys()) {
      if (!isOurs(pid)) continue;
      this.pids.add(pid);
      for (const what of ['cmdline', 'environ'] as const) {
        let bytes: Buffer;
        try {
          bytes = await readFile(`/proc/${pid}/${what}`);
        } catch {
          continue;
        }
        const key = `${pid}/${what}/${bytes.length}`;
        if (this.#seen.has(key)) continue;
        this.#seen.add(key);
        const own = pid === this.rootPid;
        this.scanner.scan(`${this.label}: ${own ? 'lethe' : `child ${pid}`} ${what === 'cmdline' ? 'argv' : 'environment'}`, bytes, own && what === 'environ' ? this.givenEnv : new Set());
      }
    }
    for (const file of await filesIn(this.tmp)) {
      const bytes = await readIfSmall(file);
      if (bytes === undefined) continue;
      const key = `${bytes.length}:${bytes.subarray(0, 64).toString('hex')}`;
      if (this.#files.get(file) === key) continue;
      this.#files.set(file, key);
      this.scanner.scan(`temp file ${relative(this.tmp, file)}`, bytes);
    }
  }

  async stop(): Promise<void> {
    this.#running = false;
    await this.#loop;
  }
}

interface Delivery {
  readonly headers: IncomingHttpHeaders;
  readonly body: string;
}

async function startReceiver(): Promise<{ url: string; deliveries: Delivery[]; server: Server }> {
  const deliveries: Delivery[] = [];
  const server = createServer((req, res) => {
    let body = '';
    req.setEncoding('utf8').on('data', (t: string) => (body += t));
    req.on('end', () => {
      deliveries.push({ headers: req.headers, body });
      res.writeHead(200).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return { url: `http://127.0.0.1:${port}/hook`, deliveries, server };
}

/** Every job of the full sweep; the fast one runs those marked `fast`. */
type JobName =
  | 'init'
  | 'backup'
  | 'snapshots'
  | 'verify'
  | 'restore'
  | 'hold place'
  | 'hold release'
  | 'erase request'
  | 'erase approve'
  | 'lifecycle apply'
  | 'audit verify'
  | 'keys export'
  | 'report'
  | 'vault backup'
  | 'vault restore'
  | 'doctor'
  | 'backup, refused by the bucket'
  | 'daemon';

const FAST: ReadonlySet<JobName> = new Set(['init', 'backup', 'verify', 'restore', 'erase request', 'erase approve', 'lifecycle apply', 'daemon']);

describe(`sweep secrets (${SIZE}, seed ${SEED})`, () => {
  let template: TestDatabase;
  let s3: S3rverHandle;
  let env: LetheEnv;
  let receiver: Awaited<ReturnType<typeof startReceiver>>;
  const scanner = new Scanner();
  const roles = { chat: `sweep_chat_${SEED.toString(36)}_${process.pid}`, vault: `sweep_vault_${SEED.toString(36)}_${process.pid}` };
  const secret = {
    chatPassword: sentinel('sentinel-chat-pw', 28, 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~'),
    vaultPassword: sentinel('sentinel-vault-pw', 28, 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~'),
    wrongPassword: sentinel('sentinel-wrong-pw', 28),
    s3Secret: sentinel('sentinel/s3+secret', 30, 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'),
    token: sentinel('sentinel-daemon-token', 32),
    webhook: sentinel('sentinel-webhook-hmac', 32),
  };
  /** What the operator gives every lethe process: the database and S3 secrets, as the config's ${NAME}. */
  const given: Record<string, string> = {
    CHAT_DB_PASSWORD: secret.chatPassword,
    VAULT_DB_PASSWORD: secret.vaultPassword,
    S3_SECRET_ACCESS_KEY: secret.s3Secret,
    LETHE_LOG_LEVEL: 'debug',
  };
  const givenNames = new Set(['chat database password', 'vault database password', 'S3 secret access key']);
  /** Secret names per file the config names: where they belong. */
  const secretFiles = new Map<string, Set<string>>();
  let tmp: string;
  let configPath: string;
  let raw: RawConfig;
  const ran: JobName[] = [];
  const outputs = new Map<string, CliResult>();
  const pidsSeen: number[] = [];
  let systemTmpBefore: Set<string>;

  function dbUrl(base: string, role: string, passwordVar: string, database?: string): string {
    const u = new URL(base);
    const db = database ?? u.pathname.slice(1);
    return `postgres://${role}:\${${passwordVar}}@${u.host}/${db}`;
  }

  /** Runs one lethe command as the jobs do, watched; scans its stdout and stderr. */
  async function run(job: string, args: readonly string[], code: number, extraEnv: Record<string, string> = {}, allowedEnv: readonly string[] = []): Promise<CliResult> {
    const child = env.spawnCli(args, { env: { ...given, TMPDIR: tmp, ...extraEnv } });
    const result = await watched(job, child, allowedEnv);
    expectExit(result, code);
    return result;
  }

  async function watched(job: string, child: ChildProcess, allowedEnv: readonly string[] = [], until?: Promise<unknown>): Promise<CliResult> {
    let stdout = '';
    let stderr = '';
    child.stdout?.setEncoding('utf8').on('data', (t: string) => (stdout += t));
    child.stderr?.setEncoding('utf8').on('data', (t: string) => (stderr += t));
    const closed = once(child, 'close') as Promise<[number | null, NodeJS.Signals | null]>;
    const pid = child.pid;
    if (pid === undefined) throw new Error(`${job} did not start`);
    const watch = new Watch(scanner, job, pid, tmp, new Set([...givenNames, ...allowedEnv]));
    const timer = setTimeout(() => child.kill('SIGKILL'), 90_000);
    if (until !== undefined) await until;
    const [code, signal] = await closed;
    clearTimeout(timer);
    await watch.stop();
    pidsSeen.push(...watch.pids);
    const result = { code, signal, stdout, stderr };
    scanner.scan(`${job}: stdout`, stdout);
    scanner.scan(`${job}: stderr (debug log)`, stderr);
    outputs.set(job, result);
    return result;
  }

  const enabled = (job: JobName): boolean => SIZE === 'full' || FAST.has(job);

  beforeAll(async () => {
    [template, s3] = await Promise.all([createTinyChatTemplate('sweep_sec_tpl'), startS3rver()]);
    // env.raw keeps s3rver's own key; the sweep's configs name the sentinel through ${S3_SECRET_ACCESS_KEY}.
    env = await createLetheEnv({ template: template.name, storage: { type: 's3', server: s3 } });
    tmp = join(env.dir, 'tmp');
    await mkdir(tmp, { mode: 0o700 });
    receiver = await startReceiver();
    await withAdmin(async (c) => {
      for (const [role, password] of [
        [roles.chat, secret.chatPassword],
        [roles.vault, secret.vaultPassword],
      ] as const) {
        await c.query(`DROP ROLE IF EXISTS ${c.escapeIdentifier(role)}`);
        // Superuser: the sweep is about where secrets go, not privileges (docs/security covers those).
        await c.query(`CREATE ROLE ${c.escapeIdentifier(role)} LOGIN SUPERUSER PASSWORD ${c.escapeLiteral(password)}`);
      }
    });
    for (const [name, value] of [['daemon.token', secret.token], ['webhook.secret', secret.webhook]] as const) {
      await writeFile(join(env.dir, name), `${value}\n`, { mode: 0o600 });
    }
    raw = {
      ...env.raw,
      chatStore: { ...(env.raw['chatStore'] as Record<string, unknown>), database: { url: dbUrl(env.chat.url, roles.chat, 'CHAT_DB_PASSWORD') }, mapping: 'builtin' },
      vault: { database: { url: dbUrl(env.vaultDb.url, roles.vault, 'VAULT_DB_PASSWORD') }, schema: 'lethe' },
      storage: { ...(env.raw['storage'] as Record<string, unknown>), secretAccessKey: '${S3_SECRET_ACCESS_KEY}' },
      log: { level: 'debug' },
      // Signed approvals (issue 11, item 5) need enrolled SSH keys; this sweep's erase and
      // hold runs use typed names where the deployment allows them.
      ...('approvals' in ConfigSchema.shape ? { approvals: { allowUnsigned: true } } : {}),
    };
    configPath = await env.writeConfig('sweep.yaml', raw);
    systemTmpBefore = new Set(await readdir(tmpdir()));

    scanner.add('chat database password', textForms(secret.chatPassword));
    scanner.add('vault database password', textForms(secret.vaultPassword));
    scanner.add('wrong database password', textForms(secret.wrongPassword));
    scanner.add('S3 secret access key', textForms(secret.s3Secret));
    scanner.add('daemon token', textForms(secret.token));
    scanner.add('webhook HMAC key', textForms(secret.webhook));
    secretFiles.set('daemon.token', new Set(['daemon token']));
    secretFiles.set('webhook.secret', new Set(['webhook HMAC key']));

    // init generates the master identity and the signing keys: the sentinels it makes itself.
    await run('init', ['init', '--config', configPath, '--json'], 0);
    ran.push('init');
    const identity = /^AGE-SECRET-KEY-1[0-9A-Z]+$/m.exec(await readFile(env.masterKeyFile, 'utf8'))?.[0];
    if (identity === undefined) throw new Error('no identity in the master key file');
    scanner.add('master identity', textForms(identity));
    scanner.add('master identity (bech32 data)', textForms(identity.slice('AGE-SECRET-KEY-1'.length)));
    scanner.add('master identity (X25519 scalar)', byteForms(Buffer.from(decodeIdentity(identity))));
    secretFiles.set('master.key', new Set(['master identity', 'master identity (bech32 data)']));
    for (const purpose of ['backup', 'lifecycle'] as const) {
      const file = `${purpose}-signing.key`;
      const jwk = createPrivateKey(await readFile(join(env.dir, file), 'utf8')).export({ format: 'jwk' });
      if (typeof jwk.d !== 'string') throw new Error(`${file} is not an Ed25519 private key`);
      const name = `${purpose} signing key`;
      scanner.add(name, byteForms(Buffer.from(jwk.d, 'base64url')));
      secretFiles.set(file, new Set([name]));
    }
    // The secrets init met before they were known are looked for again in its output.
    const init = outputs.get('init');
    if (init !== undefined) {
      scanner.scan('init: stdout', init.stdout);
      scanner.scan('init: stderr (debug log)', init.stderr);
    }
  }, 120_000);

  afterAll(async () => {
    await new Promise((resolve) => receiver.server.close(resolve));
    await env.cleanup();
    await s3.stop();
    await template.drop();
    await withAdmin(async (c) => {
      for (const role of Object.values(roles)) await c.query(`DROP ROLE IF EXISTS ${c.escapeIdentifier(role)}`);
    });
  });

  it('the scan finds every form of a secret it looks for', () => {
    const probe = new Scanner();
    const text = secret.s3Secret;
    probe.add('probe', textForms(text));
    const bytes = Buffer.from(text, 'utf8');
    const haystacks: Record<string, Buffer> = {
      raw: Buffer.from(`x ${text} y`),
      'upper case': Buffer.from(text.toUpperCase()),
      'URL-encoded': Buffer.from(`u=${encodeURIComponent(text)}&`),
      hex: Buffer.from(`\\x${bytes.toString('hex')}`),
      gzip: gzipSync(Buffer.from(`{"k":"${text}"}`)),
      ...Object.fromEntries(
        [0, 1, 2, 3, 4].flatMap((k) => [
          [`base64 after ${k}`, Buffer.from(Buffer.concat([Buffer.alloc(k, 7), bytes, Buffer.alloc(2, 9)]).toString('base64'))],
          [`base64url after ${k}`, Buffer.from(Buffer.concat([Buffer.alloc(k, 7), bytes]).toString('base64url'))],
        ]),
      ),
    };
    for (const [form, haystack] of Object.entries(haystacks)) expect(probe.find(haystack), form).toEqual(['probe']);
    expect(probe.find(Buffer.from(text.slice(0, -3)))).toEqual([]);
  });

  it('runs every job with the sentinels and finds none of them where they do not belong', async () => {
    const tenant = '3';
    let requestId = '';
    const target = await env.database('sweep_target');
    const jobs: [JobName, () => Promise<void>][] = [
      ['backup', async () => {
        await run('backup', ['backup', '--config', configPath, '--json'], 0);
      }],
      ['snapshots', async () => {
        await run('snapshots', ['snapshots', '--config', configPath, '--json'], 0);
      }],
      ['verify', async () => {
        const r = await run('verify', ['verify', '--config', configPath, '--json'], 0);
        expect((jsonOut(r) as { ok: boolean }).ok).toBe(true);
      }],
      // The target's password comes as PGPASSWORD, as `lethe restore` asks.
      ['restore', async () => {
        await run('restore', ['restore', '--config', configPath, '--snapshot', 'latest', '--target', dbUrl(target.url, roles.chat, 'X').replace(':${X}', ''), '--blob-target', env.blobTarget(), '--json'], 0, { PGPASSWORD: secret.chatPassword }, ['chat database password']);
      }],
      ['hold place', async () => {
        await run('hold place', ['hold', 'place', '--config', configPath, '--case', 'CASE-SWEEP', '--tenant', '4', '--reason', 'sweep', '--actor', 'legal-ann', '--json'], 0);
      }],
      ['hold release', async () => {
        await run('hold release', ['hold', 'release', '--config', configPath, '--case', 'CASE-SWEEP', '--actor', 'legal-ann', '--reason', 'done', '--json'], 0);
      }],
      ['erase request', async () => {
        const r = await run('erase request', ['erase', 'request', '--config', configPath, '--tenant', tenant, '--user', '22', '--reason', 'art. 17', '--actor', 'privacy-pia', '--json'], 0);
        requestId = (jsonOut(r) as { id: string }).id;
      }],
      ['erase approve', async () => {
        await run('erase approve', ['erase', 'approve', requestId, '--config', configPath, '--actor', 'dpo-dan', '--json'], 0);
      }],
      ['lifecycle apply', async () => {
        await run('lifecycle apply', ['lifecycle', 'apply', '--config', configPath, '--actor', 'lethe-lifecycle', '--json'], 0);
      }],
      ['audit verify', async () => {
        await run('audit verify', ['audit', 'verify', '--config', configPath, '--json'], 0);
      }],
      ['keys export', async () => {
        await run('keys export', ['keys', 'export', '--config', configPath, '--out', join(env.dir, 'keys-export.json'), '--json'], 0);
      }],
      ['report', async () => {
        await run('report', ['report', '--config', configPath, '--from', '2020-01-01', '--to', '2030-01-01', '--out', join(env.dir, 'report.html'), '--json'], 0);
      }],
      ['vault backup', async () => {
        await run('vault backup', ['vault', 'backup', '--config', configPath, '--json'], 0);
      }],
      ['vault restore', async () => {
        const listed = await run('vault list', ['vault', 'list', '--config', configPath, '--json'], 0);
        const latest = (jsonOut(listed) as { backups: { key: string }[] }).backups.at(-1)?.key;
        if (latest === undefined) throw new Error('no vault backup listed');
        const fresh = await env.database('sweep_vault_restored');
        const restoreConfig = await env.writeConfig('sweep-vault-restore.yaml', { ...raw, vault: { database: { url: dbUrl(fresh.url, roles.vault, 'VAULT_DB_PASSWORD') }, schema: 'lethe' } });
        await run('vault restore', ['vault', 'restore', '--from', latest, '--config', restoreConfig, '--json'], 0);
        await scanVault(fresh.url, 'restored vault');
      }],
      ['doctor', async () => {
        const r = await run('doctor', ['doctor', '--config', configPath, '--json'], 0);
        expect(r.stdout).toMatch(/"status"/);
      }],
      ['backup, refused by the bucket', async () => {
        // s3rver checks key ids, not signatures: an unknown id fails every request the sentinel signs.
        const bad = await env.writeConfig('sweep-s3-bad.yaml', { ...raw, storage: { ...(raw['storage'] as Record<string, unknown>), accessKeyId: 'LETHESWEEPUNKNOWNID' } });
        const r = await run('backup, refused by the bucket', ['backup', '--config', bad, '--json'], 1);
        expect(r.stderr).toMatch(/InvalidAccessKeyId/);
      }],
      ['daemon', daemonRun],
    ];
    for (const [name, job] of jobs) {
      if (!enabled(name)) continue;
      await job();
      ran.push(name);
    }

    // The vault: every column of every table.
    await scanVault(env.vaultDb.url, 'vault');
    // The bucket: every object, decompressed where gzip.
    const store = await env.rt.store();
    let objects = 0;
    for await (const info of store.list('')) {
      scanner.scan(`bucket ${info.key}`, Buffer.from(await store.getBytes(info.key)));
      objects++;
    }
    expect(objects).toBeGreaterThan(3);
    // The deployment directory (config, key files, exports, report, temp) after the runs.
    for (const file of await filesIn(env.dir)) {
      const bytes = await readIfSmall(file);
      if (bytes === undefined) continue;
      const rel = relative(env.dir, file);
      scanner.scan(`deployment ${rel}`, bytes, secretFiles.get(rel) ?? new Set());
    }
    // Whatever appeared in the system temp directory meanwhile (other test files' too).
    for (const name of await readdir(tmpdir())) {
      if (systemTmpBefore.has(name)) continue;
      for (const file of (await filesIn(join(tmpdir(), name), 4)).slice(0, 2_000)) {
        const bytes = await readIfSmall(file, 1024 * 1024);
        if (bytes !== undefined) scanner.scan(`system temp ${relative(tmpdir(), file)}`, bytes);
      }
    }

    // Other sessions' temp files come and go: counted apart, so placesScanned is lethe's own.
    const systemTemp = [...scanner.places].filter((p) => p.startsWith('system temp ')).length;
    const placesScanned = scanner.places.size - systemTemp;
    const hits = scanner.hits.length;
    await recordFigures('secrets', {
      placesScanned,
      hits,
      jobs: ran.length,
      secrets: scanner.secrets.length,
      systemTempFiles: systemTemp,
      processes: new Set(pidsSeen).size,
      controls: scanner.expected.length,
    });
    console.log(`sweep secrets (${SIZE}, seed ${SEED}): ${ran.length} jobs, ${scanner.secrets.length} secrets, ${placesScanned} places scanned (and ${systemTemp} files of the system temp directory), ${new Set(pidsSeen).size} processes, ${hits} hits`);

    expect(ran.length).toBe(SIZE === 'full' ? jobs.length + 1 : FAST.size);
    expect(scanner.hits, 'secrets found where they do not belong').toEqual([]);
    // The controls: the scan does find the secrets where they belong, so it is looking.
    const controls = new Set(scanner.expected.map((h) => h.secret));
    for (const name of ['master identity', 'backup signing key', 'lifecycle signing key', 'daemon token', 'webhook HMAC key', 'S3 secret access key', 'chat database password', 'vault database password']) {
      expect(controls.has(name), `control: ${name} found where it belongs`).toBe(true);
    }
    // The log was on below its default (warn), so there was something to leak.
    expect(outputs.get('backup')?.stderr).toMatch(/"level":30,.*"msg":"backup complete"/);
  }, SIZE === 'full' ? 600_000 : 240_000);

  async function scanVault(url: string, label: string): Promise<void> {
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    try {
      const { rows } = await client.query<{ t: string }>("SELECT tablename AS t FROM pg_tables WHERE schemaname = 'lethe' ORDER BY 1");
      expect(rows.length).toBeGreaterThan(5);
      for (const { t } of rows) {
        const dump = await client.query<{ j: string }>(`SELECT row_to_json(x)::text AS j FROM lethe.${client.escapeIdentifier(t)} x`);
        scanner.scan(`${label} table ${t}`, dump.rows.map((r) => r.j).join('\n'));
      }
    } finally {
      await client.end();
    }
  }

  /**
   * The daemon for a few seconds: a scheduled backup against the chat store with a wrong
   * (sentinel) password fails, the job_failed alert is signed with the webhook key and
   * delivered; the status page and metrics are read with the bearer token.
   */
  async function daemonRun(): Promise<void> {
    const daemonConfig = await env.writeConfig('sweep-daemon.yaml', {
      ...raw,
      chatStore: { ...(env.raw['chatStore'] as Record<string, unknown>), database: { url: dbUrl(env.chat.url, roles.chat, 'WRONG_DB_PASSWORD') }, mapping: 'builtin' },
      daemon: { listen: '127.0.0.1:0', token: { file: 'daemon.token' }, schedules: { backup: '*/2 * * * * *' } },
      alerts: { webhooks: [{ url: receiver.url, secret: { file: 'webhook.secret' }, events: ['job_failed'], maxAttempts: 2 }] },
    });
    const daemon = startDaemon(env, daemonConfig, { ...given, TMPDIR: tmp, WRONG_DB_PASSWORD: secret.wrongPassword });
    const pages: string[] = [];
    const exercise = (async () => {
      const base = await daemon.url;
      await waitFor('a job_failed alert', () => Promise.resolve(receiver.deliveries.find((d) => d.headers['x-lethe-event'] === 'job_failed')), 60_000);
      for (const path of ['/', '/metrics', '/readyz']) {
        const response = await fetch(new URL(path, base), { headers: { authorization: `Bearer ${secret.token}` } });
        const headers: string[] = [];
        response.headers.forEach((value, name) => headers.push(`${name}: ${value}`));
        pages.push(`${path} ${response.status}\n${headers.join('\n')}\n${await response.text()}`);
      }
      const unauthorised = await fetch(new URL('/metrics', base), { headers: { authorization: `Bearer ${secret.token.slice(0, -1)}` } });
      pages.push(`unauthorised ${unauthorised.status}\n${await unauthorised.text()}`);
      expect(unauthorised.status).toBe(401);
      daemon.child.kill('SIGTERM');
    })();
    const result = await watched('daemon', daemon.child, ['wrong database password'], exercise.catch(() => daemon.child.kill('SIGTERM')));
    await exercise;
    expect(result.code, daemon.stderr()).toBe(0);
    for (const [i, page] of pages.entries()) scanner.scan(`daemon HTTP response ${i}`, page);
    const failed = receiver.deliveries.filter((d) => d.headers['x-lethe-event'] === 'job_failed');
    expect(failed.length).toBeGreaterThan(0);
    for (const [i, d] of receiver.deliveries.entries()) {
      // Signed with the sentinel key: the scan below is of bodies that key really signed.
      const signature = d.headers['x-lethe-signature'];
      expect(verifyAlertSignature(secret.webhook, typeof signature === 'string' ? signature : undefined, d.body, 600)).toBe(true);
      scanner.scan(`webhook delivery ${i}`, `${JSON.stringify(d.headers)}\n${d.body}`);
    }
    // The failure the alert reports is the one planted.
    expect(failed.map((d) => d.body).join('\n')).toMatch(/password authentication failed/);
  }
});
