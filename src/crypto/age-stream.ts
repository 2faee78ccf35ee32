import { throwIfAborted } from '../errors/index.ts';
import { AgeFailure, AgeProblem, ageError } from './age-errors.ts';
import { HeaderParser, type Header } from './age-format.ts';
import {
  newHeader,
  nonceCutShort,
  openHeader,
  parseIdentities,
  parseRecipients,
  PAYLOAD_NONCE_BYTES,
  type FileKeyUnwrapper,
  type FileKeyWrapper,
} from './age-header.ts';
import { PayloadOpener, PayloadSealer, payloadKey } from './age-payload.ts';
import { SourceFailure, SourceReader } from './source.ts';

/** Options of the streaming functions. */
export interface StreamOptions {
  /**
   * Cancels the operation: the output throws LetheError(ABORTED) and the source's `return()`
   * is called. Pass the same signal to the source to interrupt a read already in flight.
   */
  readonly signal?: AbortSignal | undefined;
}

/**
 * Encrypts `source` to every recipient as one binary age v1 file, chunk by chunk (memory is
 * bounded by age's 64 KiB chunks, not by the file). Recipients are checked now: throws
 * LetheError(KEY) for an empty or malformed list. While iterating, errors thrown by `source`
 * pass through unchanged and an abort throws LetheError(ABORTED). Stopping early, erroring
 * or aborting ends the source's iteration.
 */
export function encryptStream(
  source: AsyncIterable<Uint8Array>,
  recipients: readonly string[],
  options: StreamOptions = {},
): AsyncIterable<Uint8Array> {
  return encrypting(source, parseRecipients(recipients), options.signal);
}

/**
 * Decrypts an age v1 file from `source` with any of the identities, chunk by chunk.
 * Identities are checked now: throws LetheError(KEY) for an empty or malformed list. While
 * iterating, throws LetheError(CRYPTO) when no identity opens the file or it is malformed,
 * truncated or modified (`details.ageProblem` says which: see ageProblemOf, age-errors.ts).
 * Each chunk is yielded as soon as it authenticates, as age's reference reader releases it,
 * but only a clean end proves that nothing was cut off or appended: treat the output as
 * untrusted until the iteration ends. Errors thrown by `source` pass through unchanged; an
 * abort throws LetheError(ABORTED).
 */
export function decryptStream(
  source: AsyncIterable<Uint8Array>,
  identities: readonly (string | FileKeyUnwrapper)[],
  options: StreamOptions = {},
): AsyncIterable<Uint8Array> {
  return decrypting(source, parseIdentities(identities), options.signal);
}

const ENCRYPTING = 'encrypting age stream';
const DECRYPTING = 'decrypting age stream';

// Memory: the sealer holds at most one 64 KiB chunk, the source's current chunk is read in
// place, and nothing is read from the source before the consumer asks for more output.
async function* encrypting(
  source: AsyncIterable<Uint8Array>,
  recipients: readonly FileKeyWrapper[],
  signal: AbortSignal | undefined,
): AsyncGenerator<Uint8Array, void, undefined> {
  const reader = new SourceReader(source, signal);
  try {
    throwIfAborted(signal, ENCRYPTING);
    const { text, fileKey, nonce } = newHeader(recipients);
    const sealer = new PayloadSealer(payloadKey(fileKey, nonce));
    const head = Buffer.allocUnsafeSlow(text.length + nonce.length);
    head.set(nonce, head.write(text, 'latin1'));
    yield new Uint8Array(head.buffer, head.byteOffset, head.length);
    for (let plain = await reader.next(); plain !== null; plain = await reader.next()) {
      for (const sealed of sealer.push(plain)) {
        yield sealed;
        throwIfAborted(signal, ENCRYPTING);
      }
    }
    yield sealer.finish();
  } catch (err) {
    if (err instanceof SourceFailure) throw err.error;
    throw ageError(ENCRYPTING, err);
  } finally {
    await reader.release();
  }
}

// Memory: the header (refused past 1 MiB), then at most one sealed chunk held by the opener.
async function* decrypting(
  source: AsyncIterable<Uint8Array>,
  identities: readonly FileKeyUnwrapper[],
  signal: AbortSignal | undefined,
): AsyncGenerator<Uint8Array, void, undefined> {
  const reader = new SourceReader(source, signal);
  try {
    const { header, rest } = await readHeader(reader);
    const fileKey = openHeader(header, identities);
    const nonce = new Uint8Array(PAYLOAD_NONCE_BYTES);
    let input: Uint8Array | null = rest;
    for (let have = 0; ; input = await reader.next()) {
      if (input === null) throw nonceCutShort();
      const taken = Math.min(PAYLOAD_NONCE_BYTES - have, input.length);
      nonce.set(input.subarray(0, taken), have);
      have += taken;
      input = input.subarray(taken);
      if (have === PAYLOAD_NONCE_BYTES) break;
    }
    const opener = new PayloadOpener(payloadKey(fileKey, nonce));
    for (; input !== null; input = await reader.next()) {
      for (const plain of opener.push(input)) {
        yield plain;
        throwIfAborted(signal, DECRYPTING);
      }
    }
    const last = opener.finish();
    if (last.length > 0) yield last;
  } catch (err) {
    if (err instanceof SourceFailure) throw err.error;
    throw ageError(DECRYPTING, err);
  } finally {
    await reader.release();
  }
}

async function readHeader(reader: SourceReader): Promise<{ header: Header; rest: Uint8Array }> {
  const parser = new HeaderParser();
  for (;;) {
    const bytes = await reader.next();
    if (bytes === null) {
      throw new AgeFailure(AgeProblem.MALFORMED, 'the file ends inside its header');
    }
    const parsed = parser.push(bytes);
    if (parsed !== undefined) return parsed;
  }
}
