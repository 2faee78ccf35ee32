import { ErrorCode, ExitCode, LetheError } from '../errors/index.ts';
import { holdToJson, listHolds, placeHold, placeStatement, releaseHold, releaseStatement } from '../lifecycle/holds.ts';
import type { Hold } from '../lifecycle/types.ts';
import type { Command } from './commands.ts';
import { APPROVAL_OPTIONS, attestationFrom, printStatement, wantsStatement } from './approval-args.ts';
import { stringOpt } from './format.ts';

/**
 * `lethe hold place|release|list`: legal holds. Exit codes: 0 done; 2 bad usage (missing or
 * malformed option, unknown case, tenant never backed up, a --signature file that is not an
 * SSH signature); 3 refused by rule (case already released, a signature that does not verify
 * or is by a key not enrolled, an unsigned act where signatures are required). Placing and
 * releasing are signed acts (approval-args.ts). See runbooks/legal-hold.md.
 */

const PLACE_USAGE =
  'hold place --case ID --tenant T [--user U] [--conversation C] [--from DATE] [--to DATE] --reason TEXT (--print-statement | --signature FILE) [--json] [--config FILE]';


/** What a selector pins, in words. */
export function describeSelector(h: Hold): string {
  const who = h.user !== null ? `user ${h.user}` : 'all users';
  const where = h.conversation !== null ? `, conversation ${h.conversation}` : '';
  const from = h.from === null ? 'the beginning' : h.from.toISOString();
  const to = h.to === null ? 'now on' : h.to.toISOString();
  const when = h.from === null && h.to === null ? 'all dates' : `from ${from} to ${to}`;
  return `tenant ${h.tenant}, ${who}${where}, ${when}`;
}

function need(value: string | undefined, flag: string, usage: string): string {
  if (value === undefined || value.trim() === '') {
    throw new LetheError(ErrorCode.USAGE, `missing ${flag}\nusage: lethe ${usage}`);
  }
  return value;
}

export const holdPlaceCommand: Command = {
  name: 'hold place',
  usage: PLACE_USAGE,
  options: {
    case: { type: 'string' },
    tenant: { type: 'string' },
    user: { type: 'string' },
    conversation: { type: 'string' },
    from: { type: 'string' },
    to: { type: 'string' },
    reason: { type: 'string' },
    ...APPROVAL_OPTIONS,
  },
  async run(ctx) {
    const v = ctx.values;
    const input = {
      caseId: need(stringOpt(v, 'case'), '--case ID', PLACE_USAGE),
      tenant: need(stringOpt(v, 'tenant'), '--tenant T', PLACE_USAGE),
      user: stringOpt(v, 'user'),
      conversation: stringOpt(v, 'conversation'),
      from: stringOpt(v, 'from'),
      to: stringOpt(v, 'to'),
      reason: need(stringOpt(v, 'reason'), '--reason TEXT', PLACE_USAGE),
    };
    const rt = await ctx.runtime();
    const vault = await rt.vault();
    if (wantsStatement(ctx)) return printStatement(ctx, await placeStatement(vault, input));
    const hold = await placeHold(vault, { ...input, ...(await attestationFrom(ctx, rt)) });
    if (ctx.json) ctx.out(JSON.stringify(holdToJson(hold)));
    else {
      ctx.out(`legal hold placed: case ${hold.caseId} (${describeSelector(hold)}), by ${hold.placedBy}`);
      ctx.out('No key whose destruction would make this data unreadable will be destroyed until the case is released.');
    }
    return ExitCode.OK;
  },
};

const RELEASE_USAGE = 'hold release --case ID [--reason TEXT] (--print-statement | --signature FILE) [--json] [--config FILE]';

export const holdReleaseCommand: Command = {
  name: 'hold release',
  usage: RELEASE_USAGE,
  options: { case: { type: 'string' }, reason: { type: 'string' }, ...APPROVAL_OPTIONS },
  async run(ctx) {
    const caseId = need(stringOpt(ctx.values, 'case'), '--case ID', RELEASE_USAGE);
    const reason = stringOpt(ctx.values, 'reason');
    const rt = await ctx.runtime();
    const vault = await rt.vault();
    if (wantsStatement(ctx)) return printStatement(ctx, await releaseStatement(vault, caseId, reason));
    const released = await releaseHold(vault, caseId, await attestationFrom(ctx, rt), reason);
    const actor = released[0]?.releasedBy ?? '?';
    if (ctx.json) ctx.out(JSON.stringify({ caseId, released: released.map(holdToJson) }));
    else {
      ctx.out(`case ${caseId} released by ${actor}: ${released.length} selector(s)`);
      for (const h of released) ctx.out(`  ${describeSelector(h)}`);
      ctx.out('Data kept only for this case becomes due for destruction at the next `lethe lifecycle apply`.');
    }
    return ExitCode.OK;
  },
};

export const holdListCommand: Command = {
  name: 'hold list',
  usage: 'hold list [--all] [--json] [--config FILE]',
  options: { all: { type: 'boolean' } },
  async run(ctx) {
    const rt = await ctx.runtime();
    const all = ctx.values['all'] === true;
    const holds = await listHolds(await rt.vault(), { activeOnly: !all });
    if (ctx.json) ctx.out(JSON.stringify({ holds: holds.map(holdToJson) }));
    else if (holds.length === 0) ctx.out(all ? 'no legal holds' : 'no active legal holds (--all shows released ones too)');
    else {
      for (const h of holds) {
        const state = h.releasedAt === null ? 'ACTIVE' : `released ${h.releasedAt.toISOString()} by ${h.releasedBy ?? '?'}`;
        ctx.out(`${h.caseId}  ${state}  ${describeSelector(h)}`);
        ctx.out(`    placed ${h.placedAt.toISOString()} by ${h.placedBy}: ${h.reason}`);
      }
    }
    return ExitCode.OK;
  },
};
