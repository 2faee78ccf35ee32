export * from './format.ts';
export { ManifestWriter, SegmentWriter, type ManifestSigner, type RunTotals } from './write.ts';
export { openManifest, type CellReadOptions, type ManifestExpectation, type ManifestProblem, type SegmentProblem, type TrustedManifest } from './read.ts';
