import { parseSshPublicKey, verifySshSignature, type SshPublicKey } from '../crypto/index.ts';
import { ErrorCode, LetheError } from '../errors/index.ts';
import type { Approver, SignedAct, Vault } from '../vault/index.ts';

/**
 * Signed approvals: each person who requests, approves, places or releases signs the exact
 * statement of that act with their enrolled SSH Ed25519 key (`ssh-keygen -Y sign -n
 * lethe-approval`). lethe verifies the SSHSIG, checks the key is enrolled and not revoked,
 * and keeps the statement and the signature, so anyone can check them later with stock
 * `ssh-keygen -Y verify` and no lethe code.
 */

/** The SSHSIG namespace every lethe statement is signed in. */
export const APPROVAL_NAMESPACE = 'lethe-approval';

const STATEMENT_HEADER = 'lethe-approval v1';
// A statement's signature file is under 1 KiB; this bounds what is read.
export const MAX_SIGNATURE_BYTES = 8192;

/** An act to sign: its action and fields, in the order the statement lists them. */
export type Act =
  | {
      readonly action: 'erase.request';
      /** Null for a person across every tenant, which then also says `tenants: "all"`. */
      readonly tenant: string | null;
      readonly tenants?: 'all';
      readonly scope: string;
      readonly subject: string | null;
      readonly reason: string;
    }
  | {
      readonly action: 'erase.approve';
      readonly request: string;
      readonly tenant: string | null;
      readonly tenants?: 'all';
      readonly scope: string;
      readonly subject: string | null;
      readonly reason: string;
      readonly requestedBy: string;
      /** The requester's key fingerprint; null when the request was a typed name. */
      readonly requestedKey: string | null;
    }
  | {
      readonly action: 'hold.place';
      readonly case: string;
      readonly tenant: string;
      readonly user: string | null;
      readonly conversation: string | null;
      readonly from: string | null;
      readonly to: string | null;
      readonly reason: string;
    }
  | { readonly action: 'hold.release'; readonly case: string; readonly reason: string | null }
  | { readonly action: 'people.enrol'; readonly name: string; readonly key: string }
  | { readonly action: 'people.revoke'; readonly fingerprint: string };

/**
 * The exact text a person signs for `act` in the vault whose master recipient is `vault`:
 * a header line, then one `field: value` line per field with each value as a JSON string
 * (or `null`), so no reason text can forge a line. The vault's master recipient ties the
 * statement to one deployment: a signature for another vault is refused here.
 */
export function statementText(vault: string, act: Act): string {
  const lines = [STATEMENT_HEADER, `action: ${act.action}`, `vault: ${JSON.stringify(vault)}`];
  for (const [field, value] of Object.entries(act)) {
    if (field === 'action') continue;
    lines.push(`${field}: ${value === null ? 'null' : JSON.stringify(value)}`);
  }
  return `${lines.join('\n')}\n`;
}

/** The statement of `act` for this vault (see {@link statementText}). */
export async function actStatement(vault: Vault, act: Act): Promise<string> {
  return statementText(await vault.getMasterRecipient(), act);
}

/**
 * Who does an act, and how it is proven: the armored SSHSIG over the act's statement, or a
 * typed name, which is accepted only where the config says `approvals.allowUnsigned: true`
 * (demos and tests; the caller passes that setting as `allowUnsigned`).
 */
export interface Attestation {
  /** The armored SSHSIG (the FILE.sig of `ssh-keygen -Y sign -n lethe-approval FILE`). */
  readonly signature?: string | undefined;
  /** A typed name: only with `allowUnsigned`. */
  readonly actor?: string | undefined;
  readonly allowUnsigned?: boolean | undefined;
}

/** The person an attested act is recorded under, with its proof (null for a typed name). */
export interface Attested {
  readonly name: string;
  readonly proof: SignedAct | null;
  readonly approver: Approver | null;
}

/**
 * Checks `by` for `act`: a signature must verify over the act's exact statement, by an
 * enrolled key that is not revoked; the act is then recorded under the enrolled name. A
 * typed name passes only with `allowUnsigned`. Throws REFUSED for a signature that does not
 * hold (changed statement, other namespace, unenrolled or revoked key) and for an unsigned
 * act where signatures are required; USAGE when the file is not an SSH signature, when both
 * or neither are given, or for an empty name.
 */
export async function attest(vault: Vault, act: Act, by: Attestation, usage: string): Promise<Attested> {
  const signature = by.signature;
  if (signature !== undefined) {
    if (by.actor !== undefined) {
      throw new LetheError(ErrorCode.USAGE, `give --signature FILE or --actor NAME, not both: a signed act is recorded under the name its key was enrolled with\nusage: lethe ${usage}`);
    }
    const statement = await actStatement(vault, act);
    const check = verifySshSignature(signature, new TextEncoder().encode(statement), APPROVAL_NAMESPACE);
    const approver = await vault.getApprover(check.key.fingerprint);
    if (approver === null) {
      throw new LetheError(
        ErrorCode.REFUSED,
        `the signature is by key ${check.key.fingerprint}, which is not enrolled in this vault: ` +
          'an enrolled person enrols it first (`lethe people enrol`), or sign with your enrolled key (`lethe people list`)',
        { details: { fingerprint: check.key.fingerprint } },
      );
    }
    if (approver.revokedAt !== null) {
      throw new LetheError(
        ErrorCode.REFUSED,
        `the signature is by ${approver.name}'s key ${approver.fingerprint}, revoked at ${approver.revokedAt.toISOString()}: ` +
          'it signs nothing any more; enrol a new key (`lethe people enrol`)',
        { details: { fingerprint: approver.fingerprint } },
      );
    }
    return { name: approver.name, proof: { key: approver.fingerprint, statement, signature: normaliseArmor(signature) }, approver };
  }
  if (by.actor === undefined) {
    throw new LetheError(
      ErrorCode.USAGE,
      'this act must be signed: print its statement with --print-statement, sign it with ' +
        `\`ssh-keygen -Y sign -f ~/.ssh/id_ed25519 -n ${APPROVAL_NAMESPACE} FILE\` and give --signature FILE.sig\nusage: lethe ${usage}`,
    );
  }
  if (by.allowUnsigned !== true) {
    throw new LetheError(
      ErrorCode.REFUSED,
      `--actor ${JSON.stringify(by.actor)} is a typed name, and this deployment requires signed approvals: print the statement ` +
        `with --print-statement, sign it with \`ssh-keygen -Y sign -f ~/.ssh/id_ed25519 -n ${APPROVAL_NAMESPACE} FILE\` and give ` +
        '--signature FILE.sig (approvals.allowUnsigned: true in the config allows typed names, for demos and tests only)',
    );
  }
  const name = by.actor.trim();
  if (name === '') throw new LetheError(ErrorCode.USAGE, `--actor NAME is empty: give a name\nusage: lethe ${usage}`);
  return { name, proof: null, approver: null };
}

/** The armor as ssh-keygen writes it (trimmed, one final newline), so the stored copy verifies as a file. */
function normaliseArmor(armored: string): string {
  return `${armored.trim()}\n`;
}

/** A person's name as enrolment accepts it (also safe as an allowed_signers principal and `-I` argument). */
export const PERSON_NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}$/;

function checkName(name: string): string {
  const n = name.trim();
  if (!PERSON_NAME_PATTERN.test(n)) {
    throw new LetheError(
      ErrorCode.USAGE,
      `name ${JSON.stringify(name)} is not allowed: use letters, digits, '.', '_', '@', '+' and '-' (at most 64, starting with a letter or digit), e.g. dpo-ann`,
    );
  }
  return n;
}

/** The act of enrolling `key` as `name`, for --print-statement and the check. */
export function enrolAct(name: string, key: SshPublicKey): Extract<Act, { action: 'people.enrol' }> {
  return { action: 'people.enrol', name: checkName(name), key: key.line };
}

/**
 * Enrols the first person of a vault (`lethe init --enrol NAME --ssh-key FILE.pub`): no
 * signature, since nobody is enrolled to sign; refused (REFUSED) once any active key exists.
 * Returns null when exactly this key is already enrolled under this name (init is idempotent).
 */
export async function enrolFirst(vault: Vault, name: string, publicKeyText: string, actor: string): Promise<Approver | null> {
  const key = parseSshPublicKey(publicKeyText, '--ssh-key');
  const who = checkName(name);
  const known = await vault.getApprover(key.fingerprint);
  if (known !== null && known.revokedAt === null && known.name === who) return null;
  const { approver } = await vault.enrolApprover({ fingerprint: key.fingerprint, name: who, publicKey: key.line, enrolment: null }, (a) => ({
    actor,
    action: 'people.enrol',
    subject: a.fingerprint,
    details: { name: a.name, fingerprint: a.fingerprint, publicKey: a.publicKey, enrolledBy: null, first: true },
  }));
  return approver;
}

/**
 * Enrols `name` with the SSH public key `publicKeyText`, proven by `signature`: an enrolled,
 * unrevoked person's SSHSIG over the enrolment statement ({@link enrolAct}). Refuses
 * (REFUSED) a signature that does not hold or is by a key not enrolled, a key already
 * enrolled and a name an active key has; USAGE for a malformed key or name.
 */
export async function enrolPerson(vault: Vault, name: string, publicKeyText: string, signature: string | undefined, usage: string): Promise<Approver> {
  const key = parseSshPublicKey(publicKeyText, '--ssh-key');
  const act = enrolAct(name, key);
  const by = await attest(vault, act, { signature }, usage);
  if (by.proof === null) throw new LetheError(ErrorCode.INTERNAL, 'enrolment without a signature');
  const proof = by.proof;
  const { approver } = await vault.enrolApprover(
    { fingerprint: key.fingerprint, name: act.name, publicKey: key.line, enrolment: proof },
    (a) => ({
      actor: by.name,
      action: 'people.enrol',
      subject: a.fingerprint,
      details: { name: a.name, fingerprint: a.fingerprint, publicKey: a.publicKey, enrolledBy: proof.key },
    }),
  );
  return approver;
}

/** Revokes the enrolled key `fingerprint`, proven by an enrolled person's signature over the revocation statement. */
export async function revokePerson(vault: Vault, fingerprint: string, signature: string | undefined, usage: string): Promise<Approver> {
  const act: Act = { action: 'people.revoke', fingerprint };
  const by = await attest(vault, act, { signature }, usage);
  if (by.proof === null) throw new LetheError(ErrorCode.INTERNAL, 'revocation without a signature');
  const { approver } = await vault.revokeApprover(fingerprint, by.proof, (a) => ({
    actor: by.name,
    action: 'people.revoke',
    subject: a.fingerprint,
    details: { name: a.name, fingerprint: a.fingerprint, revokedBy: by.proof?.key ?? null },
  }));
  return approver;
}

/** The allowed_signers line for an enrolled person (the file `ssh-keygen -Y verify -f` reads). */
export function allowedSignersLine(approver: Pick<Approver, 'name' | 'publicKey'>): string {
  return `${approver.name} namespaces="${APPROVAL_NAMESPACE}" ${approver.publicKey}`;
}
