/**
 * The reference chat store: its schema, a deterministic seeded generator for demos, tests
 * and benchmarks (with the files it keeps outside the database, in a directory), and
 * helpers to grow and churn it between backups. Also the pg connection
 * helper the other store-facing modules share.
 */
export {
  HISTORY_MONTHS,
  REFERENCE_END,
  REFERENCE_KEYS_SQL,
  REFERENCE_SCHEMA_SQL,
  REFERENCE_START,
  REFERENCE_TABLES,
  REFERENCE_TABLES_SQL,
  REFERENCE_TYPES,
  type ReferenceTable,
} from './reference-schema.ts';
export { DEFAULT_SEED, seedChatStore, type SeedOptions, type SeedStats } from './seed.ts';
export { SCALE_PARAMS, SCALES, type Scale, type ScaleParams } from './scale.ts';
export { addMessages, type AddedMessages, type AddMessagesOptions } from './add-messages.ts';
export { ADDED_FILE_RATE } from './files.ts';
export { applyChurn, type ChurnedMessage, type ChurnOptions, type ChurnResult } from './churn.ts';
export { demoSample, type DemoSample } from './demo-sample.ts';
export { TRICKY_BODIES } from './corpus.ts';
export { COPY_NULL, copyBytea, copyText } from './copy-text.ts';
export { inTransaction, withClient } from './pg-client.ts';
