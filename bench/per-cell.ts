import { createHash, createHmac, randomBytes } from 'node:crypto';
import { cellKey, generateRawKeyPair, newEphemeral, seal, sharedSecret, tupleKey } from '../src/crypto/index.ts';

/**
 * The per-cell cost of a full backup's hot path, measured in this process on one core: each
 * crypto call a new cell pays, alone, and all of them together as the backup does them
 * (keyed digest of the plaintext, cell key, seal, sha256 of the ciphertext for the manifest).
 * The per-snapshot work (one X25519 per dimension key) is listed for scale. See
 * docs/benchmarks.md.
 */

export interface PerCellRow {
  readonly name: string;
  /** Median over rounds, microseconds per call. */
  readonly microseconds: number;
  readonly callsPerSecond: number;
}

export interface PerCellResult {
  /** Plaintext bytes per cell in the measurement (about a medium store's mean). */
  readonly cellBytes: number;
  readonly rows: readonly PerCellRow[];
  /** Cells per second on one core for the whole per-cell crypto path. */
  readonly cellsPerSecondOneCore: number;
}

const ROUNDS = 5;

/**
 * Calls `op` for about `ms` per round, `ROUNDS` rounds; the median microseconds per call.
 * `warmup` calls first; the clock is read every `batch` calls (fewer for slow operations).
 */
export function time(op: () => unknown, ms: number, { warmup = 200, batch = 50 }: { warmup?: number; batch?: number } = {}): number {
  for (let i = 0; i < warmup; i++) op();
  const perRound: number[] = [];
  for (let round = 0; round < ROUNDS; round++) {
    let calls = 0;
    const start = performance.now();
    let now = start;
    while (now - start < ms) {
      for (let i = 0; i < batch; i++) op();
      calls += batch;
      now = performance.now();
    }
    perRound.push(((now - start) * 1000) / calls);
  }
  perRound.sort((a, b) => a - b);
  return perRound[Math.floor(ROUNDS / 2)] ?? Number.NaN;
}

export function measurePerCell(cellBytes = 1000, msPerRound = 100): PerCellResult {
  const plaintext = randomBytes(cellBytes);
  const digestKey = randomBytes(32);
  const prefix = Buffer.from('messages\nid,body\n');
  const ephemeral = newEphemeral();
  const dimensions = Array.from({ length: 4 }, () => generateRawKeyPair().publicKey);
  const ids = ['period:t/messages/2026-03', 'user:t/u', 'conversation:t/c', 'tenant:t'];
  const prk = tupleKey(dimensions.map((d) => sharedSecret(ephemeral.privateKey, d, 'bench')), ephemeral.publicKey, ids);
  const sealed = seal(cellKey(prk, 'c0'), plaintext);
  let n = 0;
  const id = (): string => `t/2026-03/u/c/${(n++).toString(36)}`;

  const rows: [string, () => unknown][] = [
    [`keyed digest: HMAC-SHA-256 of ${cellBytes} B`, () => createHmac('sha256', digestKey).update(prefix).update(plaintext).digest('hex')],
    ['cell key: HMAC-SHA-256 of a 40 B label', () => cellKey(prk, id())],
    [`seal: ChaCha20-Poly1305 of ${cellBytes} B`, () => seal(prk, plaintext)],
    [`SHA-256 of the ${cellBytes + 16} B ciphertext`, () => createHash('sha256').update(sealed).digest('hex')],
    [
      'per cell, all of the above',
      () => {
        createHmac('sha256', digestKey).update(prefix).update(plaintext).digest('hex');
        const out = seal(cellKey(prk, id()), plaintext);
        return createHash('sha256').update(out).digest('hex');
      },
    ],
    ['per dimension key and snapshot: X25519', () => sharedSecret(ephemeral.privateKey, dimensions[0] as Uint8Array, 'bench')],
    ['per tuple and snapshot: tuple key extract', () => tupleKey([prk, prk, prk, prk], ephemeral.publicKey, ids)],
  ];
  const measured = rows.map(([name, op]) => {
    const microseconds = time(op, msPerRound);
    return { name, microseconds, callsPerSecond: 1e6 / microseconds };
  });
  const whole = measured.find((r) => r.name === 'per cell, all of the above');
  return { cellBytes, rows: measured, cellsPerSecondOneCore: whole?.callsPerSecond ?? Number.NaN };
}

export function formatPerCell(result: PerCellResult): string {
  const width = Math.max(...result.rows.map((r) => r.name.length));
  return [
    `per-cell crypto, one core, ${result.cellBytes} B cells (median of ${ROUNDS} rounds):`,
    ...result.rows.map((r) => `  ${r.name.padEnd(width)}  ${r.microseconds.toFixed(2).padStart(7)} µs  ${Math.round(r.callsPerSecond).toLocaleString('en-US').padStart(10)}/s`),
  ].join('\n');
}
