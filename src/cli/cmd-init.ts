import { ErrorCode, ExitCode, LetheError } from '../errors/index.ts';
import { initialize } from '../jobs/tasks.ts';
import { INIT_ROLES_OPTIONS, runInitRoles, wantsRoles } from './cmd-init-roles.ts';
import type { Command } from './commands.ts';
import { actorName, stringOpt } from './format.ts';
import { approverJson, readPublicKeyFile } from './cmd-people.ts';
import { enrolFirst } from '../lifecycle/approvals.ts';

export const initCommand: Command = {
  name: 'init',
  usage:
    'init [--enrol NAME --ssh-key FILE.pub] [--json] [--config FILE]\n' +
    '       lethe init --roles [--print-sql] [--role-prefix NAME] [--login [--password-dir DIR]] [--json] [--config FILE]',
  options: { ...INIT_ROLES_OPTIONS, enrol: { type: 'string' }, 'ssh-key': { type: 'string' } },
  async run(ctx) {
    if (wantsRoles(ctx.values)) return runInitRoles(ctx);
    const enrolName = stringOpt(ctx.values, 'enrol');
    const keyFile = stringOpt(ctx.values, 'ssh-key');
    if ((enrolName === undefined) !== (keyFile === undefined)) {
      throw new LetheError(ErrorCode.USAGE, 'give --enrol NAME and --ssh-key FILE.pub together (the first person who may sign approvals, and their key)');
    }
    // Read before init changes anything, so a wrong path fails first.
    const keyText = keyFile === undefined ? undefined : await readPublicKeyFile(keyFile);
    const rt = await ctx.runtime();
    const actor = actorName(undefined);
    const result = await initialize(rt, actor);
    const enrolled =
      enrolName === undefined || keyText === undefined ? undefined : await enrolFirst(await rt.vault(), enrolName, keyText, actor);
    if (ctx.json) {
      ctx.out(
        JSON.stringify({
          ...result,
          ...(enrolled === undefined ? {} : { enrolled: enrolled === null ? 'already enrolled' : approverJson(enrolled) }),
        }),
      );
      return ExitCode.OK;
    }
    if (enrolled !== undefined) {
      ctx.out(
        enrolled === null
          ? `${enrolName ?? ''} is already enrolled with this key`
          : `enrolled ${enrolled.name} (key ${enrolled.fingerprint}), the first person who may sign approvals; they enrol the others (\`lethe people enrol\`)`,
      );
    }
    ctx.out(`mapping checked against the chat store: ${result.mappingChecked.tables} tables to back up`);
    const applied = result.migrationsApplied;
    ctx.out(`vault ready (schema ${result.vaultSchema}${applied.length > 0 ? `, migrations ${applied.join(', ')} applied` : ', up to date'})`);
    ctx.out(
      result.masterKeyFile === null
        ? `master key: not in this config (a backup-only host); the vault's master recipient is ${result.masterRecipient}`
        : `master key ${result.masterKeyCreated ? 'created at' : 'found at'} ${result.masterKeyFile} (recipient ${result.masterRecipient})`,
    );
    if (result.masterKeyCreated) {
      ctx.out('  keep an offline escrow copy of this file: without it no snapshot can be read (runbooks/disaster-recovery.md)');
    }
    for (const key of result.signingKeys) {
      const where = key.file === null ? 'from the config value' : `${key.created ? 'created at' : 'in'} ${key.file}`;
      const state = key.registered
        ? key.retired.length > 0
          ? `registered, retiring ${key.retired.join(', ')}`
          : 'registered'
        : 'already registered';
      ctx.out(`${key.purpose} signing key ${key.id} ${where} (${state})`);
      if (key.created) ctx.out(`  its public half is ${key.file ?? ''}.pub: keep a copy with the master key escrow (disaster recovery checks signatures with it)`);
    }
    for (const purpose of ['backup', 'lifecycle'] as const) {
      if (!result.signingKeys.some((k) => k.purpose === purpose)) {
        ctx.out(`no ${purpose} signing key in this config (\`signingKeys.${purpose}\`): the ${purpose === 'backup' ? 'backup' : 'lifecycle, hold and erase'} commands will refuse to run with it`);
      }
    }
    if (result.mlkemHalvesAdded > 0) {
      ctx.out(`keys.postQuantum: gave ${result.mlkemHalvesAdded} dimension key(s) made before the option their ML-KEM-768 half (older snapshots still open as before)`);
    }
    ctx.out(`storage: ${result.storage}`);
    return ExitCode.OK;
  },
};
