import { createFilesystemStore } from './filesystem.ts';
import { withKillAfterBytes } from './kill-after-bytes.ts';
import { createS3Store, type S3StoreConfig } from './s3.ts';
import type { ObjectStore } from './types.ts';

/** Where a store lives, as the config file describes it (the zod schema lives in src/config). */
export type StoreConfig = { type: 'filesystem'; path: string } | ({ type: 's3' } & S3StoreConfig);

/**
 * Opens the store `config` describes. A filesystem store must be one `lethe init` created
 * (a directory holding its marker) unless `options.create` (init itself), which creates
 * and marks it; throws STORAGE naming the fix otherwise (see createFilesystemStore). For
 * S3, builds a client (no request is made until the first operation); CONFIG_INVALID for
 * unusable settings. Under the kill sweep's LETHE_KILL_AFTER_BYTES the store is wrapped to
 * die mid-upload (see withKillAfterBytes); otherwise it is returned as opened.
 */
export async function openStore(config: StoreConfig, options: { create?: boolean } = {}): Promise<ObjectStore> {
  return withKillAfterBytes(await openBackend(config, options));
}

async function openBackend(config: StoreConfig, options: { create?: boolean }): Promise<ObjectStore> {
  switch (config.type) {
    case 'filesystem':
      return createFilesystemStore({ path: config.path, open: options.create === true ? 'create' : 'existing' });
    case 's3': {
      const { type: _type, ...s3 } = config;
      return Promise.resolve(createS3Store(s3));
    }
  }
}
