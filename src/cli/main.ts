import { parseArgs, type ParseArgsConfig } from 'node:util';
import { configPath, loadConfig, logLevelOverride } from '../config/index.ts';
import { ErrorCode, ExitCode, LetheError, exitCodeFor, isLetheError, scrubSecrets } from '../errors/index.ts';
import { Runtime } from '../jobs/runtime.ts';
import { createLogger, humanLogDestination, type Logger } from '../log/index.ts';
import { COMMANDS, type Command, type CommandContext } from './commands.ts';
import { ProgressBar } from './progress.ts';
import { unknownCommandMessage } from './unknown-command.ts';

const HELP = `lethe — encrypted, verifiable backups of a chat store, with crypto-shredding

usage: lethe <command> [options]        (every command takes --config FILE)

  init                          create the vault, master key and signing key
  init --enrol NAME --ssh-key FILE.pub   also enrol the first person who signs approvals
  init --roles [--print-sql] [--login --password-dir DIR]   per-job vault roles (least privilege)
  seed --scale small|medium|large   fill the chat store with the reference demo data
  backup [--json]               take a snapshot
  snapshots [--json]            list complete snapshots
  verify [--snapshot ID|latest] [--json]   restore drill into a scratch database
  restore --snapshot ID --target URL [--tenant ID] [--replace]
  audit verify [--json]         check the audit log's hash chain
  doctor [--job JOB] [--json]   check config, connections, TLS, bucket, credentials and key files
  report --from DATE --to DATE [--out FILE.html] [--json]   signed evidence for auditors
  keys export --out FILE        export the wrapped dimension keys (disaster recovery)
  keys rotate-master --reason T  re-wrap every dimension key to a new master-key epoch
  keys epochs                   list master-key epochs (current, retired, destroyed)
  hold place --case ID --tenant T [--user U] [--conversation C] [--from DATE] [--to DATE] --reason TEXT SIGNED
  hold release --case ID SIGNED    hold list [--all] [--json]     legal holds
  erase request --tenant T (--user U | --conversation C | --all) --reason TEXT SIGNED
  erase approve ID SIGNED   erase list   erase show ID   deletion requests (two-person rule, by keys)
  people enrol --name NAME --ssh-key FILE.pub SIGNED   people revoke --fingerprint FP SIGNED   people list
                                SIGNED: --print-statement (the text to sign with
                                \`ssh-keygen -Y sign -n lethe-approval\`), then --signature FILE.sig
  lifecycle plan [--now ISO-8601] [--json]   what retention, holds and requests make due
  lifecycle apply [--actor NAME] [--json]   carry the plan out: re-wrap held cells, destroy keys, expire, delete
                                (--actor: who the audit log names; default: the login name)
  export --case ID --out DIR    a legal hold's data as NDJSON per table (e-discovery)
  vault backup | vault list | vault restore --from KEY    encrypted vault backups (grace window)
  daemon [--listen ADDR:PORT] [--json]   run the config's schedules; /healthz /readyz /metrics and a status page
  demo [--dir DIR] [--scale small|medium] [--json]   the whole cycle on the embedded default

Exit codes: 0 ok, 1 unexpected failure, 2 bad usage or config, 3 a check failed or
a rule refused (two-person rule, legal hold), 4 another run holds the job lock,
130 interrupted. See README.md.`;

function resolveCommand(argv: readonly string[]): { command: Command; rest: string[] } | undefined {
  const [first, second, ...others] = argv;
  if (first === undefined) return undefined;
  const two = second === undefined ? undefined : COMMANDS.get(`${first} ${second}`);
  if (two !== undefined) return { command: two, rest: others };
  const one = COMMANDS.get(first);
  if (one !== undefined) return { command: one, rest: argv.slice(1) };
  return undefined;
}

function parse(command: Command, rest: string[]): { values: Record<string, string | boolean | undefined>; positionals: string[] } {
  const options: ParseArgsConfig['options'] = {
    config: { type: 'string' },
    json: { type: 'boolean' },
    help: { type: 'boolean', short: 'h' },
    ...command.options,
  };
  try {
    const { values, positionals } = parseArgs({ args: rest, options, strict: true, allowPositionals: command.positionals === true });
    return { values: values as Record<string, string | boolean | undefined>, positionals };
  } catch (err) {
    throw new LetheError(ErrorCode.USAGE, `${(err as Error).message}\nusage: lethe ${command.usage}`);
  }
}

function reportError(err: unknown, json: boolean, log: Logger | undefined): void {
  if (isLetheError(err)) {
    if (json) {
      process.stdout.write(`${JSON.stringify({ error: { code: err.code, message: err.message, ...(err.details ?? {}) } })}\n`);
    } else {
      process.stderr.write(`lethe: ${err.message}\n`);
    }
    if (err.code === ErrorCode.INTERNAL) log?.error({ err }, 'internal error');
    return;
  }
  const message = scrubSecrets(err instanceof Error ? err.message : String(err));
  if (json) process.stdout.write(`${JSON.stringify({ error: { code: 'UNEXPECTED', message } })}\n`);
  else process.stderr.write(`lethe: unexpected error: ${message}\n`);
  (log ?? createLogger('error')).error({ err }, 'unexpected error');
}

/**
 * What a command that failed after a SIGINT or SIGTERM reports: the stop was asked for, so
 * whatever the teardown broke on the way (a connection closed under a query) is not the
 * story. ABORTED (exit 130) either way; the original error goes to the debug log.
 */
function interrupted(command: string, signal: NodeJS.Signals, err: unknown, log: Logger | undefined): LetheError {
  if (isLetheError(err, ErrorCode.ABORTED)) return err;
  log?.debug({ err }, 'error while stopping after a signal');
  return new LetheError(ErrorCode.ABORTED, `${command}: stopped by ${signal} before it finished`, { cause: err });
}

/**
 * The command's logger. With `--json`, pino's JSON lines on stderr (for machines, like the
 * output). Without it, a person reads stderr: each record as one readable line
 * (`lethe: warning: …`), leaving out those whose fact the command prints from its result,
 * and written around the progress line.
 */
function commandLogger(level: string, json: boolean, bar: ProgressBar): Logger {
  if (json) return createLogger(level);
  return createLogger(level, humanLogDestination((text) => bar.print(text)));
}

/** Runs the CLI; resolves with the process exit code. */
export async function main(argv: readonly string[]): Promise<number> {
  const found = resolveCommand(argv);
  if (found === undefined) {
    // Help asked for goes to stdout and succeeds; no command at all is a usage error (a
    // script that lost its arguments must not pass), and an unknown one names the word.
    if (argv[0] === 'help' || argv[0] === '--help' || argv[0] === '-h') {
      process.stdout.write(`${HELP}\n`);
      return ExitCode.OK;
    }
    const message = argv.length === 0 ? `no command given\n${HELP}` : unknownCommandMessage(argv, [...COMMANDS.keys()]);
    if (argv.includes('--json')) {
      process.stdout.write(`${JSON.stringify({ error: { code: ErrorCode.USAGE, message } })}\n`);
    } else {
      process.stderr.write(`lethe: ${message}\n`);
    }
    return ExitCode.USAGE;
  }
  const { command, rest } = found;
  const json = rest.includes('--json');
  let runtime: Runtime | undefined;
  let log: Logger | undefined;
  const controller = new AbortController();
  // Progress only where a person watches: a terminal, and not --json (stderr may be the same terminal).
  const bar = new ProgressBar(process.stderr, { enabled: !json && process.stderr.isTTY });
  let interrupts = 0;
  let interruptedBy: NodeJS.Signals | undefined;
  const onSignal = (signal: NodeJS.Signals): void => {
    interrupts += 1;
    interruptedBy ??= signal;
    if (interrupts > 1) process.exit(ExitCode.ABORTED);
    bar.print(`lethe: ${signal} received, stopping cleanly (send again to exit at once)\n`);
    controller.abort();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    const { values, positionals } = parse(command, rest);
    if (values['help'] === true) {
      process.stdout.write(`usage: lethe ${command.usage}\n`);
      return ExitCode.OK;
    }
    const ctx: CommandContext = {
      values,
      positionals,
      json,
      signal: controller.signal,
      // A command prints once its job is done: the progress line goes for good (a log line
      // in the middle of a step goes around it instead, see commandLogger).
      out: (text) => {
        bar.done();
        process.stdout.write(text.endsWith('\n') ? text : `${text}\n`);
      },
      warn: (text) => {
        bar.done();
        process.stderr.write(`lethe: warning: ${text}\n`);
      },
      progress: (update) => {
        if (update === null || update === '') bar.done();
        else bar.update(typeof update === 'string' ? { step: update } : update);
      },
      runtime: async () => {
        if (runtime !== undefined) return runtime;
        const path = configPath(typeof values['config'] === 'string' ? values['config'] : undefined);
        const config = await loadConfig(path);
        log = commandLogger(logLevelOverride() ?? config.log.level, json, bar);
        runtime = new Runtime(config, log);
        return runtime;
      },
    };
    const code = await command.run(ctx);
    bar.done();
    return code;
  } catch (err) {
    bar.done();
    const failure = interruptedBy === undefined ? (runtime?.explainFailure(err) ?? err) : interrupted(command.name, interruptedBy, err, log);
    reportError(failure, json, log);
    return exitCodeFor(failure);
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await runtime?.close();
  }
}

// A reader that goes away (`lethe snapshots --json | head -1`) closes the pipe: what was left
// to print has nowhere to go, and the command's own result and exit code stand.
for (const stream of [process.stdout, process.stderr]) {
  stream.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code !== 'EPIPE') throw err;
  });
}
process.exitCode = await main(process.argv.slice(2));
