import { pino, type DestinationStream, type Logger } from 'pino';
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
  'config.master.secretAccessKey',
  'config.master.sessionToken',
  'config.chatStore.database.url',
  'config.vault.database.url',
];

/**
 * The root logger: JSON lines on stderr (stdout is for command output). Child loggers bind
 * `job`, `runId` and `snapshotId`. Error messages pass through {@link scrubSecrets} too, as a
 * second line of defence behind the conversion of foreign errors.
 */
export function createLogger(level: string, destination: DestinationStream = process.stderr): Logger {
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

/**
 * Set on a log record whose fact the command's result carries too (a warning the CLI prints
 * from the result): the human form leaves it out so a person reads it once; JSON logs keep it.
 */
export const ALSO_IN_RESULT = 'alsoInResult';

const LEVEL_WORDS: Readonly<Record<number, string>> = { 10: 'trace', 20: 'debug', 30: 'info', 40: 'warning', 50: 'error', 60: 'fatal' };
/** Record fields that say nothing to a person reading one line. */
const PLUMBING = new Set(['level', 'time', 'pid', 'hostname', 'app', 'msg', ALSO_IN_RESULT]);
const VALUE_CHARS = 120;

function fieldText(key: string, value: unknown): string {
  if (key === 'err' && value !== null && typeof value === 'object') {
    const { type, message } = value as { type?: unknown; message?: unknown };
    return `${typeof type === 'string' ? type : 'Error'}: ${typeof message === 'string' ? message : ''}`;
  }
  const text = typeof value === 'string' ? value : JSON.stringify(value);
  return text.length > VALUE_CHARS ? `${text.slice(0, VALUE_CHARS - 1)}…` : text;
}

/**
 * One pino JSON line as a person reads it on a terminal: `lethe: warning: <message> (key=value,
 * …)`, or null for a record marked {@link ALSO_IN_RESULT}. Values were redacted by pino
 * before the line was written. A line that is not JSON is returned as it is.
 */
export function humanLogLine(line: string): string | null {
  let record: Record<string, unknown>;
  try {
    record = JSON.parse(line) as Record<string, unknown>;
  } catch {
    return line;
  }
  if (record[ALSO_IN_RESULT] === true) return null;
  const level = LEVEL_WORDS[Number(record['level'])] ?? 'log';
  const fields = Object.entries(record)
    .filter(([key]) => !PLUMBING.has(key))
    .map(([key, value]) => `${key}=${fieldText(key, value)}`);
  const message = typeof record['msg'] === 'string' ? record['msg'] : '';
  const head = `lethe: ${level}: ${message}${fields.length === 0 ? '' : ` (${fields.join(', ')})`}`;
  // An error that is a bug (unexpected, internal) keeps its stack, for the report.
  const stack = (record['err'] as { stack?: unknown } | undefined)?.stack;
  if (Number(record['level']) >= 50 && typeof stack === 'string') {
    const frames = stack.split('\n').filter((l) => /^\s+at /.test(l));
    if (frames.length > 0) return `${head}\n${frames.join('\n')}`;
  }
  return head;
}

/**
 * A pino destination that writes each record through {@link humanLogLine} to `write` (one
 * line each, newline included): what `lethe` uses on stderr without `--json`.
 */
export function humanLogDestination(write: (text: string) => void): DestinationStream {
  return {
    write(chunk: string): void {
      for (const line of chunk.split('\n')) {
        if (line.trim() === '') continue;
        const text = humanLogLine(line);
        if (text !== null) write(`${text}\n`);
      }
    },
  };
}
