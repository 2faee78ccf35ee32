import { createFilesystemStore } from './filesystem.ts';
import { createS3Store, type S3StoreConfig } from './s3.ts';
import type { ObjectStore } from './types.ts';

/** Where a store lives, as the config file describes it (the zod schema lives in src/config). */
export type StoreConfig = { type: 'filesystem'; path: string } | ({ type: 's3' } & S3StoreConfig);

/**
 * Opens the store `config` describes: creates the filesystem root if missing, or builds an
 * S3 client (no request is made until the first operation). Throws STORAGE when the
 * directory cannot be created, CONFIG_INVALID for unusable S3 settings.
 */
export async function openStore(config: StoreConfig): Promise<ObjectStore> {
  switch (config.type) {
    case 'filesystem':
      return createFilesystemStore({ path: config.path });
    case 's3': {
      const { type: _type, ...s3 } = config;
      return Promise.resolve(createS3Store(s3));
    }
  }
}
