// The C2SP CCTV age test vectors (cctv/README.md) against both of lethe's readers. Every
// stored vector is either run or listed as not applicable with its reason checked here.
import { describe, expect, it } from 'vitest';
import { AgeProblem, ageProblemOf } from '../../../src/crypto/age-errors.ts';
import { decryptBytes, decryptStream, generateKeyPair } from '../../../src/crypto/index.ts';
import { ErrorCode, LetheError } from '../../../src/errors/index.ts';
import {
  applicability,
  isHybridIdentity,
  isX25519Identity,
  NotApplicable,
  readVector,
  recordedHashes,
  RUN_WITHOUT_FOREIGN_IDENTITIES,
  sha256Hex,
  vectorBytes,
  vectorNames,
  type Outcome,
  type Vector,
} from './cctv-vectors.ts';
import { chunked } from './support.ts';

const CHUNK = 64 * 1024;

/** How each of lethe's age problems reads as a CCTV outcome. */
const OUTCOME_OF: Readonly<Record<AgeProblem, Outcome>> = {
  NO_IDENTITY: 'no match',
  HEADER_MAC: 'HMAC failure',
  MALFORMED: 'header failure',
  PAYLOAD: 'payload failure',
};

interface Result {
  readonly outcome: Outcome;
  /** Everything the reader handed to its caller, also when it then failed. */
  readonly released: Uint8Array;
  /** The failure's message without the operation's name ("decrypting age ...: "). */
  readonly reason?: string;
}

function failed(err: unknown, released: Uint8Array): Result {
  const problem = ageProblemOf(err);
  // Anything but a classified age failure (a bug, a KEY error) fails the vector as it is.
  if (problem === undefined) throw err;
  const reason = (err as LetheError).message.replace(/^decrypting age (file|stream): /, '');
  return { outcome: OUTCOME_OF[problem], released, reason };
}

async function viaBytes(file: Uint8Array, identities: readonly string[]): Promise<Result> {
  try {
    return { outcome: 'success', released: await decryptBytes(file, identities) };
  } catch (err) {
    // decryptBytes returns the plaintext only once the whole file has opened: on failure
    // it has released nothing.
    return failed(err, new Uint8Array());
  }
}

async function viaStream(
  file: Uint8Array,
  identities: readonly string[],
  pieceSize: number,
): Promise<Result> {
  const released: Uint8Array[] = [];
  try {
    for await (const plain of decryptStream(chunked(file, [pieceSize]), identities)) {
      released.push(plain);
    }
    return { outcome: 'success', released: Buffer.concat(released) };
  } catch (err) {
    return failed(err, Buffer.concat(released));
  }
}

/** A failure that names a chunk as failing authentication must not have released it. */
function expectNoAuthenticChunkBlamed(result: Result): void {
  const blamed = /chunk (\d+) failed authentication/.exec(result.reason ?? '')?.[1];
  if (blamed !== undefined) expect(result.released.length).toBe((Number(blamed) - 1) * CHUNK);
}

// Source piece sizes for the stream: the whole file at once, pieces smaller than a chunk,
// and pieces one byte longer than a sealed chunk, so chunk edges fall everywhere.
const PIECE_SIZES = [Number.MAX_SAFE_INTEGER, 4096, CHUNK + 17];

const names = vectorNames();
const vectors = names.map(readVector);
const applicable = vectors.flatMap((vector) => {
  const verdict = applicability(vector);
  if (!verdict.applicable) return [];
  const why = RUN_WITHOUT_FOREIGN_IDENTITIES[vector.name];
  if (verdict.identities === null) {
    // lethe's readers need at least one identity; a vector that names none (`empty`) fails
    // before any identity is used, so an unrelated one stands in.
    const title = `${vector.name} (it names no identity: an unrelated one stands in)`;
    return [{ vector, title, identities: [generateKeyPair().identity] }];
  }
  const title = why === undefined ? vector.name : `${vector.name} (X25519 identity only: ${why})`;
  return [{ vector, title, identities: verdict.identities }];
});
const notApplicable = vectors.flatMap((vector) => {
  const verdict = applicability(vector);
  return verdict.applicable ? [] : [{ vector, reason: verdict.reason }];
});

describe('CCTV age test vectors: the stored set', () => {
  it('holds every vector byte for byte as imported (cctv/SHA256SUMS)', () => {
    const recorded = recordedHashes();
    expect(names).toEqual([...recorded.keys()].sort());
    for (const name of names) expect(sha256Hex(vectorBytes(name)), name).toBe(recorded.get(name));
  });

  it('runs or explains every vector: 143 in all, 69 applicable', () => {
    expect(vectors).toHaveLength(143);
    expect(applicable).toHaveLength(69);
    const byReason = new Map<string, number>();
    for (const { reason } of notApplicable) byReason.set(reason, (byReason.get(reason) ?? 0) + 1);
    expect(Object.fromEntries(byReason)).toEqual({
      [NotApplicable.ARMORED]: 33,
      [NotApplicable.NEEDS_HYBRID]: 17,
      [NotApplicable.NEEDS_PASSPHRASE]: 24,
    });
    // Each exception to "X25519 identities only" must still name a vector that is run.
    for (const name of Object.keys(RUN_WITHOUT_FOREIGN_IDENTITIES)) {
      expect(applicable.map(({ vector }) => vector.name)).toContain(name);
    }
  });
});

describe('CCTV age test vectors: not applicable to lethe', () => {
  const key = generateKeyPair().identity;

  it.each(notApplicable.map(({ vector, reason }) => [vector.name, reason, vector] as const))(
    '%s: %s',
    async (_, reason, vector: Vector) => {
      switch (reason) {
        case NotApplicable.UNKNOWN_KEYS:
          expect(vector.unknownKeys).not.toHaveLength(0);
          return;
        case NotApplicable.ARMORED: {
          expect(vector.armored).toBe(true);
          // lethe indeed refuses armor: as a file that is not age.
          const result = await viaBytes(vector.file, [key]);
          expect(result.outcome).toBe('header failure');
          return;
        }
        case NotApplicable.NEEDS_HYBRID: {
          expect(vector.identities.filter(isX25519Identity)).toHaveLength(0);
          const hybrid = vector.identities.filter(isHybridIdentity);
          expect(hybrid).not.toHaveLength(0);
          // lethe indeed has no such identity: it refuses the key before reading the file.
          await expect(decryptBytes(vector.file, hybrid)).rejects.toMatchObject({
            code: ErrorCode.KEY,
          });
          return;
        }
        case NotApplicable.NEEDS_PASSPHRASE:
          expect(vector.passphrases).not.toHaveLength(0);
          expect(vector.identities.filter(isX25519Identity)).toHaveLength(0);
          expect(Buffer.from(vector.file).toString('latin1')).toMatch(/^-> scrypt /im);
          return;
      }
    },
  );
});

describe.each(['decryptBytes', 'decryptStream'] as const)('CCTV age test vectors: %s', (reader) => {
  it.each(applicable.map(({ vector, title, identities }) => [title, vector, identities] as const))(
    '%s',
    async (_, vector: Vector, identities: readonly string[]) => {
      const results =
        reader === 'decryptBytes'
          ? [await viaBytes(vector.file, identities)]
          : await Promise.all(PIECE_SIZES.map((size) => viaStream(vector.file, identities, size)));
      for (const result of results) {
        expect(result.outcome, result.reason).toBe(vector.expect);
        if (reader === 'decryptStream') expectNoAuthenticChunkBlamed(result);
        if (vector.expect === 'success') {
          expect(sha256Hex(result.released)).toBe(vector.payload);
        } else if (reader === 'decryptStream' && vector.payload !== undefined) {
          // What the stream released before failing: the chunks that authenticated. (A failing
          // decryptBytes throws instead of returning, so it releases nothing; that it fails
          // for the same reason is checked below.)
          expect(sha256Hex(result.released)).toBe(vector.payload);
        }
      }
      // However the stream's source is cut, it ends the same way.
      const [first, ...others] = results.map(({ outcome, released, reason }) => ({
        outcome,
        reason,
        released: sha256Hex(released),
      }));
      for (const other of others) expect(other).toEqual(first);
    },
  );
});

// Both readers share the header parser and the chunk decisions, so they must refuse a file
// for the same reason; this also carries the stream's "no authentic chunk blamed" check over
// to decryptBytes.
describe('CCTV age test vectors: both readers agree', () => {
  it.each(
    applicable
      .filter(({ vector }) => vector.expect !== 'success')
      .map(({ vector, identities }) => [vector.name, vector, identities] as const),
  )('%s fails for the same reason in both', async (_, vector: Vector, identities) => {
    const whole = await viaBytes(vector.file, identities);
    const streamed = await viaStream(vector.file, identities, 4096);
    expect(streamed.reason).toBe(whole.reason);
  });
});
