import { isLetheError } from '../errors/index.ts';
import { diffSchemas, summarizeSchema, type SchemaChange, type SchemaDescription, type SchemaSummary } from '../mapping/index.ts';
import type { ObjectStore } from '../storage/index.ts';
import type { Vault } from '../vault/index.ts';
import { openSnapshotManifest } from './manifest-source.ts';

/** Which schema a snapshot holds, and what changed since the snapshot before it (`lethe verify`). */
export interface SnapshotSchemaReport extends SchemaSummary {
  /** The snapshot before this one in the chain; null for the first. */
  readonly previous: {
    readonly snapshotId: string;
    /** Its schema id; null when its manifest could not be read (see `problem`). */
    readonly id: string | null;
    readonly problem?: string;
  } | null;
  /** What changed since `previous` (empty: the same schema); null when there is no previous schema to compare with. */
  readonly changes: SchemaChange[] | null;
}

/**
 * Describes `schema` (from a snapshot's authenticated manifest) and compares it with the
 * schema of the snapshot before it, read from that snapshot's own manifest, authenticated
 * the same way (openSnapshotManifest). A previous manifest that is gone (lifecycle removed
 * an expired snapshot) or fails its checks leaves `changes` null with the reason in
 * `previous.problem`: it is that snapshot's finding, reported by its own verify, not this
 * one's. Throws only when cancelled.
 */
export async function snapshotSchemaReport(
  vault: Vault,
  store: ObjectStore,
  schema: SchemaDescription,
  previousId: string | null,
  signal?: AbortSignal,
): Promise<SnapshotSchemaReport> {
  const summary = summarizeSchema(schema);
  if (previousId === null) return { ...summary, previous: null, changes: null };
  const previous = await vault.findSnapshot(previousId);
  if (previous?.status !== 'complete' || previous.manifestKey === null || previous.manifestSha256 === null) {
    return { ...summary, previous: { snapshotId: previousId, id: null, problem: `the vault lists it as ${previous?.status ?? 'unknown'}` }, changes: null };
  }
  try {
    const manifest = await openSnapshotManifest(
      vault,
      store,
      { id: previous.id, manifestKey: previous.manifestKey, manifestSha256: previous.manifestSha256, previousId: previous.previousId },
      signal === undefined ? {} : { signal },
    );
    try {
      return { ...summary, previous: { snapshotId: previousId, id: summarizeSchema(manifest.schema).id }, changes: diffSchemas(manifest.schema, schema) };
    } finally {
      await manifest.close();
    }
  } catch (err) {
    if (signal?.aborted === true || !isLetheError(err)) throw err;
    return { ...summary, previous: { snapshotId: previousId, id: null, problem: `its manifest cannot be read (${err.code}): verify it on its own` }, changes: null };
  }
}
