/**
 * Where a chat service keeps file bytes (`chatStore.blobStores.<name>.url`), parsed: a
 * directory (`file:///abs/dir`, or a path the config loader has made absolute) or an S3
 * bucket and key prefix (`s3://bucket/prefix`). Pure: no file or network access.
 */
export type BlobStoreLocation =
  | { readonly kind: 'file'; readonly dir: string }
  | { readonly kind: 's3'; readonly bucket: string; readonly prefix: string };

/** A URL scheme at the start of a string (`file:`, `s3:`), as opposed to a bare path. */
export const URL_SCHEME = /^[A-Za-z][A-Za-z0-9+.-]*:/;

/**
 * Parses a blob store URL. Returns the location, or a message saying what is wrong and what
 * to write instead. A bare path must already be absolute (the config loader resolves a
 * relative one against the config file's directory).
 */
export function parseBlobStoreUrl(value: string): BlobStoreLocation | { readonly problem: string } {
  const hint = 'write file:///absolute/dir, a directory path, or s3://bucket/prefix';
  if (value.includes('\0')) return { problem: `contains a NUL byte: ${hint}` };
  if (!URL_SCHEME.test(value)) {
    if (!value.startsWith('/')) return { problem: `${JSON.stringify(value)} is not an absolute path: ${hint}` };
    return { kind: 'file', dir: stripSlashes(value) };
  }
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    return { problem: `${JSON.stringify(value)} is not a valid URL: ${hint}` };
  }
  if (url.username !== '' || url.password !== '') {
    return { problem: 'credentials do not belong in the URL: use accessKeyId and secretAccessKey with ${ENV} values' };
  }
  if (url.search !== '' || url.hash !== '') return { problem: `remove the query or fragment from the URL: ${hint}` };
  if (url.protocol === 'file:') {
    if (url.host !== '' && url.host !== 'localhost') {
      return { problem: `file URLs name a directory on this machine, not host ${JSON.stringify(url.host)}: ${hint}` };
    }
    const dir = decodeURIComponent(url.pathname);
    if (dir.includes('\0')) return { problem: `contains a NUL byte: ${hint}` };
    return { kind: 'file', dir: stripSlashes(dir) };
  }
  if (url.protocol === 's3:') {
    const bucket = url.hostname;
    if (!/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(bucket)) {
      return { problem: `${JSON.stringify(bucket)} is not an S3 bucket name (3-63 of a-z, 0-9, '.', '-'): ${hint}` };
    }
    const prefix = decodeURIComponent(url.pathname).replace(/^\/+/, '').replace(/\/+$/, '');
    if (prefix.split('/').some((s) => s === '.' || s === '..') || /[\0\\]/.test(prefix)) {
      return { problem: `prefix ${JSON.stringify(prefix)} has a '.' or '..' segment or a backslash: ${hint}` };
    }
    return { kind: 's3', bucket, prefix: prefix === '' ? '' : `${prefix}/` };
  }
  return { problem: `scheme ${url.protocol} is not supported: ${hint}` };
}

function stripSlashes(dir: string): string {
  const trimmed = dir.replace(/\/+$/, '');
  return trimmed === '' ? '/' : trimmed;
}
