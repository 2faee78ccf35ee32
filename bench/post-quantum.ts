import { randomBytes } from 'node:crypto';
import { readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parse, stringify } from 'yaml';
import {
  generateRawKeyPair,
  hybridTupleKey,
  mlkemDecapsulate,
  mlkemEncapsulate,
  mlkemKeyPair,
  newEphemeral,
  sharedSecret,
  tupleKey,
} from '../src/crypto/index.ts';
import { checkpoint, dropRun, prepareRun, type BenchServer, type SeededTemplate } from './fixture.ts';
import { time } from './per-cell.ts';
import { BackupOutput, runLethe, VerifyOutput } from './lethe-phase.ts';
import type { ProcessStats } from './measured-process.ts';

/**
 * What `keys.postQuantum` costs (docs/format.md, "Hybrid encapsulation"): the ML-KEM-768
 * operations per dimension key beside the X25519 one they are added to, and a full backup and
 * a verify of it at the bench's scale with the option off and on, on fresh vaults cloned from
 * the same seeded store, as ratios. See docs/benchmarks.md.
 */

export interface PostQuantumKeyRow {
  readonly name: string;
  /** Median over rounds, microseconds per call. */
  readonly microseconds: number;
}

export interface PostQuantumStep {
  readonly off: ProcessStats;
  readonly on: ProcessStats;
  /** on.wallMs / off.wallMs */
  readonly wallRatio: number;
  /** on.peakRssBytes / off.peakRssBytes */
  readonly rssRatio: number;
}

export interface PostQuantumResult {
  readonly keys: readonly PostQuantumKeyRow[];
  /** Public-key work per dimension key and snapshot, hybrid over X25519 alone (encapsulation side). */
  readonly perDimensionKeyRatio: number;
  readonly backup: PostQuantumStep | { readonly error: string } | null;
  readonly verify: PostQuantumStep | { readonly error: string } | null;
  /** Bytes the backups wrote to the bucket (manifests hold the ML-KEM ciphertexts), on / off. */
  readonly storedRatio: number | null;
}

/** The per-dimension-key microbenchmark: no database, a second or two. */
export function measurePostQuantumKeys(msPerRound = 100): Pick<PostQuantumResult, 'keys' | 'perDimensionKeyRatio'> {
  const ephemeral = newEphemeral();
  const dimension = generateRawKeyPair();
  const seed = new Uint8Array(randomBytes(64));
  const pair = mlkemKeyPair(seed);
  const { ciphertext } = mlkemEncapsulate(pair.publicKey, 'bench');
  const ids = ['period:t/messages/2026-03', 'user:t/u', 'conversation:t/c', 'tenant:t'];
  const z = sharedSecret(ephemeral.privateKey, dimension.publicKey, 'bench');
  const parts = ids.map(() => ({ z, k: z, ciphertext }));
  const rows: [string, () => unknown][] = [
    ['X25519 shared secret (per dimension key and snapshot, both kems)', () => sharedSecret(ephemeral.privateKey, dimension.publicKey, 'bench')],
    ['ML-KEM-768 key generation from the seed (new key; every unwrap on the reading side)', () => mlkemKeyPair(seed)],
    ['ML-KEM-768 encapsulation (per dimension key and snapshot, backup)', () => mlkemEncapsulate(pair.publicKey, 'bench')],
    ['ML-KEM-768 decapsulation (per dimension key and encapsulation, verify/restore)', () => mlkemDecapsulate(ciphertext, pair.secretKey, 'bench')],
    ['tuple key extract, x25519, 4 dimension keys', () => tupleKey([z, z, z, z], ephemeral.publicKey, ids)],
    ['tuple key extract, x25519-mlkem768, 4 dimension keys', () => hybridTupleKey(parts, ephemeral.publicKey, ids)],
  ];
  const keys = rows.map(([name, op]) => ({ name, microseconds: time(op, msPerRound, { warmup: 20, batch: 1 }) }));
  const us = (i: number): number => keys[i]?.microseconds ?? Number.NaN;
  return { keys, perDimensionKeyRatio: (us(0) + us(2)) / us(0) };
}

/**
 * A full backup and a verify of it with the option off, then on, each on a fresh clone of the
 * seeded store with a fresh vault (`lethe init` made with the option as configured). Failures
 * are reported in the result, not thrown, so the main measurements are never lost to them.
 */
export async function measurePostQuantum(
  server: BenchServer,
  workDir: string,
  template: SeededTemplate,
  options: { useGnuTime: boolean; nodeFlags: readonly string[]; signal: AbortSignal; say: (text: string) => void },
): Promise<PostQuantumResult> {
  const keys = measurePostQuantumKeys();
  const runs: { postQuantum: boolean; backup: ProcessStats; verify: ProcessStats; stored: number }[] = [];
  try {
    for (const postQuantum of [false, true]) {
      const setup = await prepareRun(server, workDir, template, postQuantum ? 902 : 901, options.signal);
      try {
        const raw = parse(await readFile(setup.configFile, 'utf8')) as Record<string, unknown>;
        await writeFile(setup.configFile, stringify({ ...raw, keys: { postQuantum } }), { mode: 0o600 });
        const phase = { configFile: setup.configFile, env: setup.env, scratchDir: setup.dir, useGnuTime: options.useGnuTime, nodeFlags: options.nodeFlags, signal: options.signal };
        options.say(`post-quantum ${postQuantum ? 'on' : 'off'}: lethe backup (full)`);
        await checkpoint(server, options.signal);
        const full = await runLethe(['backup'], BackupOutput, phase);
        options.say(`post-quantum ${postQuantum ? 'on' : 'off'}: lethe verify`);
        const verify = await runLethe(['verify', '--snapshot', full.output.snapshotId], VerifyOutput, phase, [3]);
        if (!verify.output.ok) throw new Error(`verify with postQuantum ${String(postQuantum)} found problems`);
        runs.push({ postQuantum, backup: full.stats, verify: verify.stats, stored: full.output.bytesStored + (await manifestBytes(setup.storageDir)) });
      } finally {
        await dropRun(server, setup).catch(() => undefined);
        await rm(setup.dir, { recursive: true, force: true });
      }
    }
  } catch (err) {
    if (options.signal.aborted) throw err;
    const error = err instanceof Error ? err.message : String(err);
    return { ...keys, backup: { error }, verify: { error }, storedRatio: null };
  }
  const [off, on] = runs;
  if (off === undefined || on === undefined) return { ...keys, backup: null, verify: null, storedRatio: null };
  const step = (a: ProcessStats, b: ProcessStats): PostQuantumStep => ({ off: a, on: b, wallRatio: b.wallMs / a.wallMs, rssRatio: a.peakRssBytes === null || b.peakRssBytes === null ? Number.NaN : b.peakRssBytes / a.peakRssBytes });
  return { ...keys, backup: step(off.backup, on.backup), verify: step(off.verify, on.verify), storedRatio: on.stored / off.stored };
}

/** Bytes of the manifests under `storageDir/snapshots` (where the hybrid ciphertexts are listed). */
async function manifestBytes(storageDir: string): Promise<number> {
  let total = 0;
  const dir = join(storageDir, 'snapshots');
  for (const name of await readdir(dir).catch(() => [] as string[])) total += (await stat(join(dir, name))).size;
  return total;
}

/** The result as text for the bench report. */
export function formatPostQuantum(r: PostQuantumResult): string {
  const lines = ['keys.postQuantum (x25519-mlkem768) cost, per call on one core:'];
  for (const row of r.keys) lines.push(`  ${row.microseconds.toFixed(1).padStart(9)} µs  ${row.name}`);
  lines.push(`  public-key work per dimension key and snapshot (backup side): ${r.perDimensionKeyRatio.toFixed(1)}× X25519 alone`);
  const step = (name: string, s: PostQuantumResult['backup']): void => {
    if (s === null) return;
    if ('error' in s) lines.push(`  ${name}: not measured (${s.error})`);
    else lines.push(`  ${name}: ${(s.off.wallMs / 1000).toFixed(1)} s off, ${(s.on.wallMs / 1000).toFixed(1)} s on: ${s.wallRatio.toFixed(2)}× wall, ${s.rssRatio.toFixed(2)}× peak RSS`);
  };
  step('full backup', r.backup);
  step('verify of it', r.verify);
  if (r.storedRatio !== null) lines.push(`  bytes written (packs + manifests): ${r.storedRatio.toFixed(3)}×`);
  return lines.join('\n');
}
