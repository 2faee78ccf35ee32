import { openManifest, type TrustedManifest } from '../manifest/index.ts';
import type { ObjectStore } from '../storage/index.ts';
import type { CompleteSnapshot, Vault } from '../vault/index.ts';

/**
 * Opens a snapshot's manifest for reading, authenticated against what the vault recorded:
 * the manifest's sha256 at backup, the previous snapshot in the chain and its manifest's
 * sha256, and the public halves of the vault's backup signing keys. Every reader of
 * manifests (verify, restore, export) goes through here; see openManifest for what it
 * throws. The caller closes the result.
 */
export async function openSnapshotManifest(
  vault: Vault,
  store: ObjectStore,
  snapshot: Pick<CompleteSnapshot, 'id' | 'manifestKey' | 'manifestSha256' | 'previousId'>,
  options: { signal?: AbortSignal } = {},
): Promise<TrustedManifest> {
  const previous = snapshot.previousId === null ? null : await vault.findSnapshot(snapshot.previousId);
  return openManifest(
    store,
    {
      snapshotId: snapshot.id,
      key: snapshot.manifestKey,
      sha256: snapshot.manifestSha256,
      previous: snapshot.previousId === null ? null : { id: snapshot.previousId, sha256: previous?.manifestSha256 ?? null },
    },
    await vault.getSigningPublicKeys(['backup', 'legacy']),
    options,
  );
}
