import pg from 'pg';
import { ErrorCode, wrapForeign } from '../errors/index.ts';
import type { JsonObject } from './canonical-json.ts';
import { query, type VaultContext } from './db.ts';

/**
 * What the vault database's server keeps of its own past, beyond lethe's reach.
 *
 * Destroying a key sets its wrapped identity to NULL and rewrites the key tables, but the
 * old row went through PostgreSQL's write-ahead log first. Every copy of that WAL (segments
 * still in `pg_wal`, a WAL archive, a streaming or logical replica, a base backup) holds the
 * wrapped identity, which the master key opens. Until the shred stops depending on the
 * database forgetting, lethe can only look at what the server is configured to keep and
 * tell the operator what they must bound to the grace window.
 */

/** The stable codes of {@link DurabilityFinding}s. */
export const DurabilityCode = {
  /** `archive_mode` is `on` or `always`: WAL segments are copied somewhere (or kept until they are). */
  WAL_ARCHIVE: 'vault-wal-archive',
  /** `archive_mode` could not be read. */
  WAL_ARCHIVE_UNCHECKED: 'vault-wal-archive-unchecked',
  /** `pg_stat_replication` has rows: replicas, WAL receivers or base backups are streaming WAL. */
  REPLICAS: 'vault-replicas',
  /** `pg_stat_replication` could not be read. */
  REPLICAS_UNCHECKED: 'vault-replicas-unchecked',
  /** `pg_replication_slots` has rows: the server keeps WAL for consumers that have not confirmed it. */
  REPLICATION_SLOTS: 'vault-replication-slots',
  /** `pg_replication_slots` could not be read. */
  REPLICATION_SLOTS_UNCHECKED: 'vault-replication-slots-unchecked',
} as const;

export type DurabilityCode = (typeof DurabilityCode)[keyof typeof DurabilityCode];

/**
 * One thing seen on the vault database's server that can keep destroyed keys' wrapped bytes
 * after lethe has shredded them, or one such thing that could not be checked.
 */
export interface DurabilityFinding {
  readonly code: DurabilityCode;
  /** What was seen and what the operator must do, as one or two sentences. */
  readonly message: string;
  /**
   * The facts behind the message, as JSON. Never the text of `archive_command` or
   * `archive_library` (commands can hold credentials): only whether they are set.
   */
  readonly details: JsonObject;
}

/** `SQLSTATE 42501`: the role may not read the view or setting. */
const INSUFFICIENT_PRIVILEGE = '42501';

/** How many slot or client names a message lists before "and N more". */
const NAMES_SHOWN = 5;

type Read<R> = { readonly rows: R[] } | { readonly denied: string };

/**
 * Runs one read-only query. A permission error comes back as `{ denied }` (the server's
 * message names the object, never a value); anything else, an unreachable server first,
 * throws DATABASE.
 */
async function read<R extends pg.QueryResultRow>(ctx: VaultContext, doing: string, text: string): Promise<Read<R>> {
  try {
    return { rows: (await ctx.pool.query<R>(text)).rows };
  } catch (err) {
    if (err instanceof pg.DatabaseError && err.code === INSUFFICIENT_PRIVILEGE) return { denied: err.message };
    throw wrapForeign(ErrorCode.DATABASE, doing, err);
  }
}

function quoteIdent(name: string): string {
  return `"${name.replaceAll('"', '""')}"`;
}

function days(n: number): string {
  return `${n} day${n === 1 ? '' : 's'}`;
}

function listNames(names: readonly string[]): string {
  const shown = names.slice(0, NAMES_SHOWN).join(', ');
  return names.length > NAMES_SHOWN ? `${shown} and ${names.length - NAMES_SHOWN} more` : shown;
}

/**
 * Looks at the server holding the vault for the copies of its WAL that outlive a shred:
 * WAL archiving (`archive_mode`), attached WAL streaming clients (`pg_stat_replication`:
 * replicas, `pg_receivewal`, logical subscribers, base backups in progress) and replication
 * slots (`pg_replication_slots`), and returns one finding per thing seen, in that order;
 * an empty list when none is. `graceWindowDays` goes into the advice.
 *
 * Needs no privilege beyond connecting; some facts are hidden without `pg_monitor` (or
 * superuser): whether `archive_command` is set, and the details of streaming clients (they
 * are counted all the same). When a view or setting may not be read at all, the finding
 * says it could not be checked and which grant would let it; a permission error never
 * throws. Throws DATABASE when the server cannot be reached or a query fails otherwise.
 */
export async function inspectVaultDurability(
  ctx: VaultContext,
  options: { graceWindowDays: number },
): Promise<DurabilityFinding[]> {
  const window = `the grace window (retention.graceWindowDays, ${days(options.graceWindowDays)})`;
  const doing = 'checking what the vault database keeps of destroyed keys (WAL archiving, replicas, slots)';
  // The first query also proves the server is reachable: a failure here throws DATABASE.
  const who = await query<{ role: string }>(ctx.pool, doing, 'SELECT current_user AS role');
  const role = who.rows[0]?.role ?? 'the vault role';
  const grant = `GRANT pg_monitor TO ${quoteIdent(role)}`;
  const findings: DurabilityFinding[] = [];

  const archive = await inspectArchive(ctx, doing, window, grant);
  if (archive !== null) findings.push(archive);

  const senders = await read<{ application_name: string | null; state: string | null }>(
    ctx,
    doing,
    'SELECT application_name, state FROM pg_catalog.pg_stat_replication ORDER BY pid',
  );
  if ('denied' in senders) {
    findings.push({
      code: DurabilityCode.REPLICAS_UNCHECKED,
      message:
        'Whether replicas or WAL receivers stream the vault database\'s WAL could not be checked ' +
        `(${senders.denied}): run \`${grant}\`, or check pg_stat_replication on the server yourself. ` +
        `Any replica, WAL receiver or base backup keeps destroyed keys' wrapped form until its own retention ends; keep it within ${window}.`,
      details: { view: 'pg_stat_replication', denied: senders.denied, grant },
    });
  } else if (senders.rows.length > 0) {
    const n = senders.rows.length;
    const hidden = senders.rows.some((r) => r.state === null);
    const names = [...new Set(senders.rows.map((r) => r.application_name).filter((a): a is string => a !== null && a !== ''))];
    const states = [...new Set(senders.rows.map((r) => r.state).filter((s): s is string => s !== null))];
    const seen = [
      names.length > 0 ? `application_name ${listNames(names)}` : '',
      states.length > 0 ? `state ${states.join(', ')}` : '',
      hidden ? `details hidden from role ${role}: \`${grant}\` shows them` : '',
    ].filter((s) => s !== '');
    findings.push({
      code: DurabilityCode.REPLICAS,
      message:
        `${n} WAL streaming client${n === 1 ? ' is' : 's are'} attached to the vault database's server ` +
        `(pg_stat_replication${seen.length > 0 ? `: ${seen.join('; ')}` : ''}). A replica, WAL receiver or base backup ` +
        "copies the WAL, and with it destroyed keys' wrapped form, out of lethe's reach: keep its WAL and backups' " +
        `retention within ${window}, or the shred is final only when those copies have expired.`,
      details: { clients: n, applicationNames: names, states, detailsHidden: hidden },
    });
  }

  const slots = await read<{ slot_name: string; slot_type: string; active: boolean }>(
    ctx,
    doing,
    'SELECT slot_name, slot_type, active FROM pg_catalog.pg_replication_slots ORDER BY slot_name',
  );
  if ('denied' in slots) {
    findings.push({
      code: DurabilityCode.REPLICATION_SLOTS_UNCHECKED,
      message:
        'Whether replication slots keep the vault database\'s WAL could not be checked ' +
        `(${slots.denied}): run \`${grant}\`, or check pg_replication_slots on the server yourself. ` +
        `A slot keeps every WAL segment its consumer has not confirmed, however old; keep consumers within ${window}.`,
      details: { view: 'pg_replication_slots', denied: slots.denied, grant },
    });
  } else if (slots.rows.length > 0) {
    const n = slots.rows.length;
    const inactive = slots.rows.filter((s) => !s.active).map((s) => s.slot_name);
    findings.push({
      code: DurabilityCode.REPLICATION_SLOTS,
      message:
        `The vault database's server has ${n} replication slot${n === 1 ? '' : 's'} ` +
        `(${listNames(slots.rows.map((s) => `${s.slot_name}: ${s.slot_type}, ${s.active ? 'active' : 'inactive'}`))}). ` +
        "A slot keeps every WAL segment its consumer has not confirmed in pg_wal, however old, and with them destroyed keys' " +
        `wrapped form: drop slots nothing consumes${inactive.length > 0 ? ` (inactive: ${listNames(inactive)})` : ''} and keep ` +
        `consumers' lag and retention within ${window}.`,
      details: {
        slots: slots.rows.map((s) => ({ name: s.slot_name, type: s.slot_type, active: s.active })),
      },
    });
  }
  return findings;
}

/** The archive finding, or null when `archive_mode` is off. */
async function inspectArchive(
  ctx: VaultContext,
  doing: string,
  window: string,
  grant: string,
): Promise<DurabilityFinding | null> {
  const mode = await read<{ mode: string }>(ctx, doing, `SELECT current_setting('archive_mode') AS mode`);
  if ('denied' in mode) {
    return {
      code: DurabilityCode.WAL_ARCHIVE_UNCHECKED,
      message:
        `Whether the vault database archives its WAL could not be checked (${mode.denied}): run \`${grant}\`, ` +
        `or check archive_mode on the server yourself. A WAL archive keeps destroyed keys' wrapped form until its own ` +
        `retention ends; keep it within ${window}.`,
      details: { setting: 'archive_mode', denied: mode.denied, grant },
    };
  }
  const value = mode.rows[0]?.mode ?? 'off';
  if (value === 'off') return null;
  // Only whether each is set leaves the server: a command's text can hold credentials.
  const targets = await read<{ command_set: boolean; library_set: boolean | null }>(
    ctx,
    doing,
    `SELECT current_setting('archive_command') <> '' AS command_set,
            current_setting('archive_library', true) <> '' AS library_set`,
  );
  const setting = (v: boolean | null | undefined): 'set' | 'not set' => (v === true ? 'set' : 'not set');
  const command = 'denied' in targets ? 'unknown' : setting(targets.rows[0]?.command_set);
  const library = 'denied' in targets ? 'unknown' : setting(targets.rows[0]?.library_set);
  const details: JsonObject = { archiveMode: value, archiveCommand: command, archiveLibrary: library };
  if ('denied' in targets) {
    details['denied'] = targets.denied;
    details['grant'] = grant;
  }
  const configured = `archive_mode=${value}, archive_command ${command}, archive_library ${library}`;
  if (command === 'not set' && library === 'not set') {
    return {
      code: DurabilityCode.WAL_ARCHIVE,
      message:
        `The vault database has WAL archiving on with nowhere to archive to (${configured}): PostgreSQL keeps every ` +
        "WAL segment in pg_wal until it is archived, so destroyed keys' wrapped form stays there indefinitely. " +
        `Turn archive_mode off, or set an archive whose retention is within ${window}.`,
      details,
    };
  }
  return {
    code: DurabilityCode.WAL_ARCHIVE,
    message:
      `The vault database archives its WAL (${configured}${command === 'unknown' ? `; \`${grant}\` shows whether a command is set` : ''}): ` +
      "archived segments from a destroyed key's creation up to and including its destruction may hold its wrapped form " +
      '(row versions, full-page images), which the master key opens. ' +
      `Keep the WAL archive's retention within ${window}, or the shred is final only when those segments have expired.`,
    details,
  };
}
