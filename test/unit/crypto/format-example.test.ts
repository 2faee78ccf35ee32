// The worked example of docs/format.md, recomputed with lethe's own functions: every value the
// document prints must be exactly what the code computes, so the specification that
// disaster recovery (runbooks/dr-decrypt.sh) and other readers rely on cannot drift from it.
import { createCipheriv, createHash, createHmac } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import { cellId, cellKeyId, dimensionKeyIds, type CellTuple } from '../../../src/cells/index.ts';
import {
  CELL_KEY_INFO,
  CELL_KEY_SALT,
  TAG_BYTES,
  cellKey,
  encodeRecipient,
  openSealed,
  parseX25519PrivateKeyPem,
  publicKeyOf,
  seal,
  sharedSecret,
  tupleKey,
  x25519PrivateKey,
  x25519PrivateKeyPem,
} from '../../../src/crypto/index.ts';

const DOC = new URL('../../../docs/format.md', import.meta.url);

/** The example's cell: tenant 3, January 2026, user 21, conversation 7. */
const TUPLE: CellTuple = {
  tenant: '3',
  class: 'messages',
  period: '2026-01',
  author: '21',
  conversation: '7',
};
const TABLE = 'messages';
/** The dimension keys' names in the document's labels, in key-derivation order. */
const KINDS = ['period', 'user', 'conversation', 'tenant'] as const;

const hex = (bytes: Uint8Array): string => Buffer.from(bytes).toString('hex');
const sha256 = (data: Uint8Array | string): Buffer => createHash('sha256').update(data).digest();
/** A private key of the example: the sha256 of its label, as the document says. */
const exampleKey = (name: string): Buffer => sha256(`lethe format example: ${name} key`);

/**
 * The `name: value` lines of the document's ```lethe-example block, in order. Throws on a
 * missing block, an unparsable line or a repeated name, so a damaged example never passes.
 */
function exampleValues(doc: string): Map<string, string> {
  const block = /^```lethe-example\n([\s\S]*?)^```$/m.exec(doc);
  if (block === null) throw new Error('docs/format.md has no ```lethe-example block');
  const values = new Map<string, string>();
  for (const line of (block[1] ?? '').split('\n')) {
    if (line === '') continue;
    const match = /^([a-z0-9-]+): (\S+)$/.exec(line);
    if (match === null) throw new Error(`unparsable line in the worked example: ${line}`);
    const [, name = '', value = ''] = match;
    if (values.has(name)) throw new Error(`the worked example names ${name} twice`);
    values.set(name, value);
  }
  return values;
}

/** The code block that shows the plaintext's rows with `→` for tabs. */
function renderedRows(doc: string): string {
  const block = /^```\n(9001→[\s\S]*?)^```$/m.exec(doc);
  if (block === null) throw new Error('docs/format.md does not show the example plaintext as rows');
  return (block[1] ?? '').replaceAll('→', '\t');
}

/** The base64 body of a PEM block, as the DER bytes in hex. */
function pemDer(pem: string): string {
  const body = pem.split('\n').filter((l) => l !== '' && !l.startsWith('-----'));
  return Buffer.from(body.join(''), 'base64').toString('hex');
}

/** Every value of the example, computed from its inputs with lethe's functions. */
function computeExample(plaintext: Buffer): Map<string, string> {
  const out = new Map<string, string>();
  const ids = dimensionKeyIds(TUPLE);
  expect(ids).toHaveLength(KINDS.length);
  const ephemeral = exampleKey('ephemeral');
  const E = publicKeyOf(ephemeral);
  out.set('ephemeral-private', hex(ephemeral));
  out.set('ephemeral-public', hex(E));

  const secrets: Buffer[] = [];
  ids.forEach((id, i) => {
    const n = i + 1;
    const d = exampleKey(KINDS[i] ?? '');
    const D = publicKeyOf(d);
    const pem = x25519PrivateKeyPem(d);
    // The wrap's plaintext reads back to the same key (the vault and export form).
    expect(hex(parseX25519PrivateKeyPem(pem, id))).toBe(hex(d));
    out.set(`dimension-${n}-id`, id);
    out.set(`dimension-${n}-private`, hex(d));
    out.set(`dimension-${n}-pkcs8`, pemDer(pem));
    out.set(`dimension-${n}-public`, hex(D));
    out.set(`dimension-${n}-recipient`, encodeRecipient(D));
    // The backup computes X25519(e, D), a reader X25519(d, E): the same secret.
    const z = sharedSecret(x25519PrivateKey(d), E, `example encapsulation for ${id}`);
    expect(hex(sharedSecret(x25519PrivateKey(ephemeral), D, id))).toBe(hex(z));
    secrets.push(z);
  });
  secrets.forEach((z, i) => out.set(`shared-secret-${i + 1}`, hex(z)));

  const extract = Buffer.concat([
    ...secrets,
    E,
    Buffer.from(ids.map((id) => `${id}\n`).join(''), 'utf8'),
  ]);
  out.set('extract-message', hex(extract));
  const prk = tupleKey(secrets, E, ids);
  // The formula the document states, independently of tupleKey's own.
  expect(hex(createHmac('sha256', CELL_KEY_SALT).update(extract).digest())).toBe(hex(prk));
  out.set('tuple-key', hex(prk));

  const id = cellId(TABLE, TUPLE);
  out.set('cell-id', id);
  const expand = Buffer.concat([Buffer.from(`${CELL_KEY_INFO}${id}`, 'utf8'), Buffer.from([1])]);
  out.set('expand-message', hex(expand));
  const K = cellKey(prk, id);
  expect(hex(createHmac('sha256', prk).update(expand).digest())).toBe(hex(K));
  out.set('cell-key', hex(K));
  // ChaCha20 block 0 (openssl's IV: le32 counter 0, then the zero nonce) starts with the Poly1305 key.
  out.set(
    'poly1305-key',
    hex(createCipheriv('chacha20', K, Buffer.alloc(16)).update(Buffer.alloc(32))),
  );

  out.set('plaintext', hex(plaintext));
  const sealed = seal(K, plaintext);
  const ciphertext = sealed.subarray(0, sealed.length - TAG_BYTES);
  out.set('ciphertext', hex(ciphertext));
  out.set('tag', hex(sealed.subarray(sealed.length - TAG_BYTES)));
  out.set('sha256', hex(sha256(sealed)));

  expect(openSealed(K, sealed, 'the example cell').equals(plaintext)).toBe(true);
  // What dr-decrypt.sh runs: `openssl enc -d -chacha20 -iv 01000000 ‖ 24 zeros` on the ciphertext.
  const iv = Buffer.concat([Buffer.from([1, 0, 0, 0]), Buffer.alloc(12)]);
  expect(createCipheriv('chacha20', K, iv).update(ciphertext).equals(plaintext)).toBe(true);
  return out;
}

describe('docs/format.md worked example', () => {
  it('prints exactly what lethe computes, value for value', async () => {
    const doc = await readFile(DOC, 'utf8');
    const documented = exampleValues(doc);
    const plaintext = Buffer.from(documented.get('plaintext') ?? '', 'hex');
    expect(plaintext.length).toBeGreaterThan(0);
    expect(plaintext.toString('utf8')).toBe(renderedRows(doc));
    const computed = computeExample(plaintext);
    // Same names, same order, same values: a changed digit, a missing or an extra line fails.
    expect([...documented.entries()]).toEqual([...computed.entries()]);
  });

  it('shows the cell and its encapsulation as a manifest lists them', async () => {
    const doc = await readFile(DOC, 'utf8');
    const documented = exampleValues(doc);
    const plaintext = Buffer.from(documented.get('plaintext') ?? '', 'hex');
    const computed = computeExample(plaintext);
    const cellLine = doc.split('\n').find((l) => l.startsWith(`{"id":"${cellId(TABLE, TUPLE)}",`));
    expect(cellLine).toBeDefined();
    const rows = plaintext.toString('utf8').split('\n').length - 1;
    for (const member of [
      `"key":"${cellKeyId(TUPLE)}"`,
      `"dims":${JSON.stringify(dimensionKeyIds(TUPLE))}`,
      `"length":${plaintext.length + TAG_BYTES}`,
      `"sha256":"${computed.get('sha256') ?? ''}"`,
      `"rows":${rows}`,
      `"bytesPlain":${plaintext.length}`,
    ]) {
      expect(cellLine).toContain(member);
    }
    expect(doc).toContain(`"kem":"x25519","ephemeral":"${computed.get('ephemeral-public') ?? ''}"`);
  });
});
