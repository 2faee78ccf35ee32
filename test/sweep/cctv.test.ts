// Sweep `cctv`: the C2SP CCTV age test vectors, as the `cctv-age` npm package serves them,
// through lethe's own age readers: decryptBytes (how the key opener reads a master-wrapped
// dimension key) and decryptStream (how vault restore reads a vault backup), the stream fed
// in seeded random pieces and from a file read as vault restore reads it. Every vector is
// either in scope and must give the expected result, or out of scope for a stated reason and
// must still be refused with a LetheError. docs/reliability.md, "age conformance".
import { createReadStream } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as cctv from 'cctv-age';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AgeProblem, ageProblemOf } from '../../src/crypto/age-errors.ts';
import { encodeIdentity } from '../../src/crypto/bech32.ts';
import { decryptBytes, decryptStream } from '../../src/crypto/index.ts';
import { ErrorCode, LetheError } from '../../src/errors/index.ts';
import { recordFigures, seededRandom, sweepSeed, sweepSize } from '../helpers/sweep.ts';
import {
  applicability,
  isHybridIdentity,
  isX25519Identity,
  NotApplicable,
  parseVector,
  sha256Hex,
  vectorBytes,
  vectorNames,
  type Outcome,
  type Vector,
} from '../unit/crypto/cctv-vectors.ts';

const seed = sweepSeed();
const size = sweepSize();
/** Seeded random splittings of each file fed to decryptStream, besides the whole file. */
const SPLITS = size === 'full' ? 16 : 2;
const SEALED_CHUNK = 64 * 1024 + 16;

/** How each of lethe's age problems reads as a CCTV outcome. */
const OUTCOME_OF: Readonly<Record<AgeProblem, Outcome>> = {
  NO_IDENTITY: 'no match',
  HEADER_MAC: 'HMAC failure',
  MALFORMED: 'header failure',
  PAYLOAD: 'payload failure',
};

/** One decryption: what lethe concluded and every plaintext byte it handed over. */
interface Run {
  readonly how: string;
  /** The CCTV outcome, or `crash: ...` when lethe threw anything but a classified LetheError. */
  readonly outcome: Outcome | `crash: ${string}`;
  readonly code?: string;
  readonly released: Uint8Array;
}

const BYTES = 'decryptBytes';

function failure(how: string, err: unknown, released: Uint8Array): Run {
  if (!(err instanceof LetheError)) {
    const name = err instanceof Error ? err.name : typeof err;
    return { how, outcome: `crash: ${name} ${String(err)}`, released };
  }
  const problem = ageProblemOf(err);
  if (problem === undefined)
    return {
      how,
      outcome: `crash: LetheError(${err.code}) ${err.message}`,
      code: err.code,
      released,
    };
  return { how, outcome: OUTCOME_OF[problem], code: err.code, released };
}

async function viaBytes(file: Uint8Array, identities: readonly string[]): Promise<Run> {
  const how = BYTES;
  try {
    return { how, outcome: 'success', released: await decryptBytes(file, identities) };
  } catch (err) {
    // decryptBytes returns plaintext only once all of it authenticated: on failure, none.
    return failure(how, err, new Uint8Array());
  }
}

async function viaStream(
  how: string,
  source: AsyncIterable<Uint8Array>,
  identities: readonly string[],
): Promise<Run> {
  const released: Uint8Array[] = [];
  try {
    for await (const plain of decryptStream(source, identities)) released.push(plain);
    return { how, outcome: 'success', released: Buffer.concat(released) };
  } catch (err) {
    return failure(how, err, Buffer.concat(released));
  }
}

/**
 * Piece sizes that cover `length` bytes, drawn from `random`: empty pieces, a few bytes (so
 * header lines and the nonce are split), sizes next to a sealed chunk (so chunk edges fall on
 * and beside piece edges), and large ones.
 */
function randomPieces(length: number, random: () => number): number[] {
  const pieces: number[] = [];
  for (let left = length; left > 0;) {
    const r = random();
    let piece: number;
    if (r < 0.05) piece = 0;
    else if (r < 0.35) piece = 1 + Math.floor(random() * 48);
    else if (r < 0.65 && length > SEALED_CHUNK)
      piece = SEALED_CHUNK - 8 + Math.floor(random() * 17);
    // Large relative to the file, so a small file is split too.
    else piece = 1 + Math.floor(random() * Math.min(length, 3 * SEALED_CHUNK));
    piece = Math.min(piece, left);
    pieces.push(piece);
    left -= piece;
  }
  return pieces;
}

// eslint-disable-next-line @typescript-eslint/require-await -- an async source, as lethe's are
async function* pieces(bytes: Uint8Array, sizes: readonly number[]): AsyncGenerator<Uint8Array> {
  let at = 0;
  for (const piece of sizes) {
    // A copy: a source may reuse its buffer, and the reader must not rely on it staying put.
    yield bytes.slice(at, at + piece);
    at += piece;
  }
}

/** A stable 32-bit number for a vector's name, so its draws do not depend on the others. */
function nameHash(name: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

/** An X25519 identity drawn from `random`, for vectors that name none lethe can hold. */
function standInIdentity(random: () => number): string {
  const scalar = new Uint8Array(32).map(() => Math.floor(random() * 256));
  return encodeIdentity(scalar);
}

/** What a run got wrong against the vector, in words; empty when it is right. */
function problemsOf(vector: Vector, run: Run): string[] {
  const problems: string[] = [];
  if (run.outcome !== vector.expect)
    problems.push(`${run.how}: ${run.outcome}, expected ${vector.expect}`);
  if (
    run.outcome !== 'success' &&
    !run.outcome.startsWith('crash') &&
    run.code !== ErrorCode.CRYPTO
  ) {
    problems.push(`${run.how}: failed with code ${String(run.code)}, expected CRYPTO`);
  }
  // All the plaintext released, also before a failure, must be what the vector says the
  // reference releases: the authentic prefix (a vector without a payload releases nothing).
  // decryptBytes returns all or nothing, so when it fails the prefix it releases is empty.
  const all = run.outcome !== 'success' && run.how === BYTES;
  const released = sha256Hex(run.released);
  const expected =
    all || vector.payload === undefined ? sha256Hex(new Uint8Array()) : vector.payload;
  if (released !== expected) {
    problems.push(
      `${run.how}: released ${run.released.length} bytes that differ from the authentic plaintext`,
    );
  }
  return problems;
}

type Group = 'armor' | 'hybrid' | 'scrypt' | 'other';
const groupOf = (name: string): string => name.split('_')[0] ?? name;

// The vectors as the package serves them (name to the vector file's bytes).
const served = Object.entries(cctv as Readonly<Record<string, Uint8Array>>)
  .filter(([, bytes]) => bytes instanceof Uint8Array)
  .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
const vectors = served.map(([name, bytes]) => parseVector(name, bytes));
const inScope = vectors.flatMap((vector) => {
  const verdict = applicability(vector);
  return verdict.applicable ? [{ vector, identities: verdict.identities }] : [];
});
const outOfScope = vectors.flatMap((vector) => {
  const verdict = applicability(vector);
  return verdict.applicable ? [] : [{ vector, reason: verdict.reason }];
});

/** Per vector: whether it passed, recorded before the test asserts, so figures stay honest. */
const passed = new Map<string, boolean>();
const refused = new Map<string, boolean>();
let decryptions = 0;
let dir = '';

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'lethe-cctv-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe(`age conformance (CCTV vectors from cctv-age; seed ${seed}, ${size})`, () => {
  it('serves the same vectors, byte for byte, as the copy kept in test/unit/crypto/cctv', () => {
    expect(served.map(([name]) => name)).toEqual(vectorNames());
    for (const [name, bytes] of served)
      expect(sha256Hex(bytes), name).toBe(sha256Hex(vectorBytes(name)));
  });

  it.each(inScope.map(({ vector, identities }) => [vector.name, vector, identities] as const))(
    'in scope: %s',
    async (name, vector: Vector, named: readonly string[] | null) => {
      const random = seededRandom((seed ^ nameHash(name)) >>> 0);
      // lethe's readers need an identity; a vector that names none fails before one is used.
      const identities = named ?? [standInIdentity(random)];
      const runs: Run[] = [await viaBytes(vector.file, identities)];
      runs.push(
        await viaStream(
          'decryptStream whole',
          pieces(vector.file, [vector.file.length]),
          identities,
        ),
      );
      for (let i = 0; i < SPLITS; i++) {
        const sizes = randomPieces(vector.file.length, random);
        runs.push(
          await viaStream(
            `decryptStream in ${sizes.length} random pieces (#${i})`,
            pieces(vector.file, sizes),
            identities,
          ),
        );
      }
      // As vault restore reads a backup: a file on disk through fs.createReadStream.
      const path = join(dir, name);
      await writeFile(path, vector.file);
      const highWaterMark = 1 + Math.floor(random() * 2 * SEALED_CHUNK);
      runs.push(
        await viaStream(
          `decryptStream from a file (highWaterMark ${highWaterMark})`,
          createReadStream(path, { highWaterMark }),
          identities,
        ),
      );
      decryptions += runs.length;
      const problems = runs.flatMap((run) => problemsOf(vector, run));
      passed.set(name, problems.length === 0);
      expect(problems).toEqual([]);
    },
  );

  it.each(outOfScope.map(({ vector, reason }) => [vector.name, reason, vector] as const))(
    'out of scope: %s: %s',
    async (name, reason, vector: Vector) => {
      const random = seededRandom((seed ^ nameHash(name)) >>> 0);
      const x25519 = vector.identities.filter(isX25519Identity);
      const identities = x25519.length > 0 ? x25519 : [standInIdentity(random)];
      // Out of scope, but lethe must still refuse the file with a LetheError, never open it.
      const runs = [
        await viaBytes(vector.file, identities),
        await viaStream('decryptStream', pieces(vector.file, [vector.file.length]), identities),
      ];
      const problems = runs.flatMap((run) =>
        run.outcome === 'success' || run.outcome.startsWith('crash') || run.released.length > 0
          ? [`${run.how}: ${run.outcome}`]
          : [],
      );
      // The reason must hold for the vector, and lethe must indeed lack what it needs.
      switch (reason) {
        case NotApplicable.ARMORED:
          if (!vector.armored) problems.push('not armored');
          // lethe never reads armor: it is a file that is not age.
          for (const run of runs)
            if (run.outcome !== 'header failure')
              problems.push(`${run.how}: ${run.outcome} on armor`);
          break;
        case NotApplicable.NEEDS_HYBRID: {
          const hybrid = vector.identities.filter(isHybridIdentity);
          if (hybrid.length === 0 || x25519.length > 0)
            problems.push('does not need a hybrid identity alone');
          const run = await viaBytes(vector.file, hybrid);
          if (run.code !== ErrorCode.KEY)
            problems.push(`a hybrid identity gave ${run.outcome}, not LetheError(KEY)`);
          break;
        }
        case NotApplicable.NEEDS_PASSPHRASE:
          if (vector.passphrases.length === 0 || x25519.length > 0)
            problems.push('does not need a passphrase alone');
          if (!/^-> scrypt /im.test(Buffer.from(vector.file).toString('latin1')))
            problems.push('has no scrypt stanza');
          break;
        case NotApplicable.UNKNOWN_KEYS:
          if (vector.unknownKeys.length === 0) problems.push('has no unknown keys');
          break;
      }
      refused.set(name, problems.length === 0);
      expect(problems).toEqual([]);
    },
  );

  it('meets its targets: every in-scope vector passes, every other one is refused, and why', async () => {
    const reasonGroup: Record<NotApplicable, Group> = {
      [NotApplicable.ARMORED]: 'armor',
      [NotApplicable.NEEDS_HYBRID]: 'hybrid',
      [NotApplicable.NEEDS_PASSPHRASE]: 'scrypt',
      [NotApplicable.UNKNOWN_KEYS]: 'other',
    };
    const outOfScopeBy = (group: Group): number =>
      outOfScope.filter(({ reason }) => reasonGroup[reason] === group).length;
    const byExpect = (outcome: Outcome): number =>
      inScope.filter(({ vector }) => vector.expect === outcome).length;
    const groups: Record<string, string> = {};
    for (const group of [...new Set(vectors.map(({ name }) => groupOf(name)))].sort()) {
      const run = inScope.filter(({ vector }) => groupOf(vector.name) === group);
      const ok = run.filter(({ vector }) => passed.get(vector.name) === true).length;
      const out = outOfScope.filter(({ vector }) => groupOf(vector.name) === group).length;
      groups[`group ${group}`] = `${ok}/${run.length} passed, ${out} out of scope`;
    }
    const figures = {
      vectors: vectors.length,
      run: inScope.length,
      passed: [...passed.values()].filter(Boolean).length,
      outOfScope: outOfScope.length,
      outOfScopeRefused: [...refused.values()].filter(Boolean).length,
      outOfScopeArmor: outOfScopeBy('armor'),
      outOfScopeHybrid: outOfScopeBy('hybrid'),
      outOfScopeScrypt: outOfScopeBy('scrypt'),
      outOfScopeOther: outOfScopeBy('other'),
      runSuccess: byExpect('success'),
      runNoMatch: byExpect('no match'),
      runHmacFailure: byExpect('HMAC failure'),
      runHeaderFailure: byExpect('header failure'),
      runPayloadFailure: byExpect('payload failure'),
      decryptions,
      ...groups,
      seed,
      size,
    };
    await recordFigures('cctv', figures);
    expect(figures.passed).toBe(figures.run);
    expect(figures.outOfScopeRefused).toBe(figures.outOfScope);
    expect(figures.run + figures.outOfScope).toBe(figures.vectors);
    // Pinned, so a new package version or a change of classification is looked at: only
    // armor, hybrid and scrypt vectors may be out of scope; every X25519, stanza, header,
    // HMAC and payload vector is run.
    expect({
      vectors: figures.vectors,
      run: figures.run,
      armor: figures.outOfScopeArmor,
      hybrid: figures.outOfScopeHybrid,
      scrypt: figures.outOfScopeScrypt,
      other: figures.outOfScopeOther,
    }).toEqual({
      vectors: 143,
      run: 69,
      armor: 33,
      hybrid: 17,
      scrypt: 24,
      other: 0,
    });
    for (const { vector } of outOfScope)
      expect(['armor', 'hybrid', 'scrypt'], vector.name).toContain(groupOf(vector.name));
  });
});
