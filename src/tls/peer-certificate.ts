import { connect, TLSSocket, type ConnectionOptions } from 'node:tls';
import { isIP } from 'node:net';
import type pg from 'pg';

/** What a TLS connection showed of its server: enough to tell when to renew what. */
export interface PeerCertificate {
  /** The certificate's subject common name, or '' when it has none. */
  readonly subject: string;
  readonly issuer: string;
  /** Names the certificate is valid for (`DNS:…`, `IP Address:…`), as OpenSSL prints them. */
  readonly altNames: string;
  readonly validTo: Date;
  /** The negotiated protocol, e.g. `TLSv1.3`. */
  readonly protocol: string;
  /** True when the certificate was checked against the trusted CAs (not sslmode require). */
  readonly authorized: boolean;
}

/** Whole days from `now` to the certificate's expiry; negative once it has expired. */
export function daysUntil(validTo: Date, now: Date): number {
  return Math.floor((validTo.getTime() - now.getTime()) / 86_400_000);
}

/** The peer certificate of an open TLS socket, or null when the server sent none. */
export function peerCertificateOf(socket: TLSSocket): PeerCertificate | null {
  const cert = socket.getPeerCertificate();
  // An empty object when there is no certificate.
  if (typeof cert.valid_to !== 'string') return null;
  return {
    subject: typeof cert.subject.CN === 'string' ? cert.subject.CN : '',
    issuer: typeof cert.issuer.CN === 'string' ? cert.issuer.CN : '',
    altNames: cert.subjectaltname ?? '',
    validTo: new Date(cert.valid_to),
    protocol: socket.getProtocol() ?? 'unknown',
    authorized: socket.authorized,
  };
}

/**
 * The TLS socket under a connected pg client, or null when the connection is not
 * encrypted. pg keeps it as `connection.stream`, which its types do not declare.
 */
export function pgTlsSocket(client: pg.Client): TLSSocket | null {
  const stream = (client as unknown as { connection?: { stream?: unknown } }).connection?.stream;
  return stream instanceof TLSSocket ? stream : null;
}

/**
 * Opens a TLS connection to `host`:`port` with `options` (the CA bundle the client would
 * use), reads the server's certificate and closes. Rejects with the TLS error when the
 * handshake fails (e.g. a certificate the CAs do not trust); `timeoutMs` bounds it all.
 */
export async function probePeerCertificate(
  host: string,
  port: number,
  options: ConnectionOptions,
  timeoutMs: number,
): Promise<PeerCertificate | null> {
  return new Promise((resolve, reject) => {
    const socket = connect({
      host,
      port,
      ...(isIP(host) === 0 ? { servername: host } : {}),
      ...options,
    });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no TLS handshake with ${host}:${port} within ${timeoutMs} ms`));
    }, timeoutMs);
    socket.once('secureConnect', () => {
      clearTimeout(timer);
      const cert = peerCertificateOf(socket);
      socket.end();
      resolve(cert);
    });
    socket.once('error', (err: Error) => {
      clearTimeout(timer);
      socket.destroy();
      reject(err);
    });
  });
}
