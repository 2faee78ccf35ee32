import { open } from 'node:fs/promises';
import { ErrorCode, wrapForeign } from '../errors/index.ts';
import { AgeFailure, AgeProblem, ageError } from './age-errors.ts';
import { HeaderParser, MAX_HEADER_BYTES, type Stanza } from './age-format.ts';
import type { FileKeyUnwrapper } from './age-header.ts';

/**
 * An identity that must see a file's stanzas before it can open it (its key agreement is a
 * network call, e.g. AWS KMS, and age's unwrapping is synchronous): the caller reads the
 * header, awaits {@link prepare}, then decrypts with the identity it returns.
 */
export interface DeferredUnwrapper {
  prepare(stanzas: readonly Stanza[]): Promise<FileKeyUnwrapper>;
}

function isDeferred(identity: string | FileKeyUnwrapper | DeferredUnwrapper): identity is DeferredUnwrapper {
  return typeof identity !== 'string' && 'prepare' in identity;
}

/**
 * `identities` with every deferred one prepared for the file whose stanzas `stanzas()` reads
 * (called once, and only when there is a deferred identity).
 */
export async function resolveIdentities(
  identities: readonly (string | FileKeyUnwrapper | DeferredUnwrapper)[],
  stanzas: () => Promise<readonly Stanza[]>,
): Promise<(string | FileKeyUnwrapper)[]> {
  if (!identities.some(isDeferred)) return identities as (string | FileKeyUnwrapper)[];
  const read = await stanzas();
  const out: (string | FileKeyUnwrapper)[] = [];
  for (const identity of identities) out.push(isDeferred(identity) ? await identity.prepare(read) : identity);
  return out;
}

/**
 * The stanzas of the age file at `path`, reading no more than its header. Throws
 * LetheError(CRYPTO) when the file does not start with an age header, FILE_SYSTEM-like
 * wrapped errors when it cannot be read.
 */
export async function readAgeHeaderStanzas(path: string): Promise<Stanza[]> {
  let handle;
  try {
    handle = await open(path, 'r');
  } catch (err) {
    throw wrapForeign(ErrorCode.CRYPTO, `opening ${path} to read its age header`, err);
  }
  try {
    const parser = new HeaderParser();
    const chunk = Buffer.alloc(64 * 1024);
    for (let read = 0; read <= MAX_HEADER_BYTES; ) {
      const { bytesRead } = await handle.read(chunk, 0, chunk.length, read);
      if (bytesRead === 0) break;
      read += bytesRead;
      const done = parser.push(chunk.subarray(0, bytesRead));
      if (done !== undefined) return done.header.stanzas;
    }
    throw new AgeFailure(AgeProblem.MALFORMED, 'the file ends inside its header');
  } catch (err) {
    throw ageError(`reading the age header of ${path}`, err);
  } finally {
    await handle.close();
  }
}
