export * from './format.ts';
export { manifestLines, type ManifestInput, type ManifestSigner } from './write.ts';
export { openManifest, type ManifestExpectation, type ManifestProblem, type TrustedManifest } from './read.ts';
