import type { ParseArgsConfig } from 'node:util';
import type { Runtime } from '../jobs/runtime.ts';
import type { ProgressUpdate } from './progress.ts';
import { auditVerifyCommand } from './cmd-audit.ts';
import { backupCommand, snapshotsCommand } from './cmd-backup.ts';
import { daemonCommand } from './cmd-daemon.ts';
import { demoCommand } from './cmd-demo.ts';
import { doctorCommand } from './cmd-doctor.ts';
import { initCommand } from './cmd-init.ts';
import { keysExportCommand } from './cmd-keys.ts';
import { keysEpochsCommand, keysRotateMasterCommand } from './cmd-master.ts';
import { eraseApproveCommand, eraseListCommand, eraseRequestCommand, eraseShowCommand } from './cmd-erase.ts';
import { holdListCommand, holdPlaceCommand, holdReleaseCommand } from './cmd-hold.ts';
import { peopleEnrolCommand, peopleListCommand, peopleRevokeCommand } from './cmd-people.ts';
import { lifecycleApplyCommand, lifecyclePlanCommand } from './cmd-lifecycle.ts';
import { exportCommand } from './cmd-export.ts';
import { reportCommand } from './cmd-report.ts';
import { restoreCommand, verifyCommand } from './cmd-verify.ts';
import { seedCommand } from './cmd-seed.ts';
import { vaultBackupCommand, vaultListCommand, vaultRestoreCommand } from './cmd-vault.ts';

/** What a command gets: parsed options, output functions and the lazily opened runtime. */
export interface CommandContext {
  readonly values: Record<string, string | boolean | undefined>;
  /** Arguments after the command name that are not options (only when `positionals` is set). */
  readonly positionals?: readonly string[];
  readonly json: boolean;
  readonly signal: AbortSignal;
  /** Command output (stdout). */
  readonly out: (text: string) => void;
  /** A warning for the operator, on stderr (`lethe: warning: …`), also with --json. */
  readonly warn: (text: string) => void;
  /**
   * Progress of a long step, drawn as one line on a terminal (stderr: a bar, counts against
   * totals, rate, ETA; at most ten redraws a second) and silent when stderr is not a terminal
   * or with --json. `null` ends the step (erases the line). A plain string shows as it is.
   */
  readonly progress: (update: ProgressUpdate | string | null) => void;
  readonly runtime: () => Promise<Runtime>;
}

export interface Command {
  readonly name: string;
  readonly usage: string;
  readonly options: NonNullable<ParseArgsConfig['options']>;
  readonly positionals?: boolean;
  /** Resolves with the exit code. Throws LetheError for operator-facing failures. */
  run(ctx: CommandContext): Promise<number>;
}

export const COMMANDS: ReadonlyMap<string, Command> = new Map(
  [
    initCommand,
    seedCommand,
    backupCommand,
    snapshotsCommand,
    verifyCommand,
    restoreCommand,
    auditVerifyCommand,
    doctorCommand,
    reportCommand,
    keysExportCommand,
    keysRotateMasterCommand,
    keysEpochsCommand,
    holdPlaceCommand,
    holdReleaseCommand,
    holdListCommand,
    eraseRequestCommand,
    eraseApproveCommand,
    eraseListCommand,
    eraseShowCommand,
    peopleEnrolCommand,
    peopleRevokeCommand,
    peopleListCommand,
    lifecyclePlanCommand,
    lifecycleApplyCommand,
    exportCommand,
    vaultBackupCommand,
    vaultListCommand,
    vaultRestoreCommand,
    demoCommand,
    daemonCommand,
  ].map((c) => [c.name, c]),
);
