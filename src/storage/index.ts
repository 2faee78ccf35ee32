export type { ObjectInfo, ObjectLock, ObjectStore, PutOptions, ReadOptions } from './types.ts';
export { assertValidKey, assertValidPrefix, compareKeys } from './keys.ts';
export { createFilesystemStore, type FilesystemStoreOptions } from './filesystem.ts';
export { createS3Client, createS3Store, type S3ClientLimits, type S3StoreConfig, type S3StoreOptions } from './s3.ts';
export { openStore, type StoreConfig } from './open.ts';
