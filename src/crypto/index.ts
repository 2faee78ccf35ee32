// age v1 encryption on node:crypto (header, X25519 stanzas and STREAM payload, byte for byte
// what the age CLI writes and reads), AND-wrapping of keys, signatures, keyed digests and the
// master key file. The age library is not used at run time; the tests use it as an oracle.
export { FastX25519Identity, FastX25519Recipient } from './x25519.ts';
export { generateKeyPair, recipientOf, type KeyPair } from './keys.ts';
export { decryptBytes, encryptBytes } from './age.ts';
export { decryptStream, encryptStream, type StreamOptions } from './age-stream.ts';
export { andUnwrap, andWrap } from './and-wrap.ts';
export {
  deriveFromSigningKey,
  generateSigningKey,
  publicKeyFromText,
  publicKeyToPem,
  sign,
  signingKeyFromPem,
  signingKeyId,
  signingKeyToPem,
  verifySignature,
  type SigningKey,
} from './signing.ts';
export { publicKeyFileText, readSigningKeyFile, writeSigningKeyFile } from './signing-key-file.ts';
export { createCellDigest, equalConstantTime, generateDigestKey, sha256Hex, type CellDigest } from './digest.ts';
export { readMasterKeyFile, writeMasterKeyFile, type MasterKey } from './master-key-file.ts';
