export * from './format.ts';
export { manifestLines, type ManifestInput, type ManifestSigner } from './write.ts';
export { readManifest, type ManifestEvent } from './read.ts';
