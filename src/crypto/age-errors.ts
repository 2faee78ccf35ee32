import { ErrorCode, isAbortError, LetheError } from '../errors/index.ts';

// What the age library's (and noble's) error messages mean, as operators should read them.
// The library's text is not shown: some of it echoes file content ("invalid version <first
// line>"), which may be an identity or plaintext.
const REASONS: readonly (readonly [RegExp, string])[] = [
  [
    /^no identity matched/,
    'none of the identities given opens it (wrong key, or the key was destroyed)',
  ],
  [/^invalid header HMAC/, 'its header failed authentication (modified, or not made for this key)'],
  [
    /^(invalid tag|final chunk is empty|stream ended before|"?ciphertext|invalid ciphertext)/i,
    'its payload is truncated or was modified (authentication failed)',
  ],
  [
    /^(invalid version|invalid stanza|invalid header|invalid non-ASCII|Unknown letter|Non-zero padding|Invalid padding)/i,
    'it is not a well-formed age v1 file',
  ],
];

/**
 * Converts an error raised while encrypting or decrypting an age file into a LetheError.
 * LetheErrors pass through; aborts become ABORTED; everything else becomes CRYPTO with a
 * message that says what went wrong in operator terms and never contains file content or
 * key material. Unrecognised errors keep their cause (they are likely bugs).
 */
export function ageError(doing: string, err: unknown): LetheError {
  if (err instanceof LetheError) return err;
  if (isAbortError(err)) return new LetheError(ErrorCode.ABORTED, `${doing}: cancelled`);
  const message = err instanceof Error ? err.message : '';
  for (const [pattern, reason] of REASONS) {
    if (pattern.test(message)) return new LetheError(ErrorCode.CRYPTO, `${doing}: ${reason}`);
  }
  return new LetheError(ErrorCode.CRYPTO, `${doing}: unexpected failure in the age library`, {
    cause: err,
  });
}
