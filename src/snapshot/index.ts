export {
  runBackup,
  runBackupCoordinator,
  runBackupShard,
  newSnapshotId,
  type BackupOptions,
  type BackupProgress,
  type BackupResult,
  type ShreddedKey,
  type CoordinateOptions,
  type ShardOptions,
  type ShardResult,
} from './backup.ts';
export { digestPrefix } from './cell-writer.ts';
export { PackWriter, newPackKey, type CellLocation, type PackInfo } from './pack-writer.ts';
