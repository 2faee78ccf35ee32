import { ErrorCode, isAbortError, LetheError } from '../errors/index.ts';

/** Why an age file could not be opened, in the words operators should read. */
export const AgeProblem = {
  NO_IDENTITY: 'none of the identities given opens it (wrong key, or the key was destroyed)',
  HEADER_MAC: 'its header failed authentication (modified, or not made for this key)',
  PAYLOAD: 'its payload is truncated or was modified',
  MALFORMED: 'it is not a well-formed age v1 file',
} as const;
export type AgeProblem = (typeof AgeProblem)[keyof typeof AgeProblem];

/**
 * A failure found while reading an age file, before the operation's name is known.
 * `detail` says where, never what: it must not contain file content or key material.
 */
export class AgeFailure extends Error {
  override readonly name = 'AgeFailure';
  constructor(
    readonly problem: AgeProblem,
    readonly detail?: string,
  ) {
    super(detail === undefined ? problem : `${problem} (${detail})`);
  }
}

/**
 * Converts an error raised while encrypting or decrypting an age file into a LetheError.
 * LetheErrors pass through; aborts become ABORTED; an {@link AgeFailure} becomes CRYPTO with
 * its operator-facing message. Anything else is a bug and becomes CRYPTO keeping its cause.
 */
export function ageError(doing: string, err: unknown): LetheError {
  if (err instanceof LetheError) return err;
  if (isAbortError(err)) return new LetheError(ErrorCode.ABORTED, `${doing}: cancelled`);
  if (err instanceof AgeFailure)
    return new LetheError(ErrorCode.CRYPTO, `${doing}: ${err.message}`);
  return new LetheError(ErrorCode.CRYPTO, `${doing}: unexpected failure in age encryption`, {
    cause: err,
  });
}
