export { runBackup, newSnapshotId, type BackupOptions, type BackupProgress, type BackupResult } from './backup.ts';
export { digestPrefix } from './cell-writer.ts';
export { PackWriter, newPackKey, type CellLocation, type PackInfo } from './pack-writer.ts';
