import { ErrorCode, ExitCode, LetheError } from '../errors/index.ts';
import { verifyCertificate, type DestructionCertificate } from '../lifecycle/certificate.ts';
import { tombstoneLock, type ForeignTombstone } from '../lifecycle/destroy.ts';
import { actStatement } from '../lifecycle/approvals.ts';
import {
  approvalStatement,
  approveErasure,
  certificateKey,
  erasureKeyId,
  noPersonFound,
  personReach,
  requestAct,
  requestErasure,
  type PersonTenantReach,
} from '../lifecycle/erase.ts';
import { describeEraseTarget } from '../lifecycle/erase-subject.ts';
import type { SubjectColumns } from '../lifecycle/certificate.ts';
import { subjectColumns, type Mapping } from '../mapping/index.ts';
import type { EraseScope } from '../lifecycle/types.ts';
import { logVaultDurability } from '../lifecycle/vault-durability.ts';
import type { StoredEraseRequest } from '../vault/index.ts';
import type { Command, CommandContext } from './commands.ts';
import { APPROVAL_OPTIONS, attestationFrom, printStatement, wantsStatement } from './approval-args.ts';
import { printVaultDurabilityWarnings } from './durability-warnings.ts';
import { stringOpt } from './format.ts';

/**
 * `lethe erase request|approve|list|show`: deletion requests (GDPR Art. 17). Exit codes:
 * 0 done; 2 bad usage (missing or conflicting options, unknown request id, no certificate
 * yet, a --signature file that is not an SSH signature); 3 refused by rule (the requester's
 * key approving their own request, a signature that does not verify or is by a key not
 * enrolled, an unsigned act where signatures are required, a legal hold covering the data, a
 * request already executed). See runbooks/deletion-request.md.
 *
 * request and approve are signed acts: `--print-statement` prints the exact statement, the
 * person signs it with `ssh-keygen -Y sign -n lethe-approval`, and `--signature FILE.sig`
 * submits it (approval-args.ts).
 *
 * `erase request --subject U --all-tenants` names a person across every tenant: it lists the
 * tenants where the vault holds a `user:T/U` key of theirs (with the cells and snapshots each
 * reaches) and refuses (2) when there is none; approval finds the tenants again and destroys
 * every such key under the one approval, with one certificate.
 *
 * `erase approve` also reports what the vault database keeps of destroyed keys beyond lethe
 * (WAL archiving, replicas, replication slots): labelled warnings on stderr and a warn log
 * line when keys were destroyed; `vaultDurability` in the `--json` result always.
 */

function requestJson(r: StoredEraseRequest): Record<string, unknown> {
  return {
    id: r.id,
    tenant: r.tenant,
    allTenants: r.tenant === null,
    scope: r.scope,
    subject: r.subject,
    // A person across every tenant has one key per tenant, found at execution.
    keyId: r.tenant === null ? null : erasureKeyId({ ...r, tenant: r.tenant }),
    reason: r.reason,
    status: r.status,
    requestedBy: r.requestedBy,
    requestedAt: r.requestedAt.toISOString(),
    approvedBy: r.approvedBy,
    approvedAt: r.approvedAt?.toISOString() ?? null,
    requestedKey: r.requestProof?.key ?? null,
    approvedKey: r.approvalProof?.key ?? null,
    executedAt: r.executedAt?.toISOString() ?? null,
    certificate: r.status === 'executed' ? certificateKey(r.id) : null,
  };
}

function subjectText(r: { tenant: string | null; scope: EraseScope; subject: string | null }): string {
  return describeEraseTarget(r);
}

function reachJson(found: readonly PersonTenantReach[]): Record<string, unknown>[] {
  return found.map((f) => ({ ...f }));
}

/** One line per tenant where the person has a key: what `--all-tenants` would erase there. */
function reachLines(user: string, found: readonly PersonTenantReach[]): string[] {
  const lines = [`user ${JSON.stringify(user)} has a key in ${found.length} tenant${found.length === 1 ? '' : 's'}:`];
  for (const f of found) {
    lines.push(
      `  tenant ${JSON.stringify(f.tenant)}  ${f.keyId}  ` +
        (f.destroyed ? 'already destroyed (an earlier erasure)' : `${f.cellKeys} cell keys; ${f.cells} cells in ${f.snapshots} snapshots`),
    );
  }
  return lines;
}

function usage(message: string, usageLine: string): LetheError {
  return new LetheError(ErrorCode.USAGE, `${message}\nusage: lethe ${usageLine}`);
}

function oneId(ctx: CommandContext, usageLine: string): string {
  const ids = ctx.positionals ?? [];
  const [id] = ids;
  if (id === undefined || ids.length !== 1) throw usage('give exactly one request id (see `lethe erase list`)', usageLine);
  return id;
}

const REQUEST_USAGE =
  'erase request (--tenant T (--user U | --subject U | --conversation C | --all) | --subject U --all-tenants) --reason TEXT (--print-statement | --signature FILE) [--json] [--config FILE]';

export const eraseRequestCommand: Command = {
  name: 'erase request',
  usage: REQUEST_USAGE,
  options: {
    tenant: { type: 'string' },
    user: { type: 'string' },
    conversation: { type: 'string' },
    all: { type: 'boolean' },
    subject: { type: 'string' },
    'all-tenants': { type: 'boolean' },
    reason: { type: 'string' },
    ...APPROVAL_OPTIONS,
  },
  async run(ctx) {
    const v = ctx.values;
    const tenant = stringOpt(v, 'tenant');
    const user = stringOpt(v, 'user');
    const conversation = stringOpt(v, 'conversation');
    const all = v['all'] === true;
    const reason = stringOpt(v, 'reason');
    const subject = stringOpt(v, 'subject');
    if (subject !== undefined && user !== undefined) throw usage('--subject U and --user U name the same person: give one of them', REQUEST_USAGE);
    // --subject U is the person, --user U its one-tenant spelling: with --tenant T both mean that tenant only.
    const person = subject ?? user;
    if (v['all-tenants'] === true) {
      if (person === undefined) throw usage('--all-tenants needs --subject U (the person\'s user id, as the chat store writes it)', REQUEST_USAGE);
      if (tenant !== undefined || conversation !== undefined || all) {
        throw usage('--all-tenants erases a person in every tenant: give --subject U alone, without --tenant, --conversation or --all', REQUEST_USAGE);
      }
      if (reason === undefined) throw usage('missing --reason TEXT (e.g. the ticket of the data subject\'s request)', REQUEST_USAGE);
      return requestPerson(ctx, person, reason);
    }
    if (tenant === undefined) {
      throw usage(
        subject === undefined ? 'missing --tenant T (or --subject U --all-tenants for a person in every tenant)' : '--subject U needs --tenant T (one tenant) or --all-tenants (every tenant)',
        REQUEST_USAGE,
      );
    }
    const chosen = [person !== undefined, conversation !== undefined, all].filter(Boolean).length;
    if (chosen !== 1) {
      throw usage('say what to erase with exactly one of --user U, --conversation C or --all (the whole tenant); --subject U is --user U', REQUEST_USAGE);
    }
    if (reason === undefined) throw usage('missing --reason TEXT (e.g. the ticket of the data subject\'s request)', REQUEST_USAGE);
    const scope: EraseScope = all ? 'tenant' : person !== undefined ? 'user' : 'conversation';
    const rt = await ctx.runtime();
    const vault = await rt.vault();
    const what = { tenant, scope, subject: person ?? conversation ?? null, reason };
    if (wantsStatement(ctx)) return printStatement(ctx, await actStatement(vault, requestAct(what)));
    const request = await requestErasure(vault, { ...what, ...(await attestationFrom(ctx, rt)) });
    if (ctx.json) ctx.out(JSON.stringify(requestJson(request)));
    else {
      ctx.out(`deletion request ${request.id} recorded: erase ${subjectText(request)}, requested by ${request.requestedBy}`);
      ctx.out(
        `Nothing is deleted yet. A second enrolled person must approve it: lethe erase approve ${request.id} --print-statement, ` +
          'sign that with their own key, then lethe erase approve ' + `${request.id} --signature FILE.sig`,
      );
    }
    return ExitCode.OK;
  },
};

/** `erase request --subject U --all-tenants`: shows where the person's data is, then records (or prints the statement). */
async function requestPerson(ctx: CommandContext, person: string, reason: string): Promise<number> {
  const rt = await ctx.runtime();
  const vault = await rt.vault();
  const what = { tenant: null, scope: 'user' as const, subject: person, reason };
  const act = requestAct(what);
  const found = await personReach(vault, person);
  if (wantsStatement(ctx)) {
    // The statement alone goes to stdout (it is signed as is); where the data is, to stderr.
    if (found.length === 0) throw noPersonFound(person);
    if (!ctx.json) process.stderr.write(`${reachLines(person, found).map((l) => `lethe: ${l}`).join('\n')}\n`);
    return printStatement(ctx, await actStatement(vault, act));
  }
  const request = await requestErasure(vault, { ...what, ...(await attestationFrom(ctx, rt)) });
  if (ctx.json) ctx.out(JSON.stringify({ ...requestJson(request), tenants: reachJson(found) }));
  else {
    ctx.out(`deletion request ${request.id} recorded: erase ${subjectText(request)}, requested by ${request.requestedBy}`);
    for (const line of reachLines(person, found)) ctx.out(line);
    ctx.out('Approval looks for the tenants again, so a tenant the person joined since is erased too.');
    ctx.out(
      `Nothing is deleted yet. A second enrolled person must approve it: lethe erase approve ${request.id} --print-statement, ` +
        'sign that with their own key, then lethe erase approve ' + `${request.id} --signature FILE.sig`,
    );
  }
  return ExitCode.OK;
}

const APPROVE_USAGE = 'erase approve ID (--print-statement | --signature FILE) [--json] [--config FILE]';

export const eraseApproveCommand: Command = {
  name: 'erase approve',
  usage: APPROVE_USAGE,
  positionals: true,
  options: { ...APPROVAL_OPTIONS },
  async run(ctx) {
    const id = oneId(ctx, APPROVE_USAGE);
    const rt = await ctx.runtime();
    const vault = await rt.vault();
    if (wantsStatement(ctx)) {
      const statement = await approvalStatement(vault, id);
      // The approver of a person in every tenant sees where their data is now, before signing.
      const request = await vault.getEraseRequest(id);
      if (!ctx.json && request !== null && request.tenant === null && request.subject !== null) {
        const found = await personReach(vault, request.subject);
        process.stderr.write(`${reachLines(request.subject, found).map((l) => `lethe: ${l}`).join('\n')}\n`);
      }
      return printStatement(ctx, statement);
    }
    const by = await attestationFrom(ctx, rt);
    const foreignTombstones: ForeignTombstone[] = [];
    const graceWindowDays = rt.config.retention.graceWindowDays;
    const lock = tombstoneLock(rt.config.storage.objectLock, graceWindowDays, new Date());
    const certificate = await approveErasure(
      {
        vault,
        store: await rt.store(),
        graceWindowDays,
        now: () => new Date(),
        signer: await rt.signer('lifecycle'),
        ...(lock === undefined ? {} : { lock }),
        onForeignTombstone: (found) => foreignTombstones.push(found),
        subjectColumns: subjectColumnsOf(ctx, rt.mapping.bind(rt)),
      },
      id,
      by,
    );
    for (const found of foreignTombstones) {
      ctx.warn(
        `${found.key} is not a tombstone lethe wrote (${found.problem}); the real tombstone was written under another name. ` +
          'Someone with write access to the bucket may have planted it: keep it for the investigation (lifecycle never trusts it)',
      );
    }
    // The certificate records what the vault database kept at execution; one made before
    // lethe recorded that is completed by a look now.
    const vaultDurability = certificate.guarantees?.vaultDurabilityFindings ?? (await vault.inspectDurability({ graceWindowDays }));
    const shredded = certificate.keysDestroyed.length > 0;
    if (shredded) logVaultDurability(rt.log.child({ job: 'erase', requestId: id }), vaultDurability);
    if (ctx.json) {
      ctx.out(JSON.stringify({ id, status: 'executed', certificateKey: certificateKey(id), certificate, vaultDurability, foreignTombstones }));
    } else {
      printCertificate(ctx, certificate);
      ctx.out(`certificate stored as ${certificateKey(id)} (and in the vault: lethe erase show ${id})`);
      if (shredded) printVaultDurabilityWarnings(vaultDurability);
    }
    return ExitCode.OK;
  },
};

/** The mapping's subject columns for the certificate; a mapping that cannot be read leaves them out, with a warning. */
function subjectColumnsOf(ctx: CommandContext, mapping: () => Mapping): SubjectColumns[] | undefined {
  try {
    return subjectColumns(mapping());
  } catch (err) {
    ctx.warn(
      `the chat-store mapping could not be read (${err instanceof Error ? err.message : String(err)}): ` +
        'the certificate will not list the subject columns the erasure covers; fix chatStore.mapping in the config',
    );
    return undefined;
  }
}

export const eraseListCommand: Command = {
  name: 'erase list',
  usage: 'erase list [--json] [--config FILE]',
  options: {},
  async run(ctx) {
    const rt = await ctx.runtime();
    const requests = await (await rt.vault()).listEraseRequests();
    if (ctx.json) ctx.out(JSON.stringify({ requests: requests.map(requestJson) }));
    else if (requests.length === 0) ctx.out('no deletion requests');
    else {
      for (const r of requests) {
        const by =
          r.status === 'pending'
            ? `requested by ${r.requestedBy} ${r.requestedAt.toISOString()}, awaiting approval`
            : `requested by ${r.requestedBy}, approved by ${r.approvedBy ?? '?'}` +
              (r.executedAt === null ? ' (execution interrupted: approve again or run lifecycle apply)' : `, executed ${r.executedAt.toISOString()}`);
        ctx.out(`${r.id}  ${r.status.toUpperCase()}  erase ${subjectText(r)}: ${by}`);
        ctx.out(`    reason: ${r.reason}`);
      }
    }
    return ExitCode.OK;
  },
};

const SHOW_USAGE = 'erase show ID [--json] [--config FILE]';

export const eraseShowCommand: Command = {
  name: 'erase show',
  usage: SHOW_USAGE,
  positionals: true,
  options: {},
  async run(ctx) {
    const id = oneId(ctx, SHOW_USAGE);
    const rt = await ctx.runtime();
    const vault = await rt.vault();
    const request = await vault.getEraseRequest(id);
    if (request === null) throw usage(`no deletion request has id ${JSON.stringify(id)}: see \`lethe erase list\``, SHOW_USAGE);
    if (request.status !== 'executed') {
      throw new LetheError(
        ErrorCode.USAGE,
        `deletion request ${id} is ${request.status}: it has no certificate until it is executed` +
          (request.status === 'pending' ? ` (approve it with \`lethe erase approve ${id} --signature FILE.sig\`)` : ''),
        { details: { requestId: id, status: request.status } },
      );
    }
    const certificate = request.certificate as DestructionCertificate;
    const check = verifyCertificate(certificate, await vault.getSigningPublicKeys(['lifecycle', 'legacy']));
    if (ctx.json) ctx.out(JSON.stringify(certificate));
    else {
      printCertificate(ctx, certificate);
      ctx.out(`signature: ${check.ok ? `valid (Ed25519, key ${certificate.signature.keyId})` : `INVALID: ${check.problem}`}`);
    }
    return check.ok ? ExitCode.OK : ExitCode.CHECK_FAILED;
  },
};

function printCertificate(ctx: CommandContext, c: DestructionCertificate): void {
  const r = c.request;
  ctx.out(`destruction certificate for deletion request ${r.id}`);
  ctx.out(`  erased:       ${subjectText(r)}`);
  ctx.out(`  reason:       ${r.reason}`);
  const signed = c.approvals;
  ctx.out(`  requested by: ${r.requestedBy} at ${r.requestedAt}${signed?.request == null ? ' (typed name, unsigned)' : `, signed by key ${signed.request.fingerprint}`}`);
  ctx.out(`  approved by:  ${r.approvedBy} at ${r.approvedAt}${signed?.approval == null ? ' (typed name, unsigned)' : `, signed by key ${signed.approval.fingerprint}`}`);
  ctx.out(`  executed at:  ${c.executedAt}`);
  for (const k of c.keysDestroyed) ctx.out(`  key destroyed: ${k.keyId} at ${k.destroyedAt} (audit entry ${k.auditSeq})`);
  for (const k of c.keysAbsent) ctx.out(`  key ${k.keyId}: ${k.note}`);
  if (c.allTenants !== undefined) {
    ctx.out(`  every tenant: ${c.allTenants.statement}`);
    for (const t of c.allTenants.tenants) {
      ctx.out(`    tenant ${JSON.stringify(t.tenant)}  ${t.keyId}  ${t.outcome.toUpperCase()}${t.outcome === 'kept' ? `: ${t.note}` : ''}`);
    }
  }
  if (c.subjectColumns !== undefined) ctx.out(`  subject columns: ${c.subjectColumns.statement}`);
  ctx.out(`  cells made unreadable: ${c.cellsAffected.count} cell keys; ${c.snapshotsAffected.cells} cells in ${c.snapshotsAffected.count} snapshots`);
  ctx.out(`  audit chain:  entry ${c.auditChain.seq}, hash ${c.auditChain.hash}`);
  const g = c.guarantees;
  if (g === undefined) {
    // Issued before certificates recorded their guarantees: its own words are all it states.
    ctx.out(`  grace window: ${c.graceWindow.days} days, until ${c.graceWindow.irreversibleAt}`);
    ctx.out(`  ${c.graceWindow.explanation}`);
    return;
  }
  ctx.out(`  grace window: ${c.graceWindow.days} days`);
  ctx.out(`  guaranteed from ${g.liveVault.since}: the destroyed keys are gone from the live vault tables`);
  ctx.out(`  guaranteed by ${g.vaultBackups.until}: lethe's own vault backups made before the execution have expired`);
  ctx.out("  NOT guaranteed by lethe: these copies of the vault database may hold the wrapped keys until their own retention ends:");
  for (const copy of g.outsideLethe) ctx.out(`    - ${copy}`);
  ctx.out(`  the erasure is final once those have expired too (${g.vaultBackups.until} if their retention is within the grace window)`);
  if (g.vaultDurabilityFindings.length === 0) {
    ctx.out("  seen at execution: no WAL archiving, attached replica or replication slot on the vault database's server");
  } else {
    for (const f of g.vaultDurabilityFindings) ctx.out(`  seen at execution [${f.code}]: ${f.message}`);
  }
}
