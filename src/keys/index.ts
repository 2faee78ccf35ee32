export { Encapsulator, encapsulationId, type SecretObserver, type TupleKey } from './encapsulator.ts';
export { KeyOpener, type OpenedKey } from './opener.ts';
export { loadSigner, readConfiguredSigningKey, signerFromKey, signingKeyField, type Signer } from './signer.ts';
