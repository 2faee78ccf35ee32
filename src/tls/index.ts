export { readCaFile } from './ca-file.ts';
export {
  daysUntil,
  peerCertificateOf,
  pgTlsSocket,
  probePeerCertificate,
  type PeerCertificate,
} from './peer-certificate.ts';
export { pgClientConfig, tlsOptions, type PgOptions } from './pg-options.ts';
export {
  parsePgUrl,
  pgEndpoint,
  splitTlsParams,
  SSL_MODES,
  tlsParamsIn,
  withTlsParams,
  type PgEndpoint,
  type PgTls,
  type SslMode,
} from './pg-url.ts';
