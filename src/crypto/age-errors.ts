import { ErrorCode, isAbortError, LetheError } from '../errors/index.ts';

/**
 * Why an age file could not be opened: a stable name, kept in the LetheError's
 * `details.ageProblem`, so callers and tests can tell the cases apart without parsing
 * messages. They follow the outcomes the age test vectors (C2SP CCTV) distinguish.
 */
export const AgeProblem = {
  /** No identity given unwraps a stanza (CCTV "no match"). */
  NO_IDENTITY: 'NO_IDENTITY',
  /** A file key was unwrapped but the header MAC does not verify ("HMAC failure"). */
  HEADER_MAC: 'HEADER_MAC',
  /** The header, a stanza or the payload nonce after it is malformed ("header failure"). */
  MALFORMED: 'MALFORMED',
  /** The payload does not open all the way to its end ("payload failure"). */
  PAYLOAD: 'PAYLOAD',
} as const;
export type AgeProblem = (typeof AgeProblem)[keyof typeof AgeProblem];

/** Each problem in the words operators should read. */
const EXPLANATION: Readonly<Record<AgeProblem, string>> = {
  NO_IDENTITY: 'none of the identities given opens it (wrong key, or the key was destroyed)',
  HEADER_MAC: 'its header failed authentication (modified, or not made for this key)',
  MALFORMED: 'it is not a well-formed age v1 file',
  PAYLOAD: 'its payload is truncated or was modified',
};

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
    const explanation = EXPLANATION[problem];
    super(detail === undefined ? explanation : `${explanation} (${detail})`);
  }
}

/**
 * Converts an error raised while encrypting or decrypting an age file into a LetheError.
 * LetheErrors pass through; aborts become ABORTED; an {@link AgeFailure} becomes CRYPTO with
 * its operator-facing message and `details.ageProblem`. Anything else is a bug and becomes
 * CRYPTO keeping its cause.
 */
export function ageError(doing: string, err: unknown): LetheError {
  if (err instanceof LetheError) return err;
  if (isAbortError(err)) return new LetheError(ErrorCode.ABORTED, `${doing}: cancelled`);
  if (err instanceof AgeFailure) {
    return new LetheError(ErrorCode.CRYPTO, `${doing}: ${err.message}`, {
      details: { ageProblem: err.problem },
    });
  }
  return new LetheError(ErrorCode.CRYPTO, `${doing}: unexpected failure in age encryption`, {
    cause: err,
  });
}

/**
 * The {@link AgeProblem} of an error thrown by lethe's age functions, or undefined when it is
 * not a CRYPTO error about an age file (a bad key list, an abort, a source's own error, a bug).
 */
export function ageProblemOf(err: unknown): AgeProblem | undefined {
  if (!(err instanceof LetheError) || err.code !== ErrorCode.CRYPTO) return undefined;
  const problem = err.details?.['ageProblem'];
  return Object.values(AgeProblem).find((known) => known === problem);
}
