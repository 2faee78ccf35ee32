import { createHash } from 'node:crypto';
import type { z } from 'zod';
import { copyLines } from '../cells/copy-text.ts';
import { ErrorCode, LetheError } from '../errors/index.ts';
import {
  CellEntrySchema,
  KeyFileRefSchema,
  MANIFEST_FORMAT,
  SignatureSchema,
  SnapshotHeaderSchema,
  TotalsSchema,
  type CellEntry,
  type KeyFileRef,
  type Signature,
  type SnapshotHeader,
  type Totals,
} from './format.ts';

export type ManifestEvent =
  | { readonly type: 'header'; readonly header: SnapshotHeader; readonly schema: unknown; readonly keyFiles: readonly KeyFileRef[] }
  | { readonly type: 'cell'; readonly cell: CellEntry }
  | {
      readonly type: 'end';
      readonly totals: Totals;
      readonly signature: Signature;
      /** sha256 of the bytes before the signature line, as read (compare with `signature.sha256`). */
      readonly bodySha256: string;
      /** sha256 of the whole manifest object, as read. */
      readonly fileSha256: string;
    };

function invalid(what: string, line: number, detail: string): LetheError {
  return new LetheError(ErrorCode.MANIFEST_INVALID, `manifest ${what}, line ${line}: ${detail}`);
}

function parseField<T>(text: string, name: string, schema: z.ZodType<T>, what: string, line: number): T {
  const prefix = `"${name}":`;
  if (!text.startsWith(prefix)) throw invalid(what, line, `expected "${name}"`);
  const body = text.slice(prefix.length).replace(/,$/, '');
  let value: unknown;
  try {
    value = JSON.parse(body);
  } catch {
    throw invalid(what, line, `"${name}" is not valid JSON`);
  }
  const parsed = schema.safeParse(value);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw invalid(what, line, `"${name}" ${issue?.path.join('.') ?? ''}: ${issue?.message ?? 'invalid'}`);
  }
  return parsed.data;
}

/**
 * Reads a manifest as a stream of events: the header, then each cell, then the totals and
 * signature with the digests of what was read. Throws MANIFEST_INVALID (naming `what`, e.g.
 * the object key, and the line) on any deviation from the format. It does not check the
 * signature: the caller does, with the vault's signing keys, after `end`.
 */
export async function* readManifest(source: AsyncIterable<Uint8Array>, what: string): AsyncGenerator<ManifestEvent> {
  const body = createHash('sha256');
  const file = createHash('sha256');
  let lineNo = 0;
  const lines = copyLines(source)[Symbol.asyncIterator]();
  const nextLine = async (): Promise<string> => {
    let result: IteratorResult<Buffer>;
    try {
      result = await lines.next();
    } catch {
      throw invalid(what, lineNo + 1, 'the object ends in the middle of a line (truncated?)');
    }
    if (result.done === true) throw invalid(what, lineNo + 1, 'the object ends early (truncated?)');
    lineNo += 1;
    file.update(result.value);
    return result.value.toString('utf8', 0, result.value.length - 1);
  };
  const bodyLine = async (): Promise<string> => {
    const text = await nextLine();
    body.update(`${text}\n`);
    return text;
  };

  // A reader that stops early (an error, or a consumer that stops iterating) must release the
  // source: an abandoned object stream holds a file handle or an HTTP connection.
  try {
    if ((await bodyLine()) !== `{"format":${JSON.stringify(MANIFEST_FORMAT)},`) {
      throw invalid(what, 1, `not a ${MANIFEST_FORMAT} manifest`);
    }
    const header = parseField(await bodyLine(), 'snapshot', SnapshotHeaderSchema, what, lineNo);
    const schemaLine = await bodyLine();
    if (!schemaLine.startsWith('"schema":')) throw invalid(what, lineNo, 'expected "schema"');
    let schema: unknown;
    try {
      schema = JSON.parse(schemaLine.slice('"schema":'.length).replace(/,$/, ''));
    } catch {
      throw invalid(what, lineNo, '"schema" is not valid JSON');
    }
    const keyFiles = parseField(await bodyLine(), 'keyFiles', KeyFileRefSchema.array(), what, lineNo);
    yield { type: 'header', header, schema, keyFiles };

    if ((await bodyLine()) !== '"cells":[') throw invalid(what, lineNo, 'expected "cells":[');
    for (;;) {
      const text = await bodyLine();
      if (text === '],') break;
      let value: unknown;
      try {
        value = JSON.parse(text.endsWith(',') ? text.slice(0, -1) : text);
      } catch {
        throw invalid(what, lineNo, 'cell entry is not valid JSON');
      }
      const parsed = CellEntrySchema.safeParse(value);
      if (!parsed.success) {
        const issue = parsed.error.issues[0];
        throw invalid(what, lineNo, `cell ${issue?.path.join('.') ?? ''}: ${issue?.message ?? 'invalid'}`);
      }
      yield { type: 'cell', cell: parsed.data };
    }
    const totals = parseField(await bodyLine(), 'totals', TotalsSchema, what, lineNo);
    const bodySha256 = body.digest('hex');
    const last = await nextLine();
    if (!last.endsWith('}')) throw invalid(what, lineNo, 'the signature line does not close the document');
    const signature = parseField(last.slice(0, -1), 'signature', SignatureSchema, what, lineNo);
    const extra = await lines.next();
    if (extra.done !== true) throw invalid(what, lineNo + 1, 'unexpected data after the signature');
    yield { type: 'end', totals, signature, bodySha256, fileSha256: file.digest('hex') };
  } finally {
    await lines.return(undefined);
  }
}
