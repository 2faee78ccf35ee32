import { pino, type Logger } from 'pino';
import { scrubSecrets } from '../errors/index.ts';

export type { Logger } from 'pino';

/**
 * Paths whose values are key material, passwords or connection strings. pino replaces them
 * before a line is written; test/unit/log.test.ts proves it for each.
 */
export const REDACT_PATHS: readonly string[] = [
  'password',
  '*.password',
  'passwordFile',
  'secretAccessKey',
  '*.secretAccessKey',
  'sessionToken',
  '*.sessionToken',
  'url',
  '*.url',
  'identity',
  '*.identity',
  'privateKey',
  '*.privateKey',
  'digestKey',
  '*.digestKey',
  'wrappedIdentity',
  '*.wrappedIdentity',
  'config.storage.secretAccessKey',
  'config.chatStore.database.url',
  'config.vault.database.url',
];

/**
 * The root logger: JSON lines on stderr (stdout is for command output). Child loggers bind
 * `job`, `runId` and `snapshotId`. Error messages pass through {@link scrubSecrets} too, as a
 * second line of defence behind the conversion of foreign errors.
 */
export function createLogger(level: string, destination: NodeJS.WritableStream = process.stderr): Logger {
  return pino(
    {
      level,
      base: { app: 'lethe' },
      redact: { paths: [...REDACT_PATHS], censor: '[redacted]' },
      serializers: {
        err: (err: unknown) => {
          const serialized = pino.stdSerializers.err(err as Error);
          return {
            ...serialized,
            message: scrubSecrets(serialized.message),
            stack: scrubSecrets(serialized.stack),
          };
        },
      },
    },
    destination,
  );
}
