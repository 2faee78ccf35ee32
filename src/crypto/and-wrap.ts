import { ErrorCode, LetheError } from '../errors/index.ts';
import { decryptBytes, encryptBytes } from './age.ts';
import { decodeIdentity } from './bech32.ts';

/**
 * AND-wraps an identity: nested binary age files, `recipientsInnermostFirst[0]` innermost,
 * so opening it needs every matching identity and destroying any one of them shreds it.
 * The innermost plaintext is the identity followed by a newline, exactly an age-keygen
 * identity file, so `age -d -i outer.key | ... | age -d -i inner.key > cell.key` recovers a
 * usable key without lethe. Throws LetheError(KEY) for a malformed identity (the message
 * never contains it) or an empty or malformed recipient list.
 */
export async function andWrap(
  identity: string,
  recipientsInnermostFirst: readonly string[],
): Promise<Uint8Array> {
  decodeIdentity(identity);
  if (recipientsInnermostFirst.length === 0) {
    throw new LetheError(ErrorCode.KEY, 'AND-wrap needs at least one recipient; got none');
  }
  let wrapped: Uint8Array = new TextEncoder().encode(`${identity}\n`);
  for (const recipient of recipientsInnermostFirst) {
    wrapped = await encryptBytes(wrapped, [recipient]);
  }
  return wrapped;
}

/**
 * Reverses {@link andWrap}: peels one layer per identity, outermost first, and returns the
 * wrapped identity (trimmed). Throws LetheError(KEY) for an empty or malformed identity
 * list, and LetheError(CRYPTO) naming the layer when an identity does not open its layer,
 * the data is modified, or the layer count differs from the identity count. Messages never
 * contain key material.
 */
export async function andUnwrap(
  wrapped: Uint8Array,
  identitiesOutermostFirst: readonly string[],
): Promise<string> {
  if (identitiesOutermostFirst.length === 0) {
    throw new LetheError(ErrorCode.KEY, 'AND-unwrap needs at least one identity; got none');
  }
  const layers = identitiesOutermostFirst.length;
  let plain = wrapped;
  for (const [index, identity] of identitiesOutermostFirst.entries()) {
    try {
      plain = await decryptBytes(plain, [identity]);
    } catch (err) {
      if (!(err instanceof LetheError) || err.code !== ErrorCode.CRYPTO) throw err;
      throw new LetheError(
        ErrorCode.CRYPTO,
        `AND-unwrap, layer ${index + 1} of ${layers} (outermost first): ${err.message}`,
        { cause: err },
      );
    }
  }
  const identity = new TextDecoder().decode(plain).trim();
  try {
    decodeIdentity(identity);
  } catch {
    throw new LetheError(
      ErrorCode.CRYPTO,
      `AND-unwrap: after ${layers} layers the content is not an age identity; the key was wrapped in more layers than identities were given`,
    );
  }
  return identity;
}
