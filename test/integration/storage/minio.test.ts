import { MinioContainer, type StartedMinioContainer } from '@testcontainers/minio';
import { getContainerRuntimeClient } from 'testcontainers';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ErrorCode } from '../../../src/errors/index.ts';
import { createS3Store, type ObjectStore } from '../../../src/storage/index.ts';
import { dockerAvailable } from '../../helpers/docker.ts';
import { expectLetheError, runConformance } from './conformance.ts';
import {
  inspectWithMinio,
  minioClient,
  s3Backend,
  storeOptions,
  type S3Server,
} from './s3-backend.ts';

const IMAGE = 'minio/minio:RELEASE.2025-02-28T09-55-16Z';
const hasDocker = await dockerAvailable();

/** MinIO with its ports published on 127.0.0.1 only, when the engine runs on this machine. */
class LoopbackMinioContainer extends MinioContainer {
  override async start(): Promise<StartedMinioContainer> {
    const { host } = (await getContainerRuntimeClient()).info.containerRuntime;
    if (host === 'localhost' || host === '127.0.0.1') {
      const ports = (this.hostConfig.PortBindings ?? {}) as Record<string, { HostIp?: string }[]>;
      for (const bindings of Object.values(ports)) {
        for (const binding of bindings) binding.HostIp = '127.0.0.1';
      }
    }
    return super.start();
  }
}

let started: Promise<{ container: StartedMinioContainer; server: S3Server }> | undefined;

/** One MinIO for the whole file, with a plain bucket and one created with Object Lock. */
function minio(): Promise<{ container: StartedMinioContainer; server: S3Server }> {
  started ??= (async () => {
    const container = await new LoopbackMinioContainer(IMAGE).start();
    const host = container.getHost() === 'localhost' ? '127.0.0.1' : container.getHost();
    const server: S3Server = {
      endpoint: `http://${host}:${container.getPort()}`,
      bucket: 'lethe-conformance',
      accessKeyId: container.getUsername(),
      secretAccessKey: container.getPassword(),
    };
    const client = minioClient(server);
    await client.makeBucket(server.bucket, 'us-east-1');
    await client.makeBucket(LOCKED_BUCKET, 'us-east-1', { ObjectLocking: true });
    return { container, server };
  })();
  return started;
}

const LOCKED_BUCKET = 'lethe-locked';

if (!hasDocker) {
  const reason = 'no Docker engine found; MinIO suite runs where one exists';
  // The default reporter does not print skipped tests' names; this line always shows.
  console.warn(`MinIO storage suite skipped: ${reason}`);
  describe('ObjectStore conformance: MinIO (testcontainers)', () => {
    it.skip(reason, () => undefined);
  });
} else {
  afterAll(async () => {
    if (started !== undefined) await (await started).container.stop();
  });

  runConformance('MinIO', async () => {
    const { server } = await minio();
    // The container outlives this suite; the file's afterAll stops it.
    return s3Backend(
      server,
      new Set(['lists-uploads-by-exact-key'] as const),
      () => Promise.resolve(),
      LOCKED_BUCKET,
    );
  });

  describe('S3 store against MinIO with Object Lock', () => {
    let server: S3Server;
    let store: ObjectStore;
    beforeAll(async () => {
      server = { ...(await minio()).server, bucket: LOCKED_BUCKET };
      store = createS3Store(storeOptions(server, 'locked'));
    });
    afterAll(async () => {
      await store.close();
    });

    it('stores the lock, refuses delete until it expires, then deletes', async () => {
      const retainUntil = new Date(Date.now() + 4_000);
      const data = new Uint8Array(Buffer.from('worm object'));
      await store.put('packs/aa/p1', data, { lock: { mode: 'GOVERNANCE', retainUntil } });

      const client = minioClient(server);
      const retention = await client.getObjectRetention(server.bucket, 'locked/packs/aa/p1');
      expect(retention?.mode).toBe('GOVERNANCE');
      // The wire format may drop milliseconds.
      const stored = new Date(String(retention?.retainUntilDate)).getTime();
      expect(Math.abs(stored - retainUntil.getTime())).toBeLessThan(1_000);
      expect(await inspectWithMinio(client, server.bucket, 'locked/packs/aa/p1')).toEqual(data);

      await expectLetheError(
        store.delete('packs/aa/p1'),
        ErrorCode.STORAGE,
        /GOVERNANCE lock until/,
      );
      expect(await store.head('packs/aa/p1')).not.toBeNull();

      await new Promise((resolve) =>
        setTimeout(resolve, retainUntil.getTime() - Date.now() + 1_500),
      );
      await store.delete('packs/aa/p1');
      expect(await store.head('packs/aa/p1')).toBeNull();
    });
  });
}
