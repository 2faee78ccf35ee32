import { randomBytes } from 'node:crypto';
import { access, link, open, unlink } from 'node:fs/promises';
import { dirname } from 'node:path';
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
    const refuse = (code: string): LetheError =>
      new LetheError(ErrorCode.USAGE, `cannot create ${out} (${code}): choose a new file name; an export is never overwritten`);
    if (await access(out).then(() => true, () => false)) throw refuse('EEXIST');
    // Written beside its final name and linked there only once complete and synced, so an
    // interrupted export never leaves a truncated file that looks like an export.
    const partial = `${out}.partial-${randomBytes(4).toString('hex')}`;
    let file;
    try {
      file = await open(partial, 'wx', 0o600);
    } catch (err) {
      throw refuse((err as NodeJS.ErrnoException).code ?? 'error');
    }
    let count = 0;
    let destroyed = 0;
    let complete = false;
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
      complete = true;
    } finally {
      await file.close();
      if (!complete) await unlink(partial).catch(() => undefined);
    }
    try {
      await link(partial, out); // fails if `out` appeared meanwhile: never overwritten
    } catch (err) {
      throw refuse((err as NodeJS.ErrnoException).code ?? 'error');
    } finally {
      await unlink(partial).catch(() => undefined);
    }
    const dir = await open(dirname(out), 'r');
    await dir.sync().finally(() => dir.close());
    const result = { out, dimensionKeys: count, destroyedLeftOut: destroyed };
    if (ctx.json) ctx.out(JSON.stringify(result));
    else {
      ctx.out(`exported ${count} dimension keys to ${out} (each still encrypted to the master key; ${destroyed} destroyed keys have nothing to export)`);
    }
    return ExitCode.OK;
  },
};
