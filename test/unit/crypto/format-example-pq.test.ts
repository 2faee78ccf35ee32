// The post-quantum worked example of docs/format.md (```lethe-example-pq), recomputed: the
// ML-KEM-768 parts straight from @noble/post-quantum, the extract from its definition with a
// plain HMAC, and then with lethe's own functions, which must agree byte for byte. Also the
// wrapped secret's two versions, and that stock openssl still reads a version-2 secret's
// X25519 block (what runbooks/dr-decrypt.sh relies on).
import { execFileSync } from 'node:child_process';
import { createHash, createHmac } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { ml_kem768 } from '@noble/post-quantum/ml-kem.js';
import { describe, expect, it } from 'vitest';
import { cellId, dimensionKeyIds, type CellTuple } from '../../../src/cells/index.ts';
import {
  HYBRID_CELL_KEY_SALT,
  cellKey,
  dimensionSecretProblem,
  encodeDimensionSecret,
  hybridTupleKey,
  mlkemDecapsulate,
  mlkemEncapsulate,
  mlkemKeyPair,
  openSealed,
  parseDimensionSecret,
  publicKeyOf,
  seal,
  sharedSecret,
  tupleKey,
  x25519PrivateKey,
  x25519PrivateKeyPem,
} from '../../../src/crypto/index.ts';

const DOC = new URL('../../../docs/format.md', import.meta.url);
const TUPLE: CellTuple = { tenant: '3', class: 'messages', period: '2026-01', author: '21', conversation: '7' };
const KINDS = ['period', 'user', 'conversation', 'tenant'] as const;
const PLAINTEXT = '9001\t3\t7\t21\thello, world\t2026-01-05 09:30:00+00\n9002\t3\t7\t21\tsee you\\ttomorrow\t2026-01-05 09:31:12+00\n';

const hex = (bytes: Uint8Array): string => Buffer.from(bytes).toString('hex');
const sha256 = (data: Uint8Array | string): Buffer => createHash('sha256').update(data).digest();
const sha512 = (data: string): Buffer => createHash('sha512').update(data).digest();

function exampleValues(doc: string): Map<string, string> {
  const block = /^```lethe-example-pq\n([\s\S]*?)^```$/m.exec(doc);
  if (block === null) throw new Error('docs/format.md has no ```lethe-example-pq block');
  const values = new Map<string, string>();
  for (const line of (block[1] ?? '').split('\n')) {
    if (line === '') continue;
    const match = /^([a-z0-9-]+): (\S+)$/.exec(line);
    if (match === null) throw new Error(`unparsable line in the post-quantum example: ${line}`);
    const [, name = '', value = ''] = match;
    if (values.has(name)) throw new Error(`the post-quantum example names ${name} twice`);
    values.set(name, value);
  }
  return values;
}

describe('docs/format.md post-quantum worked example', () => {
  it('every value is what the definitions and lethe compute', async () => {
    const doc = exampleValues(await readFile(DOC, 'utf8'));
    const computed = new Map<string, string>();
    const e = sha256('lethe format example: ephemeral key');
    const E = publicKeyOf(e);
    computed.set('ephemeral-public', hex(E));
    const ids = dimensionKeyIds(TUPLE);
    const parts: { z: Buffer; k: Uint8Array; ciphertext: Uint8Array }[] = [];
    for (const [i, kind] of KINDS.entries()) {
      const n = i + 1;
      const d = sha256(`lethe format example: ${kind} key`);
      const seed = sha512(`lethe format example: ${kind} ml-kem seed`);
      const m = sha256(`lethe format example: ${kind} ml-kem encapsulation`);
      // Straight from the library: FIPS 203 KeyGen_internal(d, z) and Encaps_internal(ek, m).
      const pair = ml_kem768.keygen(seed);
      const { cipherText, sharedSecret: k } = ml_kem768.encapsulate(pair.publicKey, m);
      expect(hex(ml_kem768.decapsulate(cipherText, pair.secretKey))).toBe(hex(k));
      // lethe's wrappers give the same bytes.
      expect(hex(mlkemKeyPair(seed).publicKey)).toBe(hex(pair.publicKey));
      const wrapped = mlkemEncapsulate(pair.publicKey, 'example', m);
      expect(hex(wrapped.ciphertext)).toBe(hex(cipherText));
      expect(hex(mlkemDecapsulate(cipherText, pair.secretKey, 'example'))).toBe(hex(k));
      const z = sharedSecret(x25519PrivateKey(d), E, 'example');
      expect(hex(sharedSecret(x25519PrivateKey(e), publicKeyOf(d), 'example'))).toBe(hex(z));
      computed.set(`dimension-${n}-id`, ids[i] ?? '');
      computed.set(`dimension-${n}-mlkem-seed`, hex(seed));
      computed.set(`dimension-${n}-mlkem-encapsulation-randomness`, hex(m));
      computed.set(`dimension-${n}-mlkem-public-sha256`, hex(sha256(pair.publicKey)));
      computed.set(`dimension-${n}-mlkem-ciphertext-sha256`, hex(sha256(cipherText)));
      computed.set(`dimension-${n}-x25519-shared-secret`, hex(z));
      computed.set(`dimension-${n}-mlkem-shared-secret`, hex(k));
      if (n === 1) {
        const text = encodeDimensionSecret({ x25519: d, mlkemSeed: seed });
        computed.set('dimension-1-secret-sha256', hex(sha256(text)));
        const blocks = [...text.matchAll(/-----BEGIN PRIVATE KEY-----\n([\s\S]*?)\n-----END PRIVATE KEY-----\n/g)].map((b) => Buffer.from((b[1] ?? '').replaceAll('\n', ''), 'base64'));
        expect(blocks).toHaveLength(2);
        computed.set('dimension-1-mlkem-pkcs8', hex(blocks[1] ?? Buffer.alloc(0)));
        expect(text.startsWith(x25519PrivateKeyPem(d))).toBe(true);
      }
      parts.push({ z, k, ciphertext: cipherText });
    }
    // The extract from its definition: Z1 ‖ K1 ‖ … ‖ Z4 ‖ K4 ‖ E ‖ C1 ‖ … ‖ C4 ‖ ids.
    const message = Buffer.concat([
      ...parts.flatMap((p) => [p.z, Buffer.from(p.k)]),
      E,
      ...parts.map((p) => Buffer.from(p.ciphertext)),
      Buffer.from(ids.map((id) => `${id}\n`).join(''), 'utf8'),
    ]);
    computed.set('extract-message-bytes', String(message.length));
    computed.set('extract-message-sha256', hex(sha256(message)));
    const prk = createHmac('sha256', 'lethe.cell-key.x25519-mlkem768.v1').update(message).digest();
    expect(HYBRID_CELL_KEY_SALT).toBe('lethe.cell-key.x25519-mlkem768.v1');
    expect(hex(hybridTupleKey(parts, E, ids))).toBe(hex(prk));
    // Not the X25519-only tuple key of the same shared secrets.
    expect(hex(tupleKey(parts.map((p) => p.z), E, ids))).not.toBe(hex(prk));
    computed.set('tuple-key', hex(prk));
    const id = cellId('messages', TUPLE);
    computed.set('cell-id', id);
    const key = cellKey(prk, id);
    computed.set('cell-key', hex(key));
    const sealed = seal(key, Buffer.from(PLAINTEXT, 'utf8'));
    computed.set('ciphertext', hex(sealed.subarray(0, sealed.length - 16)));
    computed.set('tag', hex(sealed.subarray(sealed.length - 16)));
    computed.set('sha256', hex(sha256(sealed)));
    expect(openSealed(key, sealed, 'example').toString('utf8')).toBe(PLAINTEXT);
    expect([...doc.keys()].sort()).toEqual([...computed.keys()].sort());
    for (const [name, value] of computed) expect(`${name}: ${doc.get(name) ?? ''}`).toBe(`${name}: ${value}`);
  });

  it('changing one K_D, one Z_D or one ciphertext changes the tuple key', () => {
    const E = publicKeyOf(sha256('e'));
    const parts = [0, 1].map((i) => ({ z: sha256(`z${i}`), k: sha256(`k${i}`), ciphertext: Buffer.alloc(1088, i) }));
    const ids = ['user:3/21', 'tenant:3'];
    const base = hex(hybridTupleKey(parts, E, ids));
    const flipped = (field: 'z' | 'k' | 'ciphertext'): string => {
      const copy = parts.map((p) => ({ ...p, [field]: Buffer.from(p[field]) }));
      const target = copy[1]?.[field] as Buffer;
      target.writeUInt8(target.readUInt8(0) ^ 1, 0);
      return hex(hybridTupleKey(copy, E, ids));
    };
    expect(flipped('z')).not.toBe(base);
    expect(flipped('k')).not.toBe(base);
    expect(flipped('ciphertext')).not.toBe(base);
  });
});

describe('wrapped dimension secret, versions 1 and 2', () => {
  const d = sha256('lethe test: x25519');
  const seed = sha512('lethe test: ml-kem');
  const mlkemPublic = mlkemKeyPair(seed).publicKey;

  it('version 1 (X25519 only) is the PKCS#8 PEM block, and reads with no ML-KEM half', () => {
    const text = encodeDimensionSecret({ x25519: d, mlkemSeed: null });
    expect(text).toBe(x25519PrivateKeyPem(d));
    const parsed = parseDimensionSecret(text, 'k');
    expect(hex(parsed.x25519 ?? new Uint8Array())).toBe(hex(d));
    expect(parsed.mlkemSeed).toBeNull();
    expect(dimensionSecretProblem(parsed, publicKeyOf(d), null)).toBeNull();
  });

  it('version 2 round-trips, and each half alone reads as the other one destroyed', () => {
    const text = encodeDimensionSecret({ x25519: d, mlkemSeed: seed });
    const parsed = parseDimensionSecret(text, 'k');
    expect(hex(parsed.x25519 ?? new Uint8Array())).toBe(hex(d));
    expect(hex(parsed.mlkemSeed ?? new Uint8Array())).toBe(hex(seed));
    expect(dimensionSecretProblem(parsed, publicKeyOf(d), mlkemPublic)).toBeNull();
    const [x, k] = text.split(/(?<=-----END PRIVATE KEY-----\n)/);
    expect(parseDimensionSecret(x ?? '', 'k').mlkemSeed).toBeNull();
    const onlyMlkem = parseDimensionSecret(k ?? '', 'k');
    expect(onlyMlkem.x25519).toBeNull();
    expect(hex(onlyMlkem.mlkemSeed ?? new Uint8Array())).toBe(hex(seed));
  });

  it('refuses anything else, and a half that is not the key the vault lists', () => {
    const [x = '', k = ''] = encodeDimensionSecret({ x25519: d, mlkemSeed: seed }).split(/(?<=-----END PRIVATE KEY-----\n)/);
    for (const bad of ['', k + x, x + x, x + k + k, `junk\n${x}`, `${x}junk`]) expect(() => parseDimensionSecret(bad, 'key K')).toThrow(/key K is not/);
    const other = mlkemKeyPair(sha512('other')).publicKey;
    expect(dimensionSecretProblem(parseDimensionSecret(x + k, 'k'), publicKeyOf(d), other)).toMatch(/ML-KEM-768 seed .* is not the key/);
    expect(dimensionSecretProblem(parseDimensionSecret(x + k, 'k'), publicKeyOf(d), null)).toMatch(/lists no ML-KEM public key/);
    expect(dimensionSecretProblem(parseDimensionSecret(x, 'k'), publicKeyOf(sha256('other')), null)).toMatch(/X25519 private key .* is not the key/);
  });

  it('stock openssl reads the X25519 block of a version-2 secret as it reads version 1', () => {
    const text = encodeDimensionSecret({ x25519: d, mlkemSeed: seed });
    const der = execFileSync('openssl', ['pkey', '-pubout', '-outform', 'DER'], { input: text });
    expect(hex(der.subarray(der.length - 32))).toBe(hex(publicKeyOf(d)));
  });
});
