/**
 * Session settings for every COPY lethe runs, in both directions. COPY text output
 * depends on them (dates, time zones, floats, bytea), so without pinning them a server
 * default changed between two backups would change every cell's digest (and re-upload
 * everything), and a restore target with other defaults could misread dates. The same
 * values pg_dump uses.
 */
export const COPY_SESSION_SETTINGS: Readonly<Record<string, string>> = {
  client_encoding: 'UTF8',
  DateStyle: 'ISO, MDY',
  IntervalStyle: 'postgres',
  TimeZone: 'UTC',
  extra_float_digits: '3',
  bytea_output: 'hex',
  standard_conforming_strings: 'on',
};

/** `SET LOCAL` statements for {@link COPY_SESSION_SETTINGS}; run inside the transaction. */
export function copySessionStatements(): string[] {
  return Object.entries(COPY_SESSION_SETTINGS).map(([name, value]) => `SET LOCAL ${name} = '${value}'`);
}
