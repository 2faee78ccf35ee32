import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { ErrorCode, LetheError } from '../errors/index.ts';

const PEM_CERTIFICATE = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;

/**
 * The certificates of a PEM CA bundle file, checked to hold at least one certificate that
 * parses. Synchronous because pg and the S3 client take their TLS options when they are
 * built, which is synchronous; a CA file is a few kilobytes.
 *
 * Throws CONFIG_INVALID naming `what` (the config field) and the path when the file cannot
 * be read or holds no certificate. A CA file is public: its content may appear in errors,
 * but it never does.
 */
export function readCaFile(path: string, what: string): string[] {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'error';
    throw new LetheError(
      ErrorCode.CONFIG_INVALID,
      `\`${what}\`: cannot read the CA file ${path} (${code}); point it at the PEM file of the CA that signed the server's certificate`,
      { cause: err },
    );
  }
  const pems = text.match(PEM_CERTIFICATE) ?? [];
  if (pems.length === 0) {
    throw new LetheError(
      ErrorCode.CONFIG_INVALID,
      `\`${what}\`: ${path} holds no PEM certificate (-----BEGIN CERTIFICATE-----); give the CA certificate in PEM form`,
    );
  }
  for (const [index, pem] of pems.entries()) {
    try {
      new X509Certificate(pem);
    } catch (err) {
      throw new LetheError(
        ErrorCode.CONFIG_INVALID,
        `\`${what}\`: certificate ${index + 1} in ${path} does not parse (${(err as Error).message}); give the CA certificate in PEM form`,
        { cause: err },
      );
    }
  }
  return pems;
}
