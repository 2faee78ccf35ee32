export { Encapsulator, encapsulationId, type KeyedTuple, type LiveTupleKey, type SecretObserver, type TupleFacts, type TupleKey } from './encapsulator.ts';
export { KeyOpener, type OpenedKey } from './opener.ts';
export { loadSigner, readConfiguredSigningKey, signerFromKey, signingKeyField, type Signer } from './signer.ts';
export {
  FileMasterKeys,
  currentWrapTarget,
  destroyRetiredEpochs,
  rotateMaster,
  sealShreds,
  singleIdentityKeyring,
  wrapDimensionSecret,
  type MasterKeyProvider,
  type MasterKeyring,
  type MasterWrapTarget,
  type SealResult,
} from './master.ts';
export { Pkcs11MasterKeys, type Pkcs11MasterOptions } from './pkcs11-master.ts';
export { AwsKmsMasterKeys, kmsPendingWindowDays, sdkKmsApi, type AwsKmsMasterOptions, type KmsApi, type KmsKeyState } from './aws-kms-master.ts';
export { addMlkemHalves } from './post-quantum.ts';
