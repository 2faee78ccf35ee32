import { randomBytes } from 'node:crypto';
import { chmod, mkdir, writeFile } from 'node:fs/promises';
import { isAbsolute, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { loadConfig, logLevelOverride } from '../config/index.ts';
import { ExitCode } from '../errors/index.ts';
import { Runtime } from '../jobs/runtime.ts';
import { backup, initialize, verify } from '../jobs/tasks.ts';
import { createLogger, humanLogDestination } from '../log/index.ts';
import type { BackupProgress, BackupResult } from '../snapshot/index.ts';
import { addMessages, demoSample, seedChatStore, type Scale } from '../store/index.ts';
import { freePort, portIsFree } from '../util/net.ts';
import { pgClientConfig } from '../tls/index.ts';
import type { Command, CommandContext } from './commands.ts';
import { backupUpdate, loadUpdate, seedUpdate } from './job-progress.ts';
import { parseScale, seedFilesDir } from './cmd-seed.ts';
import { actorName, bytes, duration, stringOpt } from './format.ts';

const DEFAULT_PORT = 54329;

/** Messages added between the demo's two backups, per scale. */
const ADDED_MESSAGES: Readonly<Record<Scale, number>> = { small: 300, medium: 3000, large: 20000 };

function demoConfig(port: number): string {
  return `# Written by \`lethe demo\`. Every lethe command works on the demo with
#   ./bin/lethe.js <command> --config <this directory>/lethe.yaml   (from the lethe checkout)
# The embedded PostgreSQL is started when a command needs it. Paths are relative
# to this file. See config/lethe.example.yaml for every setting.
embedded:
  dataDir: pg
  port: ${port}
  passwordFile: pg-password
chatStore:
  database:
    embeddedDatabase: chat
  mapping: builtin
  # The chat service's own object store: the reference store's \`files\` rows hold keys into
  # it, and lethe backs up those bytes with the rows (it only reads here). A real service
  # names its directory or s3://bucket/prefix with read-only credentials (docs/mapping.md).
  blobStores:
    files:
      url: chat-files
vault:
  database:
    embeddedDatabase: lethe_vault
storage:
  type: filesystem
  path: objects
masterKey:
  file: master.key
# Each job signs with its own key; the vault keeps only the public halves. Init writes
# backup-signing.key.pub too: disaster recovery checks manifests with it.
signingKeys:
  backup:
    file: backup-signing.key
  lifecycle:
    file: lifecycle-signing.key
# Retention to try \`lethe lifecycle plan\` on: the demo's history is two years long, so
# a year of message months is already due. Nothing is destroyed until you run
# \`lethe lifecycle apply\`.
retention:
  classes:
    messages: 365d
    attachments: 365d
  snapshots:
    keepLast: 10
  graceWindowDays: 7
# \`lethe daemon --config <this file>\` runs these jobs on their schedules and serves a
# status page, /metrics, /healthz and /readyz on the address below (docs/operations.md).
daemon:
  listen: "127.0.0.1:9187"
  objectives: { rpoMinutes: 90, rtoMinutes: 10 }
  schedules:
    backup: "*/30 * * * *"
    verify: "10 * * * *"
    verifyOlder: "40 */6 * * *"
    vaultBackup: "20 3 * * *"
# A demo only: deletion requests and legal holds accept a typed --actor NAME here. A real
# deployment leaves this out (false), so each act carries an enrolled person's SSH
# signature (lethe init --enrol NAME --ssh-key FILE.pub; docs/lifecycle.md).
approvals:
  allowUnsigned: true
# Commands print what needs your attention; the log (JSON lines, stderr) only errors here.
log:
  level: error
`;
}

/**
 * How to run this lethe from the current directory: `./bin/lethe.js` in the checkout, else
 * the script's absolute path. Never through npx, which resolves a package named lethe (the
 * registry's, or a copy in its cache), which fails offline and when two runs race.
 */
function cliCommand(): string {
  const script = fileURLToPath(new URL('../../../bin/lethe.js', import.meta.url));
  const rel = relative(process.cwd(), script);
  return rel.startsWith('..') || isAbsolute(rel) ? script : `./${rel}`;
}

/** Writes the demo's config and embedded-server password, unless a previous demo left them. */
async function prepareDirectory(dir: string): Promise<{ configFile: string; created: boolean }> {
  // The embedded server runs as the `postgres` user when we are root: it must traverse DIR.
  await mkdir(dir, { recursive: true, mode: 0o755 });
  const configFile = join(dir, 'lethe.yaml');
  const port = (await portIsFree(DEFAULT_PORT)) ? DEFAULT_PORT : await freePort();
  try {
    await writeFile(configFile, demoConfig(port), { flag: 'wx', mode: 0o600 });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return { configFile, created: false };
    throw err;
  }
  await writeFile(join(dir, 'pg-password'), `${randomBytes(18).toString('base64url')}\n`, { flag: 'wx', mode: 0o600 });
  await chmod(dir, 0o755);
  return { configFile, created: true };
}

async function isSeeded(url: string): Promise<boolean> {
  const client = new pg.Client(pgClientConfig(url));
  client.on('error', () => undefined);
  await client.connect();
  try {
    const { rows } = await client.query<{ t: string | null }>("SELECT to_regclass('public.messages')::text AS t");
    return rows[0]?.t !== null && rows[0]?.t !== undefined;
  } finally {
    await client.end();
  }
}

function describeBackup(label: string, b: BackupResult): string {
  return (
    `${label}: snapshot ${b.snapshotId}\n` +
    `    ${b.cells} cells: ${b.cellsWritten} encrypted and uploaded, ${b.cellsReused} unchanged and referenced\n` +
    `    ${b.rows} rows, ${bytes(b.bytesPlain)} of data, ${bytes(b.bytesStored)} uploaded, ${b.keysCreated} keys created, ${duration(b.durationMs)}\n` +
    `    ${b.blobs.written + b.blobs.reused} files from chat-files/ (${bytes(b.blobs.bytesPlain)}): ${b.blobs.written} encrypted and uploaded, ${b.blobs.reused} unchanged and referenced` +
    (b.blobs.findings > 0 ? `, ${b.blobs.findings} findings` : '')
  );
}

async function runDemo(ctx: CommandContext): Promise<number> {
  const dir = resolve(stringOpt(ctx.values, 'dir') ?? join('data', 'demo'));
  const scale = parseScale(stringOpt(ctx.values, 'scale'), ['small', 'medium']);
  const say = (text: string): void => {
    if (!ctx.json) ctx.out(text);
  };
  const { configFile, created } = await prepareDirectory(dir);
  say(`lethe demo in ${dir} (${created ? 'new' : 'reusing the previous demo'})`);
  const config = await loadConfig(configFile);
  // Log records as main.ts writes them: readable lines for a person, JSON with --json.
  const level = logLevelOverride() ?? config.log.level;
  const rt = new Runtime(config, ctx.json ? createLogger(level) : createLogger(level, humanLogDestination((text) => process.stderr.write(text))));
  const actor = actorName(undefined);
  try {
    // Seed first: init checks the mapping against the chat store, as backup would.
    const chatUrl = await rt.chatStoreUrl();
    const filesDir = seedFilesDir(config, undefined);
    if (await isSeeded(chatUrl)) {
      say('1. seed: the chat store is already seeded');
    } else {
      const seeded = await seedChatStore(chatUrl, { scale, filesDir, signal: ctx.signal, onProgress: (p) => ctx.progress(seedUpdate(p)) });
      ctx.progress(null);
      const rows = Object.values(seeded.rows).reduce((a, b) => a + b, 0);
      say(
        `1. seed: ${scale} reference chat store, ${rows} rows (${bytes(seeded.bytes)}) in ${duration(seeded.durationMs)}; ` +
          `${seeded.files.count} files (${bytes(seeded.files.bytes)}) outside the database, in ${relative(dir, filesDir) || filesDir}/`,
      );
    }
    const init = await initialize(rt, actor);
    say(`2. init: vault ready, master key ${init.masterKeyFile ?? '(none)'}${init.masterKeyCreated ? ' (new)' : ''}`);
    const onProgress = (p: BackupProgress): void => ctx.progress(backupUpdate(p));
    const first = await backup(rt, { actor, signal: ctx.signal, onProgress });
    ctx.progress(null);
    say(describeBackup('3. backup', first));
    const added = await addMessages(chatUrl, { count: ADDED_MESSAGES[scale], seed: Date.now() % 1_000_000, filesDir, signal: ctx.signal });
    say(`4. ${added.messages} new messages written to the chat store, ${added.files} of them with a file (${bytes(added.fileBytes)})`);
    const second = await backup(rt, { actor, signal: ctx.signal, onProgress });
    ctx.progress(null);
    say(describeBackup('5. backup', second));
    const verified = await verify(rt, { snapshot: second.snapshotId, actor, signal: ctx.signal, onProgress: (p) => ctx.progress(loadUpdate('verify', p)) });
    ctx.progress(null);
    say(
      `6. verify: ${verified.ok ? 'OK' : 'FAILED'}, ${verified.cellsVerified}/${verified.cells} cells restored into a scratch database and checked, ` +
        `${verified.rows} rows, ${Object.values(verified.blobsByTable).reduce((a, n) => a + n, 0)} files checked, ${duration(verified.durationMs)}`,
    );
    for (const f of verified.findings) say(`    ${f.code} ${f.subject}: ${f.problem}`);
    if (verified.warnings.length > 0) {
      say("    note: the demo's scratch database is on the embedded server, as its superuser; in production give verify a role with CREATEDB only (runbooks/restore-role.md)");
    }
    const sample = await demoSample(chatUrl);
    if (ctx.json) {
      ctx.out(JSON.stringify({ dir, config: configFile, backups: [first, second], verify: verified, sample }));
    } else {
      const lethe = cliCommand();
      say(`\nTry it yourself (the embedded PostgreSQL starts as needed):`);
      say(`  ${lethe} snapshots --config ${configFile}`);
      say(`  ${lethe} verify --snapshot ${first.snapshotId} --config ${configFile}`);
      say(`  ${lethe} audit verify --config ${configFile}`);
      say(
        `  PGPASSWORD=$(cat ${join(dir, 'pg-password')}) ${lethe} restore --snapshot latest --target postgres://postgres@127.0.0.1:${config.embedded?.port ?? DEFAULT_PORT}/chat ` +
          `--schema restored --blob-target file://${join(dir, 'restored-files')} --config ${configFile}   # into a new schema of the demo's chat database, files into restored-files/`,
      );
      say(`  ${lethe} lifecycle plan --config ${configFile}          # what retention makes due (changes nothing)`);
      say(`  ${lethe} daemon --config ${configFile}                 # the jobs on schedules; status page at http://127.0.0.1:9187/`);
      say(`A user with messages in several months: tenant ${sample.tenant}, user ${sample.user}, conversation ${sample.conversation}`);
      say(`  ${lethe} hold place --case CASE-1 --tenant ${sample.tenant} --user ${sample.user} --reason "litigation" --actor legal --config ${configFile}`);
      say(`  ${lethe} erase request --tenant ${sample.tenant} --user ${sample.user} --reason "GDPR Art. 17" --actor dpo-1 --config ${configFile}`);
    }
    return verified.ok ? ExitCode.OK : ExitCode.CHECK_FAILED;
  } finally {
    await rt.close();
  }
}

export const demoCommand: Command = {
  name: 'demo',
  usage: 'demo [--dir DIR] [--scale small|medium] [--json]',
  options: { dir: { type: 'string' }, scale: { type: 'string' } },
  run: runDemo,
};
