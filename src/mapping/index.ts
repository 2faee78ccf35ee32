/**
 * Declarative table mappings: how lethe reads any chat store (data class, key, and where
 * each row's tenant, author, conversation and timestamp are), the query that streams a
 * table cell by cell, the coverage check against the live catalogs, and schema capture for
 * restore.
 */
export {
  checkBlobStores,
  DATA_CLASSES,
  formatPath,
  MappingSchema,
  parseMapping,
  subjectColumns,
  subjectRefs,
  TableMappingSchema,
  tenantColumn,
  tenantLiteral,
  tenantWhenEmpty,
  TIMESTAMP_TYPES,
  type BlobMapping,
  type DataClass,
  type JoinMapping,
  type Mapping,
  type MappingInput,
  type TableMapping,
  type TenantMapping,
  type TimestampType,
} from './schema.ts';
export { decodeSubjects, encodeSubjects } from './subjects.ts';
export { BUILTIN_BLOB_STORE, BUILTIN_MAPPING } from './builtin.ts';
export { classOf, tableEntry, type TableEntry } from './resolve.ts';
export {
  buildCellQuery,
  buildFingerprintQuery,
  buildOrphanCheckQuery,
  cellFilterKey,
  NO_PERIOD,
  quoteLiteralLikePostgres,
  segmentFilterKey,
  shardOf,
  type CellFilter,
  type Shard,
  type Granularity,
} from './cell-query.ts';
export { checkCoverage, type TableInfo } from './coverage.ts';
export { readSchema } from './read-schema.ts';
export { schemaToDdl, type SchemaDdl } from './schema-ddl.ts';
export { SchemaDescriptionSchema, sqlFragmentProblem } from './schema-check.ts';
export { canonicalJson, describeSchemaChange, diffSchemas, schemaId, summarizeSchema, type ColumnProperty, type SchemaChange, type SchemaSummary } from './schema-diff.ts';
export type {
  ColumnDescription,
  ConstraintDescription,
  ConstraintType,
  EnumDescription,
  IndexDescription,
  SchemaDescription,
  SequenceDescription,
  TableDescription,
} from './schema-description.ts';
export { quoteIdent, quoteLiteral, IDENTIFIER } from './identifiers.ts';
