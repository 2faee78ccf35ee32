import { createCipheriv, createDecipheriv, createECDH, createPublicKey } from 'node:crypto';
import { ErrorCode, LetheError } from '../errors/index.ts';
import { AgeFailure, AgeProblem } from './age-errors.ts';
import { decodeBase64, encodeBase64, type Stanza } from './age-format.ts';
import { hkdfSha256 } from './hkdf.ts';

/*
 * The `lethe-p256` age stanza: a file key wrapped to a NIST P-256 public key whose private
 * half never leaves an HSM (docs/format.md, "The lethe-p256 recipient"). It mirrors age's own
 * X25519 stanza with P-256 ECDH in its place, so a master key in a PKCS#11 token (or a KMS
 * key-agreement key) can be an age recipient: the backup wraps to the public key locally in
 * node:crypto, and only unwrapping asks the token (CKM_ECDH1_DERIVE) for the shared secret.
 *
 *   -> lethe-p256 <base64(E)>          E: the ephemeral public key, 65-byte uncompressed point
 *   <base64(body)>                     body = ChaCha20-Poly1305(k, nonce 0^12, file key) (32 bytes)
 *   Z = x-coordinate of ECDH(e, P)     (32 bytes)
 *   k = HKDF-SHA-256(ikm Z, salt E ‖ P, info "lethe.org/v1/p256", 32 bytes)
 */

const STANZA_TYPE = 'lethe-p256';
const WRAP_LABEL = 'lethe.org/v1/p256';
/** A P-256 recipient as text: this prefix, then the uncompressed point in unpadded base64. */
export const P256_RECIPIENT_PREFIX = 'lethe-p256:';
const POINT_BYTES = 65;
const FILE_KEY_BYTES = 16;
const TAG_BYTES = 16;
const ZERO_NONCE = Buffer.alloc(12);

/** The text form of the P-256 public key `point` (65-byte uncompressed SEC1). */
export function encodeP256Recipient(point: Uint8Array): string {
  checkPoint(point);
  return `${P256_RECIPIENT_PREFIX}${encodeBase64(point)}`;
}

/** The point of a `lethe-p256:` recipient. Throws LetheError(KEY) when malformed. */
export function decodeP256Recipient(recipient: string): Uint8Array {
  if (!recipient.startsWith(P256_RECIPIENT_PREFIX)) throw new LetheError(ErrorCode.KEY, 'not a lethe-p256 recipient');
  const point = decodeBase64(recipient.slice(P256_RECIPIENT_PREFIX.length));
  if (point === null) throw new LetheError(ErrorCode.KEY, 'a lethe-p256 recipient that is not canonical base64');
  checkPoint(point);
  return point;
}

function checkPoint(point: Uint8Array): void {
  if (point.length !== POINT_BYTES || point[0] !== 4) throw new LetheError(ErrorCode.KEY, `a P-256 public key must be a 65-byte uncompressed point (got ${point.length} bytes)`);
  try {
    // Refuses a point that is not on the curve.
    const probe = createECDH('prime256v1');
    probe.generateKeys();
    probe.computeSecret(point);
  } catch {
    throw new LetheError(ErrorCode.KEY, 'the P-256 public key is not a point on the curve');
  }
}

function wrapKey(z: Uint8Array, share: Uint8Array, point: Uint8Array): Buffer {
  return hkdfSha256(z, Buffer.concat([share, point]), WRAP_LABEL);
}

/** age recipient (FileKeyWrapper) for a `lethe-p256:` recipient: public material only. */
export class P256Recipient {
  readonly #point: Uint8Array;

  constructor(recipient: string) {
    this.#point = decodeP256Recipient(recipient);
  }

  /** One `lethe-p256` stanza wrapping `fileKey`, with a fresh ephemeral key. */
  wrapFileKey(fileKey: Uint8Array): Stanza[] {
    const ephemeral = createECDH('prime256v1');
    const share = ephemeral.generateKeys();
    const z = ephemeral.computeSecret(this.#point);
    const key = wrapKey(z, share, this.#point);
    z.fill(0);
    const cipher = createCipheriv('chacha20-poly1305', key, ZERO_NONCE, { authTagLength: TAG_BYTES });
    const body = Buffer.concat([cipher.update(fileKey), cipher.final(), cipher.getAuthTag()]);
    key.fill(0);
    return [{ args: [STANZA_TYPE, encodeBase64(share)], body }];
  }
}

/**
 * age identity (FileKeyUnwrapper) for the P-256 key `point` whose private half is used only
 * through `derive(share)`: the 32-byte ECDH x-coordinate with the ephemeral public key
 * `share`, computed where the private key lives (an HSM). Returns the file key of the first
 * `lethe-p256` stanza it opens, null when none is for it.
 */
export class P256Identity {
  constructor(
    private readonly point: Uint8Array,
    private readonly derive: (share: Uint8Array) => Uint8Array,
  ) {}

  unwrapFileKey(stanzas: Stanza[]): Uint8Array | null {
    for (const stanza of stanzas) {
      if (stanza.args[0] !== STANZA_TYPE) continue;
      const [, encoded, ...extra] = stanza.args;
      const share = encoded === undefined ? null : decodeBase64(encoded);
      if (share === null || extra.length > 0 || share.length !== POINT_BYTES || stanza.body.length !== FILE_KEY_BYTES + TAG_BYTES) {
        throw new AgeFailure(AgeProblem.MALFORMED, 'a lethe-p256 stanza is malformed');
      }
      let z: Uint8Array;
      try {
        z = this.derive(share);
      } catch {
        continue; // not a point the token accepts: not for this key
      }
      const key = wrapKey(z, share, this.point);
      z.fill(0);
      const decipher = createDecipheriv('chacha20-poly1305', key, ZERO_NONCE, { authTagLength: TAG_BYTES });
      decipher.setAuthTag(stanza.body.subarray(FILE_KEY_BYTES));
      try {
        const fileKey = Buffer.concat([decipher.update(stanza.body.subarray(0, FILE_KEY_BYTES)), decipher.final()]);
        return new Uint8Array(fileKey);
      } catch {
        continue; // another key's stanza
      } finally {
        key.fill(0);
      }
    }
    return null;
  }
}

/** The DER prefix of a P-256 SubjectPublicKeyInfo: SEQUENCE { id-ecPublicKey, prime256v1 }, BIT STRING. */
const SPKI_P256_PREFIX = Buffer.from('3059301306072a8648ce3d020106082a8648ce3d030107034200', 'hex');

/**
 * The 65-byte uncompressed point of a P-256 public key given as SubjectPublicKeyInfo DER (what
 * AWS KMS GetPublicKey returns). Throws LetheError(KEY) for a key that is not P-256.
 */
export function p256PointFromSpki(der: Uint8Array): Uint8Array {
  let jwk: JsonWebKey;
  try {
    jwk = createPublicKey({ key: Buffer.from(der), format: 'der', type: 'spki' }).export({ format: 'jwk' });
  } catch {
    throw new LetheError(ErrorCode.KEY, 'the public key is not SubjectPublicKeyInfo DER');
  }
  if (jwk.kty !== 'EC' || jwk.crv !== 'P-256' || jwk.x === undefined || jwk.y === undefined) {
    throw new LetheError(ErrorCode.KEY, `the public key is ${jwk.kty ?? '?'} ${jwk.crv ?? ''}, not an EC P-256 key`.trimEnd());
  }
  const point = Buffer.concat([Buffer.of(4), Buffer.from(jwk.x, 'base64url'), Buffer.from(jwk.y, 'base64url')]);
  checkPoint(point);
  return new Uint8Array(point);
}

/** The SubjectPublicKeyInfo DER of the P-256 point `point` (what KMS DeriveSharedSecret takes). */
export function p256Spki(point: Uint8Array): Uint8Array {
  if (point.length !== POINT_BYTES || point[0] !== 4) throw new LetheError(ErrorCode.KEY, `a P-256 public key must be a 65-byte uncompressed point (got ${point.length} bytes)`);
  return new Uint8Array(Buffer.concat([SPKI_P256_PREFIX, point]));
}

/**
 * An age identity whose key agreement is asynchronous (a KMS call), while age's unwrapping is
 * synchronous: {@link prepare} is given the file's stanzas (read from its header first), asks
 * `derive` for the secret of every well-formed `lethe-p256` stanza, and returns a
 * {@link P256Identity} that opens them with those secrets. The secrets are wiped once used;
 * call {@link prepare} again for another file.
 */
export class DeferredP256Identity {
  constructor(
    readonly point: Uint8Array,
    private readonly derive: (share: Uint8Array) => Promise<Uint8Array>,
  ) {}

  /**
   * The identity for a file with `stanzas`. Errors of `derive` (the KMS refusing, or not
   * answering) are thrown, not taken for "not this key": a file a key cannot open then says
   * why. A file without lethe-p256 stanzas makes no call.
   */
  async prepare(stanzas: readonly Stanza[]): Promise<P256Identity> {
    const secrets = new Map<string, Uint8Array>();
    for (const stanza of stanzas) {
      const [type, encoded, ...extra] = stanza.args;
      if (type !== STANZA_TYPE || encoded === undefined || extra.length > 0 || secrets.has(encoded)) continue;
      const share = decodeBase64(encoded);
      if (share?.length !== POINT_BYTES) continue; // P256Identity reports it as malformed
      const z = await this.derive(share);
      if (z.length !== 32) throw new LetheError(ErrorCode.MASTER_KEY, `the key agreement returned ${z.length} bytes, not a 32-byte P-256 secret`);
      secrets.set(encoded, z);
    }
    return new P256Identity(this.point, (share) => {
      const z = secrets.get(encodeBase64(share));
      if (z === undefined) throw new Error('no secret prepared for this stanza');
      secrets.delete(encodeBase64(share));
      return z; // P256Identity wipes it
    });
  }
}
