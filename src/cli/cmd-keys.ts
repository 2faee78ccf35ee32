import { open } from 'node:fs/promises';
import { ErrorCode, ExitCode, LetheError } from '../errors/index.ts';
import type { Command } from './commands.ts';
import { stringOpt } from './format.ts';

export const KEYS_EXPORT_FORMAT = 'lethe.keys-export.v2';

export const keysExportCommand: Command = {
  name: 'keys export',
  usage: 'keys export --out FILE [--json] [--config FILE]',
  options: { out: { type: 'string' } },
  async run(ctx) {
    const out = stringOpt(ctx.values, 'out');
    if (out === undefined) throw new LetheError(ErrorCode.USAGE, 'keys export needs --out FILE\nusage: lethe keys export --out FILE');
    const rt = await ctx.runtime();
    const vault = await rt.vault();
    let file;
    try {
      file = await open(out, 'wx', 0o600);
    } catch (err) {
      throw new LetheError(ErrorCode.USAGE, `cannot create ${out} (${(err as NodeJS.ErrnoException).code ?? 'error'}): choose a new file name; an export is never overwritten`);
    }
    let count = 0;
    let destroyed = 0;
    try {
      // For information only: a recovery checks signatures with the public keys escrowed with
      // the master key (`<key file>.pub`), never with keys read from an export file.
      const signingKeys = (await vault.listSigningKeys()).map((k) => ({
        id: k.id,
        purpose: k.purpose,
        publicKey: k.publicKey,
        retired: k.retiredAt !== null,
      }));
      await file.write(
        `{"format":"${KEYS_EXPORT_FORMAT}","masterRecipient":${JSON.stringify(await vault.getMasterRecipient())},` +
          `"exportedAt":"${new Date().toISOString()}","signingKeys":${JSON.stringify(signingKeys)},"dimensionKeys":[\n`,
      );
      for await (const key of vault.iterateWrappedDimensionKeys()) {
        if (key.wrappedIdentity === null) {
          destroyed += 1;
          continue;
        }
        const line = { id: key.id, kind: key.kind, recipient: key.recipient, wrapped: Buffer.from(key.wrappedIdentity).toString('base64') };
        await file.write(`${count === 0 ? '' : ',\n'}${JSON.stringify(line)}`);
        count += 1;
      }
      await file.write('\n]}\n');
      await file.sync();
    } finally {
      await file.close();
    }
    const result = { out, dimensionKeys: count, destroyedLeftOut: destroyed };
    if (ctx.json) ctx.out(JSON.stringify(result));
    else {
      ctx.out(`exported ${count} dimension keys to ${out} (each still encrypted to the master key; ${destroyed} destroyed keys have nothing to export)`);
    }
    return ExitCode.OK;
  },
};
