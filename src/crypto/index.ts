// age v1 encryption on node:crypto (header, X25519 stanzas and STREAM payload, byte for byte
// what the age CLI writes and reads) for the master-wrapped dimension keys and vault backups,
// the key encapsulation cells derive their keys from (one ephemeral X25519 key per snapshot
// and tenant, docs/format.md), signatures, keyed digests and the master key file. The age library is not used at run time; the tests use it as an oracle.
export { FastX25519Identity, FastX25519Recipient } from './x25519.ts';
export {
  generateKeyPair,
  generateRawKeyPair,
  parseX25519PrivateKeyPem,
  publicKeyOf,
  recipientOf,
  x25519PrivateKey,
  x25519PrivateKeyPem,
  type KeyPair,
} from './keys.ts';
export { decodeRecipient, encodeRecipient } from './bech32.ts';
export {
  CELL_KEY_INFO,
  CELL_KEY_SALT,
  HELD_KEY_INFO,
  HYBRID_CELL_KEY_SALT,
  TAG_BYTES,
  cellKey,
  heldWrapKey,
  hybridTupleKey,
  newEphemeral,
  open as openSealed,
  openStream as openSealedStream,
  seal,
  sealStream,
  sharedSecret,
  tupleKey,
  type Ephemeral,
  type HybridSecret,
} from './encapsulation.ts';
export {
  MLKEM_CIPHERTEXT_BYTES,
  MLKEM_PUBLIC_BYTES,
  dimensionSecretProblem,
  encodeDimensionSecret,
  mlkemDecapsulate,
  mlkemEncapsulate,
  mlkemKeyPair,
  newMlKemSeed,
  parseDimensionSecret,
  type DimensionSecret,
} from './mlkem.ts';
export { decryptBytes, encryptBytes } from './age.ts';
export { decryptStream, encryptStream, type StreamOptions } from './age-stream.ts';
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
export { DeferredP256Identity, P256Identity, P256_RECIPIENT_PREFIX, decodeP256Recipient, encodeP256Recipient, p256PointFromSpki, p256Spki } from './p256-master.ts';
export { readAgeHeaderStanzas, resolveIdentities, type DeferredUnwrapper } from './deferred-identity.ts';
export { parseHeader as parseAgeHeader, type Stanza } from './age-format.ts';
export type { FileKeyUnwrapper } from './age-header.ts';
export { parseSshPublicKey, verifySshSignature, type SshPublicKey, type SshSignatureCheck } from './sshsig.ts';
