import { createHash, createPublicKey, verify as nodeVerify } from 'node:crypto';
import { ErrorCode, LetheError } from '../errors/index.ts';

/**
 * OpenSSH signatures (SSHSIG, `ssh-keygen -Y sign`) by Ed25519 keys, verified with node:crypto
 * alone. The format is OpenSSH's PROTOCOL.sshsig: an armored blob
 *
 *   "SSHSIG" || uint32 1 || string publickey || string namespace || string reserved
 *            || string hash_algorithm || string signature
 *
 * whose signature is over
 *
 *   "SSHSIG" || string namespace || string reserved || string hash_algorithm || string H(message)
 *
 * (`string` is a uint32 big-endian length and the bytes). Only `ssh-ed25519` keys are
 * accepted: they are what every administrator has, and one algorithm is one thing to get right.
 */

const MAGIC = Buffer.from('SSHSIG');
const ED25519 = 'ssh-ed25519';
const BEGIN = '-----BEGIN SSH SIGNATURE-----';
const END = '-----END SSH SIGNATURE-----';
// An armored signature by an Ed25519 key is under 300 bytes; this bounds what is parsed.
const MAX_ARMOR_CHARS = 4096;

/** An SSH Ed25519 public key. */
export interface SshPublicKey {
  /** `ssh-ed25519 AAAA…` (no comment): the form allowed_signers and authorized_keys take. */
  readonly line: string;
  /** The raw 32-byte Ed25519 key. */
  readonly raw: Uint8Array;
  /** `SHA256:…` exactly as `ssh-keygen -l` prints it. */
  readonly fingerprint: string;
}

/** A verified SSHSIG: who signed. */
export interface SshSignatureCheck {
  readonly key: SshPublicKey;
  readonly namespace: string;
  readonly hashAlgorithm: 'sha256' | 'sha512';
}

/** Reads SSH wire-format strings from a buffer; throws a plain Error on a short read. */
class WireReader {
  private offset = 0;
  constructor(private readonly bytes: Buffer) {}
  string(): Buffer {
    const length = this.uint32();
    if (this.offset + length > this.bytes.length) throw new Error('truncated string');
    const out = this.bytes.subarray(this.offset, this.offset + length);
    this.offset += length;
    return out;
  }
  uint32(): number {
    if (this.offset + 4 > this.bytes.length) throw new Error('truncated integer');
    const value = this.bytes.readUInt32BE(this.offset);
    this.offset += 4;
    return value;
  }
  fixed(length: number): Buffer {
    if (this.offset + length > this.bytes.length) throw new Error('truncated');
    const out = this.bytes.subarray(this.offset, this.offset + length);
    this.offset += length;
    return out;
  }
  done(): boolean {
    return this.offset === this.bytes.length;
  }
}

function wireString(data: Uint8Array | string): Buffer {
  const bytes = typeof data === 'string' ? Buffer.from(data, 'utf8') : Buffer.from(data);
  const length = Buffer.alloc(4);
  length.writeUInt32BE(bytes.length);
  return Buffer.concat([length, bytes]);
}

/** The SSH fingerprint of a public key blob: `SHA256:` and unpadded base64 of its SHA-256. */
function fingerprintOf(blob: Uint8Array): string {
  return `SHA256:${createHash('sha256').update(blob).digest('base64').replace(/=+$/, '')}`;
}

function keyFromBlob(blob: Buffer, what: string): SshPublicKey {
  let type: string;
  let raw: Buffer;
  try {
    const r = new WireReader(blob);
    type = r.string().toString('latin1');
    raw = r.string();
    if (!r.done()) throw new Error('trailing bytes');
  } catch {
    throw new LetheError(ErrorCode.KEY, `${what} is not an SSH public key blob`);
  }
  if (type !== ED25519) {
    throw new LetheError(ErrorCode.KEY, `${what} is a ${JSON.stringify(type.slice(0, 40))} key; lethe accepts ssh-ed25519 keys only (ssh-keygen -t ed25519)`);
  }
  if (raw.length !== 32) throw new LetheError(ErrorCode.KEY, `${what} is not a 32-byte Ed25519 key`);
  return { line: `${ED25519} ${blob.toString('base64')}`, raw: new Uint8Array(raw), fingerprint: fingerprintOf(blob) };
}

/**
 * Parses one OpenSSH public key line (`ssh-ed25519 AAAA… [comment]`, the content of an
 * `id_ed25519.pub`). Throws LetheError(KEY) naming `what` for anything else: another key
 * type, several lines, options before the key, base64 that is not the key blob it claims.
 */
export function parseSshPublicKey(text: string, what: string): SshPublicKey {
  const lines = text.split('\n').map((l) => l.trim()).filter((l) => l !== '' && !l.startsWith('#'));
  const [line, ...more] = lines;
  if (line === undefined || more.length > 0) {
    throw new LetheError(ErrorCode.KEY, `${what} must hold exactly one SSH public key line (e.g. the content of ~/.ssh/id_ed25519.pub)`);
  }
  const [type, data] = line.split(/\s+/);
  if (type !== ED25519 || data === undefined || !/^[A-Za-z0-9+/]+={0,2}$/.test(data)) {
    throw new LetheError(
      ErrorCode.KEY,
      `${what} is not an ssh-ed25519 public key line (it starts with ${JSON.stringify((type ?? '').slice(0, 40))}); ` +
        'create one with `ssh-keygen -t ed25519` and give its .pub file',
    );
  }
  const blob = Buffer.from(data, 'base64');
  if (blob.toString('base64') !== data) throw new LetheError(ErrorCode.KEY, `${what} has malformed base64`);
  return keyFromBlob(blob, what);
}

/** The bytes an SSHSIG signature covers for `message` (PROTOCOL.sshsig, "Signed Data"). */
function signedData(namespace: Buffer, reserved: Buffer, hashAlgorithm: string, message: Uint8Array): Buffer {
  const digest = createHash(hashAlgorithm).update(message).digest();
  return Buffer.concat([MAGIC, wireString(namespace), wireString(reserved), wireString(hashAlgorithm), wireString(digest)]);
}

/** The armored text's blob; throws a plain Error for bad armor. */
function dearmor(armored: string): Buffer {
  if (armored.length > MAX_ARMOR_CHARS) throw new Error('too long');
  const text = armored.trim();
  if (!text.startsWith(BEGIN) || !text.endsWith(END)) throw new Error('no armor');
  const body = text.slice(BEGIN.length, text.length - END.length).replace(/\s+/g, '');
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(body)) throw new Error('bad base64');
  const blob = Buffer.from(body, 'base64');
  if (blob.toString('base64') !== body) throw new Error('bad base64');
  return blob;
}

/**
 * Verifies an armored SSHSIG (`-----BEGIN SSH SIGNATURE-----`, what `ssh-keygen -Y sign`
 * writes to FILE.sig) over `message` in `namespace`. Returns the signer's key when the
 * signature is valid. Throws LetheError(USAGE) when the text is not an SSHSIG at all (the
 * wrong file), LetheError(REFUSED) when it is one but does not hold: another namespace, a key
 * that is not ssh-ed25519, or a signature that does not verify (the message was changed or
 * another key signed). Which key is trusted is the caller's decision.
 */
export function verifySshSignature(armored: string, message: Uint8Array, namespace: string): SshSignatureCheck {
  let publicKey: Buffer;
  let signedNamespace: Buffer;
  let reserved: Buffer;
  let hashAlgorithm: string;
  let signature: Buffer;
  try {
    const r = new WireReader(dearmor(armored));
    if (!r.fixed(MAGIC.length).equals(MAGIC)) throw new Error('magic');
    if (r.uint32() !== 1) throw new Error('version');
    publicKey = r.string();
    signedNamespace = r.string();
    reserved = r.string();
    hashAlgorithm = r.string().toString('latin1');
    signature = r.string();
    if (!r.done()) throw new Error('trailing bytes');
  } catch {
    throw new LetheError(
      ErrorCode.USAGE,
      'the signature is not an SSH signature (expected the FILE.sig that `ssh-keygen -Y sign -n lethe-approval FILE` writes, ' +
        'starting with "-----BEGIN SSH SIGNATURE-----")',
    );
  }
  if (signedNamespace.toString('utf8') !== namespace) {
    throw new LetheError(
      ErrorCode.REFUSED,
      `the signature is for namespace ${JSON.stringify(signedNamespace.toString('utf8').slice(0, 64))}, not ${namespace}: sign with \`ssh-keygen -Y sign -n ${namespace}\``,
    );
  }
  if (hashAlgorithm !== 'sha256' && hashAlgorithm !== 'sha512') {
    throw new LetheError(ErrorCode.REFUSED, `the signature uses hash ${JSON.stringify(hashAlgorithm.slice(0, 32))}; SSHSIG allows sha256 and sha512`);
  }
  const key = keyFromBlob(publicKey, 'the key in the signature');
  let sigType: string;
  let sigBytes: Buffer;
  try {
    const r = new WireReader(signature);
    sigType = r.string().toString('latin1');
    sigBytes = r.string();
    if (!r.done()) throw new Error('trailing bytes');
  } catch {
    throw new LetheError(ErrorCode.REFUSED, 'the signature blob inside the SSH signature is malformed');
  }
  if (sigType !== ED25519 || sigBytes.length !== 64) {
    throw new LetheError(ErrorCode.REFUSED, 'the SSH signature is not an ssh-ed25519 signature');
  }
  let ok: boolean;
  try {
    const nodeKey = createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: Buffer.from(key.raw).toString('base64url') }, format: 'jwk' });
    ok = nodeVerify(null, signedData(signedNamespace, reserved, hashAlgorithm, message), nodeKey, sigBytes);
  } catch {
    ok = false;
  }
  if (!ok) {
    throw new LetheError(
      ErrorCode.REFUSED,
      `the SSH signature by ${key.fingerprint} does not match the statement: it was made over other text ` +
        '(print the statement again with --print-statement, sign exactly that, and give the new FILE.sig)',
      { details: { fingerprint: key.fingerprint } },
    );
  }
  return { key, namespace, hashAlgorithm };
}
