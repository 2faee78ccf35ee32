/**
 * Files outside the database: the stores a chat service keeps file bytes in (read-only),
 * the locations rows give, the blob cells' ids and plaintext, and the targets a restore
 * writes files back to. See docs/mapping.md, "Files outside the database".
 */
export { locationProblem } from './location.ts';
export { BLOB_MAGIC, blobHeader, splitBlobPlaintext } from './plaintext.ts';
export { openBlobSource, type BlobProblemKind, type BlobRead, type BlobSource } from './source.ts';
export { blobTargetSettings, openBlobTarget, type BlobTarget } from './target.ts';
export { BLOB_TABLE_SUFFIX, blobCellId, blobTableName, isBlobTable, rowTableOf } from './ids.ts';
