import { describeSchemaChange, type SchemaSummary } from '../mapping/index.ts';
import type { SnapshotSchemaReport } from '../restore/index.ts';

/** Schema changes listed one per line before the rest is counted (all are in --json). */
const CHANGE_LINES = 20;

/** `schema 3fa9c1d2e4b5: 6 tables, 31 columns`. */
export function schemaText(schema: SchemaSummary): string {
  return `schema ${schema.id}: ${schema.tables} tables, ${schema.columns} columns`;
}

/**
 * What `lethe verify` prints about a snapshot's schema: its id and size, and whether it is
 * the previous snapshot's, or what changed since (a renamed column shows as - and +).
 */
export function schemaReportLines(report: SnapshotSchemaReport): string[] {
  const head = schemaText(report);
  const { previous, changes } = report;
  if (previous === null) return [`${head} (the first snapshot)`];
  if (changes === null) return [`${head}; not compared with snapshot ${previous.snapshotId}: ${previous.problem ?? 'its schema is unknown'}`];
  if (changes.length === 0) return [`${head}, the same as snapshot ${previous.snapshotId}`];
  const lines = [`${head}; changed since snapshot ${previous.snapshotId} (schema ${previous.id ?? '?'}):`];
  for (const change of changes.slice(0, CHANGE_LINES)) lines.push(`  ${describeSchemaChange(change)}`);
  if (changes.length > CHANGE_LINES) lines.push(`  … and ${changes.length - CHANGE_LINES} more changes (every one: --json)`);
  return lines;
}
