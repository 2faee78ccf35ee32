export { KeyMinter, type CellKeyResult } from './minter.ts';
export { KeyOpener, type OpenedKey } from './opener.ts';
export { loadSigner, readConfiguredSigningKey, signerFromKey, signingKeyField, type Signer } from './signer.ts';
