// Reading the C2SP CCTV age test vectors in cctv/testdata (format: cctv/README.md) and
// deciding which of them lethe can run.
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { inflateSync } from 'node:zlib';

export const CCTV_DIR = fileURLToPath(new URL('./cctv', import.meta.url));
const TESTDATA = join(CCTV_DIR, 'testdata');

/** The outcomes a vector can expect, as the CCTV README names them. */
export const OUTCOMES = [
  'success',
  'no match',
  'HMAC failure',
  'header failure',
  'payload failure',
  'armor failure',
] as const;
export type Outcome = (typeof OUTCOMES)[number];

const KNOWN_KEYS = new Set([
  'expect',
  'payload',
  'identity',
  'passphrase',
  'armored',
  'compressed',
  'file key',
  'comment',
]);

export interface Vector {
  readonly name: string;
  readonly expect: Outcome;
  /** Hex SHA-256 of all the plaintext the API may release, when the vector states it. */
  readonly payload: string | undefined;
  readonly identities: readonly string[];
  readonly passphrases: readonly string[];
  readonly armored: boolean;
  readonly compressed: boolean;
  readonly comment: string | undefined;
  /** Header keys the README does not define: such a vector is to be ignored. */
  readonly unknownKeys: readonly string[];
  /** The age file, inflated when the vector is compressed. */
  readonly file: Uint8Array;
}

/** The names of the stored vectors, sorted. */
export function vectorNames(): string[] {
  return readdirSync(TESTDATA).sort();
}

/** The raw bytes of a stored vector. */
export function vectorBytes(name: string): Buffer {
  return readFileSync(join(TESTDATA, name));
}

/** Name to hex SHA-256, from cctv/SHA256SUMS (recorded when the vectors were imported). */
export function recordedHashes(): Map<string, string> {
  const sums = new Map<string, string>();
  for (const line of readFileSync(join(CCTV_DIR, 'SHA256SUMS'), 'utf8').split('\n')) {
    if (line === '') continue;
    const match = /^([0-9a-f]{64}) {2}(\S+)$/.exec(line);
    if (match?.[1] === undefined || match[2] === undefined) {
      throw new Error(`SHA256SUMS: malformed line ${JSON.stringify(line)}`);
    }
    sums.set(match[2], match[1]);
  }
  return sums;
}

export const sha256Hex = (bytes: Uint8Array): string =>
  createHash('sha256').update(bytes).digest('hex');

/** Parses a stored vector; throws on one that breaks the README's format. */
export function readVector(name: string): Vector {
  return parseVector(name, vectorBytes(name));
}

/**
 * Parses the bytes of a vector named `name` (a stored file, or one the `cctv-age` package
 * exports); throws on one that breaks the README's format.
 */
export function parseVector(name: string, bytes: Uint8Array): Vector {
  const raw = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const blank = raw.indexOf('\n\n');
  if (blank < 0) throw new Error(`${name}: no empty line after the header`);
  const fields: [string, string][] = raw
    .subarray(0, blank)
    .toString('utf8')
    .split('\n')
    .map((line) => {
      const colon = line.indexOf(': ');
      if (colon < 0) throw new Error(`${name}: header line without ": ": ${line}`);
      return [line.slice(0, colon), line.slice(colon + 2)];
    });
  const all = (key: string): string[] => fields.filter(([k]) => k === key).map(([, v]) => v);
  const one = (key: string): string | undefined => {
    const values = all(key);
    if (values.length > 1) throw new Error(`${name}: ${key} appears ${values.length} times`);
    return values[0];
  };
  const expect = one('expect');
  if (!OUTCOMES.some((o) => o === expect)) throw new Error(`${name}: expect ${String(expect)}`);
  const compressed = one('compressed');
  if (compressed !== undefined && compressed !== 'zlib') {
    throw new Error(`${name}: unknown compression ${compressed}`);
  }
  const armored = one('armored');
  if (armored !== undefined && armored !== 'yes') throw new Error(`${name}: armored ${armored}`);
  const body = raw.subarray(blank + 2);
  return {
    name,
    expect: expect as Outcome,
    payload: one('payload'),
    identities: all('identity'),
    passphrases: all('passphrase'),
    armored: armored === 'yes',
    compressed: compressed === 'zlib',
    comment: one('comment'),
    unknownKeys: [...new Set(fields.map(([k]) => k).filter((k) => !KNOWN_KEYS.has(k)))],
    file: new Uint8Array(compressed === 'zlib' ? inflateSync(body) : body),
  };
}

/** Why a vector does not apply to lethe; each is asserted against the vector in the test. */
export const NotApplicable = {
  UNKNOWN_KEYS: 'it has header keys the CCTV README does not define, so it is to be ignored',
  ARMORED: 'it is ASCII-armored, and lethe reads only binary age files',
  NEEDS_HYBRID:
    'it needs a hybrid ML-KEM-768 + X25519 identity (AGE-SECRET-KEY-PQ-1...); lethe has X25519 identities only',
  NEEDS_PASSPHRASE:
    'it needs a passphrase (scrypt) identity; lethe has X25519 identities only and never writes scrypt stanzas',
} as const;
export type NotApplicable = (typeof NotApplicable)[keyof typeof NotApplicable];

/**
 * Vectors that also name identities lethe lacks, but whose outcome cannot depend on them, so
 * they run with their X25519 identities alone. The reason is part of the test's title.
 */
export const RUN_WITHOUT_FOREIGN_IDENTITIES: Readonly<Record<string, string>> = {
  // The vector's X25519 stanza is not for its X25519 identity: the reference refuses the
  // header when it tries the passphrase. lethe refuses any header where an scrypt stanza is
  // not alone, before trying identities, so the passphrase cannot change its outcome.
  scrypt_and_x25519:
    'lethe refuses a header where an scrypt stanza is not alone whatever the identities, so the passphrase is not needed',
  hybrid_x25519_arg:
    'its only stanza is an X25519 one with a malformed share (a hybrid enc), which the X25519 identity must refuse',
};

export const isX25519Identity = (identity: string): boolean =>
  identity.startsWith('AGE-SECRET-KEY-1');
export const isHybridIdentity = (identity: string): boolean =>
  identity.startsWith('AGE-SECRET-KEY-PQ-1');

export type Applicability =
  | {
      readonly applicable: true;
      /** The identities to decrypt with; null: the vector needs none (any will do). */
      readonly identities: readonly string[] | null;
    }
  | { readonly applicable: false; readonly reason: NotApplicable };

/**
 * Whether lethe can run `vector`, and with which identities. lethe's readers take X25519
 * identities only, so a vector runs with the X25519 identities it names; one that names
 * others too runs only if listed in {@link RUN_WITHOUT_FOREIGN_IDENTITIES}.
 */
export function applicability(vector: Vector): Applicability {
  if (vector.unknownKeys.length > 0) return notApplicable(NotApplicable.UNKNOWN_KEYS);
  if (vector.armored) return notApplicable(NotApplicable.ARMORED);
  const x25519 = vector.identities.filter(isX25519Identity);
  const foreign = vector.identities.length - x25519.length + vector.passphrases.length;
  if (foreign === 0) return { applicable: true, identities: x25519.length > 0 ? x25519 : null };
  if (x25519.length > 0 && vector.name in RUN_WITHOUT_FOREIGN_IDENTITIES) {
    return { applicable: true, identities: x25519 };
  }
  if (vector.passphrases.length > 0) return notApplicable(NotApplicable.NEEDS_PASSPHRASE);
  return notApplicable(NotApplicable.NEEDS_HYBRID);
}

function notApplicable(reason: NotApplicable): Applicability {
  return { applicable: false, reason };
}
