import { open } from 'node:fs/promises';
import { ErrorCode, ExitCode, LetheError } from '../errors/index.ts';
import type { Runtime } from '../jobs/runtime.ts';
import { APPROVAL_NAMESPACE, MAX_SIGNATURE_BYTES, type Attestation } from '../lifecycle/approvals.ts';
import type { CommandContext } from './commands.ts';
import { stringOpt } from './format.ts';

/**
 * The options every signed act shares (erase request/approve, hold place/release, people
 * enrol/revoke): `--print-statement` prints the exact text to sign and changes nothing;
 * `--signature FILE` submits the SSHSIG `ssh-keygen -Y sign -n lethe-approval` wrote;
 * `--actor NAME` is a typed name, accepted only with `approvals.allowUnsigned: true`.
 */
export const APPROVAL_OPTIONS = {
  signature: { type: 'string' },
  'print-statement': { type: 'boolean' },
  actor: { type: 'string' },
} as const;

/** True when the command is asked for the statement only. */
export function wantsStatement(ctx: CommandContext): boolean {
  return ctx.values['print-statement'] === true;
}

/**
 * Prints `statement` exactly (the bytes to sign) on stdout, or as `{"statement", "namespace"}`
 * with --json; how to sign it goes to stderr so a redirect captures the statement alone.
 */
export function printStatement(ctx: CommandContext, statement: string): number {
  if (ctx.json) ctx.out(JSON.stringify({ statement, namespace: APPROVAL_NAMESPACE }));
  else {
    ctx.out(statement);
    process.stderr.write(
      `lethe: sign exactly this text: save it to FILE, run \`ssh-keygen -Y sign -f ~/.ssh/id_ed25519 -n ${APPROVAL_NAMESPACE} FILE\`, ` +
        'then run the same command with --signature FILE.sig instead of --print-statement\n',
    );
  }
  return ExitCode.OK;
}

/** Reads the signature file named by --signature (at most a few KiB). USAGE naming the file when it cannot. */
export async function readSignatureFile(path: string): Promise<string> {
  let handle;
  try {
    handle = await open(path, 'r');
  } catch (err) {
    throw new LetheError(ErrorCode.USAGE, `--signature ${path}: cannot read it (${(err as NodeJS.ErrnoException).code ?? 'error'}); give the FILE.sig ssh-keygen wrote`, {
      cause: err,
    });
  }
  try {
    const buffer = Buffer.alloc(MAX_SIGNATURE_BYTES + 1);
    const { bytesRead } = await handle.read(buffer, 0, buffer.length, 0);
    if (bytesRead > MAX_SIGNATURE_BYTES) {
      throw new LetheError(ErrorCode.USAGE, `--signature ${path} is larger than ${MAX_SIGNATURE_BYTES} bytes: not an SSH signature file`);
    }
    return buffer.subarray(0, bytesRead).toString('utf8');
  } finally {
    await handle.close();
  }
}

/** The attestation the options give: the signature file's text, or a typed name with the config's allowUnsigned. */
export async function attestationFrom(ctx: CommandContext, rt: Runtime): Promise<Attestation> {
  const file = stringOpt(ctx.values, 'signature');
  return {
    signature: file === undefined ? undefined : await readSignatureFile(file),
    actor: stringOpt(ctx.values, 'actor'),
    allowUnsigned: rt.config.approvals.allowUnsigned,
  };
}
