import { readFile } from 'node:fs/promises';
import { ErrorCode, ExitCode, LetheError } from '../errors/index.ts';
import { actStatement, allowedSignersLine, enrolAct, enrolPerson, revokePerson } from '../lifecycle/approvals.ts';
import { parseSshPublicKey } from '../crypto/index.ts';
import type { Approver } from '../vault/index.ts';
import { APPROVAL_OPTIONS, printStatement, readSignatureFile, wantsStatement } from './approval-args.ts';
import type { Command } from './commands.ts';
import { stringOpt } from './format.ts';

/**
 * `lethe people enrol|revoke|list`: the people whose SSH keys may sign deletion requests,
 * approvals and legal holds. The first is enrolled by `lethe init --enrol NAME --ssh-key
 * FILE.pub`; every later enrolment and every revocation is signed by an enrolled person.
 * Exit codes: 0 done; 2 bad usage (a key file that is not an ssh-ed25519 public key, a
 * signature file that is not an SSH signature); 3 refused (a signature that does not verify
 * or is by a key not enrolled or revoked, a key or name already enrolled).
 */

const ENROL_USAGE = 'people enrol --name NAME --ssh-key FILE.pub (--print-statement | --signature FILE) [--json] [--config FILE]';
const REVOKE_USAGE = 'people revoke --fingerprint SHA256:... (--print-statement | --signature FILE) [--json] [--config FILE]';

// A public key line is under 200 bytes; a .pub file larger than this is not one.
const MAX_PUBLIC_KEY_FILE_BYTES = 16_384;

/** Reads an SSH public key file (`--ssh-key FILE.pub`). USAGE naming the file when it cannot. */
export async function readPublicKeyFile(path: string): Promise<string> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new LetheError(ErrorCode.USAGE, `--ssh-key ${path}: cannot read it (${(err as NodeJS.ErrnoException).code ?? 'error'}); give the .pub file of an ssh-ed25519 key`, {
      cause: err,
    });
  }
  if (text.length > MAX_PUBLIC_KEY_FILE_BYTES) throw new LetheError(ErrorCode.USAGE, `--ssh-key ${path} is too large to be an SSH public key file`);
  return text;
}

function need(value: string | undefined, flag: string, usage: string): string {
  if (value === undefined || value.trim() === '') throw new LetheError(ErrorCode.USAGE, `missing ${flag}\nusage: lethe ${usage}`);
  return value;
}

/** An enrolled key as JSON (`people list --json`). */
export function approverJson(a: Approver): Record<string, unknown> {
  return {
    name: a.name,
    fingerprint: a.fingerprint,
    publicKey: a.publicKey,
    allowedSigners: allowedSignersLine(a),
    enrolledAt: a.enrolledAt.toISOString(),
    enrolledBy: a.enrolledBy,
    revokedAt: a.revokedAt?.toISOString() ?? null,
    revokedBy: a.revokedBy,
    active: a.revokedAt === null,
  };
}

export const peopleEnrolCommand: Command = {
  name: 'people enrol',
  usage: ENROL_USAGE,
  options: { name: { type: 'string' }, 'ssh-key': { type: 'string' }, ...APPROVAL_OPTIONS },
  async run(ctx) {
    const name = need(stringOpt(ctx.values, 'name'), '--name NAME', ENROL_USAGE);
    const keyText = await readPublicKeyFile(need(stringOpt(ctx.values, 'ssh-key'), '--ssh-key FILE.pub', ENROL_USAGE));
    if (stringOpt(ctx.values, 'actor') !== undefined) {
      throw new LetheError(ErrorCode.USAGE, `an enrolment is always signed by an enrolled person: --actor is not accepted\nusage: lethe ${ENROL_USAGE}`);
    }
    const rt = await ctx.runtime();
    const vault = await rt.vault();
    if (wantsStatement(ctx)) return printStatement(ctx, await actStatement(vault, enrolAct(name, parseSshPublicKey(keyText, '--ssh-key'))));
    const file = stringOpt(ctx.values, 'signature');
    const approver = await enrolPerson(vault, name, keyText, file === undefined ? undefined : await readSignatureFile(file), ENROL_USAGE);
    if (ctx.json) ctx.out(JSON.stringify(approverJson(approver)));
    else ctx.out(`enrolled ${approver.name} with key ${approver.fingerprint} (signed by ${approver.enrolledBy ?? '?'})`);
    return ExitCode.OK;
  },
};

export const peopleRevokeCommand: Command = {
  name: 'people revoke',
  usage: REVOKE_USAGE,
  options: { fingerprint: { type: 'string' }, ...APPROVAL_OPTIONS },
  async run(ctx) {
    const fingerprint = need(stringOpt(ctx.values, 'fingerprint'), '--fingerprint SHA256:...', REVOKE_USAGE).trim();
    const rt = await ctx.runtime();
    const vault = await rt.vault();
    if (wantsStatement(ctx)) return printStatement(ctx, await actStatement(vault, { action: 'people.revoke', fingerprint }));
    const file = stringOpt(ctx.values, 'signature');
    const approver = await revokePerson(vault, fingerprint, file === undefined ? undefined : await readSignatureFile(file), REVOKE_USAGE);
    if (ctx.json) ctx.out(JSON.stringify(approverJson(approver)));
    else ctx.out(`revoked ${approver.name}'s key ${approver.fingerprint}: it signs nothing from now on (what it signed before stays valid)`);
    return ExitCode.OK;
  },
};

export const peopleListCommand: Command = {
  name: 'people list',
  usage: 'people list [--allowed-signers] [--json] [--config FILE]',
  options: { 'allowed-signers': { type: 'boolean' } },
  async run(ctx) {
    const rt = await ctx.runtime();
    const people = await (await rt.vault()).listApprovers();
    if (ctx.values['allowed-signers'] === true) {
      // Every key ever enrolled: a revoked key's old signatures still verify.
      for (const a of people) ctx.out(allowedSignersLine(a));
      return ExitCode.OK;
    }
    if (ctx.json) ctx.out(JSON.stringify({ people: people.map(approverJson) }));
    else if (people.length === 0) ctx.out('nobody is enrolled: `lethe init --enrol NAME --ssh-key FILE.pub` enrols the first person');
    else {
      for (const a of people) {
        const state = a.revokedAt === null ? 'ACTIVE' : `revoked ${a.revokedAt.toISOString()} by ${a.revokedBy ?? '?'}`;
        ctx.out(`${a.name}  ${a.fingerprint}  ${state}  enrolled ${a.enrolledAt.toISOString()} ${a.enrolledBy === null ? 'by lethe init' : `by ${a.enrolledBy}`}`);
      }
    }
    return ExitCode.OK;
  },
};
