export {
  ALERT_EVENTS,
  ConfigSchema,
  parseListen,
  type DaemonConfig,
  type AlertEvent,
  type AlertsConfig,
  type WebhookConfig,
  type Config,
  type DatabaseConfig,
  type EmbeddedConfig,
  type SecretSource,
  type BlobStoreConfig,
  type SigningPurpose,
  type StorageConfig,
} from './schema.ts';
export { parseBlobStoreUrl, type BlobStoreLocation } from './blob-store-url.ts';
export { configPath, formatIssues, interpolateEnv, loadConfig, parseConfig } from './load.ts';

/** Log level override from LETHE_LOG_LEVEL, if set. Only src/config reads the environment. */
export function logLevelOverride(env: NodeJS.ProcessEnv = process.env): string | undefined {
  const level = env['LETHE_LOG_LEVEL'];
  return level === undefined || level === '' ? undefined : level;
}

/** The login name running lethe (LOGNAME, USER), for audit entries; `lethe` when unknown. */
export function operatorName(env: NodeJS.ProcessEnv = process.env): string {
  return env['LOGNAME'] ?? env['USER'] ?? 'lethe';
}
export { isLoopbackHost } from '../util/net.ts';
