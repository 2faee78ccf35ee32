export * from './format.ts';
export { ManifestWriter, type ManifestSigner } from './write.ts';
export { openManifest, type ManifestExpectation, type ManifestProblem, type TrustedManifest } from './read.ts';
