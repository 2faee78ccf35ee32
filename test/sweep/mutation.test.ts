// Sweep `mutation`: seeded mutations of every kind of object lethe keeps in its bucket
// (manifests, segments, packs, audit entries, tombstones, certificates, vault backups): bit
// flips, truncation, deletion, an extra object, and rollback to an older, validly signed
// object of the same kind. Each one must be found by `lethe verify`, `lethe audit verify` or
// `lethe vault restore`; none may crash a detector; none may restore a wrong row unnoticed.
// docs/reliability.md, "Mutation sweep".
import { createHash } from 'node:crypto';
import { cp, mkdir, readFile, rm, stat, truncate, unlink, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/config/index.ts';
import { FileMasterKeys } from '../../src/keys/index.ts';
import { isLetheError, ErrorCode } from '../../src/errors/index.ts';
import { backup, initialize, lifecycleApply, restore, vaultBackup, verify } from '../../src/jobs/tasks.ts';
import { checkBucket } from '../../src/lifecycle/bucket-check.ts';
import { addMessages } from '../../src/store/add-messages.ts';
import { listVaultBackups, restoreVaultBackup } from '../../src/vaultbackup/index.ts';
import {
  createLetheEnv,
  expectExit,
  filesUnder,
  jsonOut,
  tableContents,
  type CliResult,
  type LetheEnv,
  type TableContent,
  type TestDatabase,
} from '../helpers/lethe-env.ts';
import { recordFigures, seededRandom, sweepSeed, sweepSize } from '../helpers/sweep.ts';
import { createTinyChatTemplate } from '../integration/e2e/tiny-chat-store.ts';

const seed = sweepSeed();
const size = sweepSize();
const MUTATIONS = size === 'full' ? 1000 : 40;
/** Every this-many mutations also run every detector as the real CLI (crashes show there). */
const CLI_EVERY = size === 'full' ? 10 : 20;

const KINDS = ['manifest', 'segment', 'pack', 'audit', 'tombstone', 'certificate', 'vault'] as const;
type Kind = (typeof KINDS)[number];
const MUTATION_KINDS = ['bitflip', 'truncate', 'delete', 'extra', 'rollback'] as const;
type MutationKind = (typeof MUTATION_KINDS)[number];

const PREFIX: Readonly<Record<Kind, string>> = {
  manifest: 'snapshots/',
  segment: 'segments/',
  pack: 'packs/',
  audit: 'audit/',
  tombstone: 'destructions/',
  certificate: 'certificates/',
  vault: 'vault/',
};
/** Kinds whose damage can change the rows a restore gives (the others are evidence). */
const DATA_KINDS: ReadonlySet<Kind> = new Set(['manifest', 'segment', 'pack', 'vault', 'tombstone']);
/** The messages class is kept 365 days: applied at NOW, lifecycle shreds the tiny store's 2026 months. */
const NOW = new Date('2027-05-15T00:00:00Z');

const hex = (rand: () => number, n: number): string =>
  Array.from({ length: n }, () => Math.floor(rand() * 16).toString(16)).join('');
const pick = <T>(rand: () => number, items: readonly T[]): T => {
  const item = items[Math.floor(rand() * items.length)];
  if (item === undefined) throw new Error('pick from an empty list');
  return item;
};
const sha = (bytes: Uint8Array): string => createHash('sha256').update(bytes).digest('hex');

interface Outcome {
  readonly detectedBy: string[];
  readonly crashes: string[];
}

/** A detector's run in process: a finding, a LetheError (detected) or anything else (a crash). */
async function inProcess(name: string, out: Outcome, run: () => Promise<boolean>): Promise<void> {
  const started = Date.now();
  const kind = name.split(' ').slice(0, 2).join(' ').replace(/ \d{8}T.*/, '');
  try {
    if (!(await run())) out.detectedBy.push(name);
  } catch (err) {
    if (isLetheError(err) && err.code !== ErrorCode.INTERNAL) out.detectedBy.push(`${name} (${err.code})`);
    else out.crashes.push(`${name}: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
  } finally {
    spent.set(kind, (spent.get(kind) ?? 0) + Date.now() - started);
  }
}

/** A CLI detector: exit 0 clean, 2/3 with a message detected; 1 "unexpected", a stack or a signal a crash. */
function judgeCli(name: string, out: Outcome, result: CliResult): void {
  const text = `${result.stdout}${result.stderr}`;
  if (result.signal !== null || /unexpected error|\n\s+at .+:\d+:\d+\)?\n/.test(text) || result.code === null) {
    out.crashes.push(`${name}: exit ${String(result.code)} signal ${String(result.signal)}\n${text}`);
  } else if (result.code === 1 && !operatorMessage(result)) {
    out.crashes.push(`${name}: exit 1 without an operator message\n${text}`);
  } else if (result.code !== 0) {
    out.detectedBy.push(`${name} (cli exit ${result.code})`);
  } else if (/ has no record of /.test(result.stderr)) {
    // audit verify reports objects the vault does not know as warnings, exit 0.
    out.detectedBy.push(`${name} (reported unrecorded)`);
  }
}

/** True when a failed command said what failed: `lethe: …` on stderr, or a coded error with --json. */
function operatorMessage(result: CliResult): boolean {
  if (/^lethe: (?!unexpected)/m.test(result.stderr)) return true;
  const code = /^\{"error":\{"code":"([A-Z_]+)"/m.exec(result.stdout)?.[1];
  return code !== undefined && code !== ErrorCode.INTERNAL;
}

/** Milliseconds spent per detector (LETHE_SWEEP_TRACE=1 prints them). */
const spent = new Map<string, number>();

describe(`mutation sweep (${size}, seed ${seed})`, () => {
  let template: TestDatabase;
  let env: LetheEnv;
  let restoreDb: TestDatabase;
  let store: string;
  let pristine: string;
  /** Objects of every kind as earlier stages left them: the sources of rollbacks. */
  let history: string;
  /** Every object key seen, with the fixture stage that first wrote it and its size then. */
  const historyKeys = new Map<string, { stage: number; size: number }>();
  let snapshots: string[] = [];
  /** Rows of each snapshot as a restore of the pristine bucket gives them. */
  const expected = new Map<string, Record<string, TableContent>>();
  /** Snapshots that list each pack and segment object. */
  const refs = new Map<string, readonly string[]>();
  let vaultBackups: string[] = [];
  let masterIdentity: string[];
  const figures = {
    mutations: 0,
    detected: 0,
    crashes: 0,
    silent: 0,
    cliRuns: 0,
    byKind: {} as Record<string, { mutations: number; detected: number }>,
    byMutation: {} as Record<string, { mutations: number; detected: number }>,
  };
  const misses: string[] = [];
  const crashes: string[] = [];

  let stages = 0;
  const keep = async (): Promise<void> => {
    const stage = stages++;
    for (const key of await filesUnder(store)) {
      if (historyKeys.has(key) || key.startsWith('.')) continue;
      historyKeys.set(key, { stage, size: (await stat(join(store, key))).size });
      await mkdir(dirname(join(history, key)), { recursive: true });
      await cp(join(store, key), join(history, key));
    }
  };
  /** The config the erasures run with: typed names allowed where the config knows signed approvals. */
  let eraseConfig: string;
  const erase = async (tenant: string, user: string): Promise<void> => {
    const req = await env.cli(['erase', 'request', '--config', eraseConfig, '--tenant', tenant, '--user', user, '--reason', 'sweep', '--actor', 'alice', '--json']);
    expectExit(req, 0);
    const { id } = jsonOut(req) as { id: string };
    expectExit(await env.cli(['erase', 'approve', id, '--config', eraseConfig, '--actor', 'bob', '--json']), 0);
  };

  beforeAll(async () => {
    const fixtureStarted = Date.now();
    template = await createTinyChatTemplate('mut_tpl');
    env = await createLetheEnv({ template: template.name, config: { retention: { classes: { messages: '365d' } } } });
    restoreDb = await env.database('mut_restore');
    store = env.storePath ?? '';
    history = join(env.dir, 'history');
    pristine = join(env.dir, 'pristine');
    const typedNames = { ...env.raw, approvals: { allowUnsigned: true } };
    let knowsApprovals = true;
    try {
      parseConfig(typedNames, env.dir);
    } catch {
      knowsApprovals = false;
    }
    eraseConfig = knowsApprovals ? await env.writeConfig('erase.yaml', typedNames) : env.configPath;
    await initialize(env.rt, 'sweep');
    await backup(env.rt, { actor: 'sweep' });
    await keep();
    await addMessages(env.chat.url, { count: 60, seed: 11, at: new Date('2027-04-20T00:00:00Z') });
    await backup(env.rt, { actor: 'sweep' });
    await vaultBackup(env.rt, { actor: 'sweep' });
    await keep();
    await erase('3', '22');
    await backup(env.rt, { actor: 'sweep' });
    await keep();
    await erase('4', '31');
    await lifecycleApply(env.rt, { actor: 'sweep', now: () => NOW });
    await vaultBackup(env.rt, { actor: 'sweep' });
    await addMessages(env.chat.url, { count: 20, seed: 12, at: new Date('2027-05-01T00:00:00Z') });
    // The last job exports every audit entry so far (backup does), so the bucket is complete.
    await backup(env.rt, { actor: 'sweep' });
    await keep();
    await cp(store, pristine, { recursive: true });

    const vault = await env.rt.vault();
    snapshots = (await vault.listSnapshots()).map((s) => s.id).sort();
    for (const r of await vault.lifecycleObjectRefs()) refs.set(r.key, r.snapshots);
    vaultBackups = (await listVaultBackups(await env.rt.store())).map((b) => b.key).sort();
    // Every epoch's key: the apply above rotated the master away from the erased keys' epoch.
    masterIdentity = await new FileMasterKeys(env.masterKeyFile).identities();
    for (const id of snapshots) {
      const db = await env.database('mut_expect');
      await restore(env.rt, { snapshot: id, targetUrl: db.url, replace: false, blobTarget: env.blobTarget(), actor: 'sweep' });
      expected.set(id, await tableContents(db.url));
      await db.drop();
    }
    spent.set('fixture', Date.now() - fixtureStarted);
  }, 300_000);

  afterAll(async () => {
    await recordFigures('mutation', {
      mutations: figures.mutations,
      detected: figures.detected,
      crashes: figures.crashes,
      silent: figures.silent,
      cliRuns: figures.cliRuns,
      ...Object.fromEntries(
        Object.entries({ ...figures.byKind, ...figures.byMutation }).flatMap(([k, v]) => [
          [`mutations.${k}`, v.mutations],
          [`detected.${k}`, v.detected],
        ]),
      ),
    });
    await env.cleanup();
    await template.drop();
  });

  it('builds a fixture with at least two objects of every kind, and the detectors pass it', async () => {
    const files = await filesUnder(store);
    for (const kind of KINDS) {
      expect(files.filter((f) => f.startsWith(PREFIX[kind])).length, kind).toBeGreaterThanOrEqual(2);
    }
    expect(snapshots.length).toBe(4);
    const bucket = await checkBucket(await env.rt.vault(), await env.rt.store());
    expect(bucket.findings).toEqual([]);
    const audit = await env.cli(['audit', 'verify', '--config', env.configPath, '--json']);
    expectExit(audit, 0);
    for (const id of [snapshots[0] ?? '', 'latest']) {
      const result = await verify(env.rt, { snapshot: id, actor: 'sweep' });
      expect(result.ok, JSON.stringify(result.findings)).toBe(true);
    }
  }, 120_000);

  it(`detects every one of ${MUTATIONS} seeded mutations, with no crash and no silent wrong row`, async () => {
    const rand = seededRandom(seed);
    // Object names and ciphertexts are random in every run; objects are taken by rank (the
    // stage that wrote them, then size), so a seed picks the same kind of object each time.
    const rank = (a: string, b: string): number => {
      const x = historyKeys.get(a) ?? { stage: 99, size: 0 };
      const y = historyKeys.get(b) ?? { stage: 99, size: 0 };
      return x.stage - y.stage || x.size - y.size || (a < b ? -1 : a > b ? 1 : 0);
    };
    const pool = [...historyKeys.keys()].sort(rank);
    const rt = env.rt;
    const vault = await rt.vault();
    const objectStore = await rt.store();
    const signer = await rt.signer('lifecycle');
    let schemaN = 0;

    for (let i = 0; i < MUTATIONS; i += 1) {
      // Every (kind, mutation) pair early, whatever the size; then seeded at random.
      const pair = i < KINDS.length * MUTATION_KINDS.length;
      const kind: Kind = pair ? (KINDS[i % KINDS.length] ?? 'pack') : pick(rand, KINDS);
      const mutation: MutationKind = pair ? (MUTATION_KINDS[Math.floor(i / KINDS.length)] ?? 'delete') : pick(rand, MUTATION_KINDS);
      await rm(store, { recursive: true, force: true });
      await cp(pristine, store, { recursive: true });
      const current = (await filesUnder(store)).filter((f) => f.startsWith(PREFIX[kind])).sort(rank);
      let target = pick(rand, current);
      // A vault backup's signature is mutated a quarter of the time, the backup itself otherwise.
      if (kind === 'vault' && target.endsWith('.sig') === rand() < 0.75) target = target.endsWith('.sig') ? target.slice(0, -4) : `${target}.sig`;
      const path = join(store, target);
      let what: string;
      switch (mutation) {
        case 'bitflip': {
          const bytes = await readFile(path);
          const at = Math.floor(rand() * bytes.length);
          const bit = Math.floor(rand() * 8);
          bytes[at] = (bytes[at] ?? 0) ^ (1 << bit);
          await writeFile(path, bytes);
          what = `bit ${bit} of byte ${at}/${bytes.length}`;
          break;
        }
        case 'truncate': {
          const length = Math.floor(rand() * (await stat(path)).size);
          await truncate(path, length);
          what = `to ${length} bytes`;
          break;
        }
        case 'delete':
          await unlink(path);
          what = 'deleted';
          break;
        case 'extra': {
          const name = extraName(kind, rand);
          const body = rand() < 0.5 ? await readFile(path) : Buffer.from(hex(rand, 64 + Math.floor(rand() * 512)), 'hex');
          await mkdir(dirname(join(store, name)), { recursive: true });
          await writeFile(join(store, name), body);
          if (kind === 'vault' && rand() < 0.5) await writeFile(join(store, `${name}.sig`), await readFile(join(store, `${target.replace(/\.sig$/, '')}.sig`)));
          what = `extra ${name} (${body.length} bytes)`;
          target = name;
          break;
        }
        case 'rollback': {
          const mine = await readFile(path);
          const older = pool.filter((k) => k.startsWith(PREFIX[kind]) && k !== target && k.endsWith('.sig') === target.endsWith('.sig'));
          const sources: string[] = [];
          for (const k of older) if (sha(await readFile(join(history, k))) !== sha(mine)) sources.push(k);
          const source = pick(rand, sources);
          await writeFile(path, await readFile(join(history, source)));
          // A vault backup goes back with its own signature, as one pair.
          if (kind === 'vault' && !target.endsWith('.sig')) await writeFile(`${path}.sig`, await readFile(join(history, `${source}.sig`)));
          what = `replaced by ${source}`;
          break;
        }
      }
      const label = `#${i} ${kind} ${mutation} ${target}: ${what}`;

      const out: Outcome = { detectedBy: [], crashes: [] };
      const toVerify = new Set<string>([snapshots.at(-1) ?? 'latest']);
      if (kind === 'manifest') toVerify.add(/snapshots\/(.+)\.json\.gz$/.exec(target)?.[1] ?? 'latest');
      // Every snapshot that lists a pack or segment: the cells a snapshot lists in a pack may
      // be ones no later snapshot lists (left out as shredded, or changed since).
      for (const s of refs.get(target) ?? []) toVerify.add(s);
      const backupKey =
        kind === 'vault' && /^vault\/\d{8}T\d{9}Z\.age(\.sig)?$/.test(target)
          ? target.replace(/\.sig$/, '')
          : (vaultBackups[0] ?? '');
      const viaCli = i % CLI_EVERY === 0;

      // Independent detectors, run side by side. verify reads only snapshots' objects: at fast
      // size it runs for those kinds alone (at full size for every mutation).
      const detectors: Promise<void>[] = [];
      const readsSnapshots = kind === 'manifest' || kind === 'segment' || kind === 'pack';
      if (readsSnapshots || size === 'full') {
        for (const snapshot of toVerify) {
          detectors.push(inProcess(`verify ${snapshot}`, out, async () => (await verify(rt, { snapshot, actor: 'sweep' })).ok));
        }
      }
      detectors.push(
        inProcess('audit verify', out, async () => {
          const bucket = await checkBucket(vault, objectStore);
          return (await vault.verifyAuditChain()).ok && bucket.ok && bucket.unrecorded.length === 0;
        }),
      );
      if (kind === 'vault' || kind === 'audit' || kind === 'tombstone') {
        schemaN += 1;
        const schema = `mut_${schemaN}`;
        detectors.push(
          inProcess('vault restore', out, async () => {
            const result = await restoreVaultBackup({ vaultUrl: restoreDb.url, schema, store: objectStore, masterIdentity, key: backupKey, actor: 'sweep', signer });
            return result.ignoredTombstones.length === 0;
          }),
        );
      }
      await Promise.all(detectors);
      if (viaCli) {
        const cliStarted = Date.now();
        figures.cliRuns += 1;
        for (const snapshot of toVerify) judgeCli(`cli verify ${snapshot}`, out, await env.cli(['verify', '--config', env.configPath, '--snapshot', snapshot, '--json']));
        judgeCli('cli audit verify', out, await env.cli(['audit', 'verify', '--config', env.configPath, '--json']));
        if (kind === 'vault' || kind === 'audit' || kind === 'tombstone') {
          schemaN += 1;
          const config = await env.writeConfig('restore.yaml', { ...env.raw, vault: { database: { url: restoreDb.url }, schema: `mut_${schemaN}` } });
          judgeCli('cli vault restore', out, await env.cli(['vault', 'restore', '--config', config, '--from', backupKey, '--actor', 'sweep', '--json']));
        }
        spent.set('cli', (spent.get('cli') ?? 0) + Date.now() - cliStarted);
      }

      const detected = out.detectedBy.length > 0;
      let silent = false;
      if (!detected && DATA_KINDS.has(kind)) {
        // Nobody complained: does a restore give other rows than the pristine bucket's?
        silent = kind === 'vault' || kind === 'tombstone';
        for (const snapshot of toVerify) {
          const id = snapshot === 'latest' ? (snapshots.at(-1) ?? '') : snapshot;
          const db = await env.database('mut_silent');
          try {
            await restore(rt, { snapshot: id, targetUrl: db.url, replace: false, blobTarget: env.blobTarget(), actor: 'sweep' });
            if (JSON.stringify(await tableContents(db.url)) !== JSON.stringify(expected.get(id))) silent = true;
          } catch {
            // A restore that refuses is not a silent wrong row.
          }
          await db.drop();
        }
      }
      if (process.env['LETHE_SWEEP_TRACE'] === '1') console.log(`${label} [refs ${JSON.stringify(refs.get(target) ?? null)}, verified ${[...toVerify].join(' ')}] -> ${out.detectedBy.join('; ') || 'UNDETECTED'}`);
      figures.mutations += 1;
      if (detected) figures.detected += 1;
      else misses.push(label);
      if (out.crashes.length > 0) {
        figures.crashes += 1;
        crashes.push(`${label}\n${out.crashes.join('\n')}`);
      }
      if (silent) figures.silent += 1;
      for (const [map, name] of [[figures.byKind, kind], [figures.byMutation, mutation]] as const) {
        const row = (map[name] ??= { mutations: 0, detected: 0 });
        row.mutations += 1;
        if (detected) row.detected += 1;
      }
    }
    await rm(store, { recursive: true, force: true });
    await cp(pristine, store, { recursive: true });
    if (process.env['LETHE_SWEEP_TRACE'] === '1') console.log(`time per detector (ms): ${JSON.stringify(Object.fromEntries(spent))}`);

    expect(misses, `undetected (seed ${seed})`).toEqual([]);
    expect(crashes, `crashes (seed ${seed})`).toEqual([]);
    expect(figures.silent).toBe(0);
    expect(figures.detected).toBe(figures.mutations);
    expect(figures.mutations).toBe(MUTATIONS);
  }, size === 'full' ? 7_200_000 : 300_000);
});

/** A plausible name for an extra object of `kind`, unused by lethe. */
function extraName(kind: Kind, rand: () => number): string {
  switch (kind) {
    case 'manifest':
      return `snapshots/20270101T000000Z-${hex(rand, 6)}.json.gz`;
    case 'segment': {
      const name = hex(rand, 32);
      return `segments/${name.slice(0, 2)}/${name}.json.gz`;
    }
    case 'pack': {
      const name = hex(rand, 32);
      return `packs/${name.slice(0, 2)}/${name}`;
    }
    case 'audit':
      return `audit/${String(900_000 + Math.floor(rand() * 1000)).padStart(12, '0')}.json`;
    case 'tombstone':
      return `destructions/${hex(rand, 64)}.json`;
    case 'certificate':
      return `certificates/er-${hex(rand, 16)}.json`;
    case 'vault':
      return `vault/2027${String(1 + Math.floor(rand() * 9)).padStart(2, '0')}01T000000000Z.age`;
  }
}
