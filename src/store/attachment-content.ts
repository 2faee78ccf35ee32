import { createCipheriv, createHash } from 'node:crypto';

/** What the bytes are for: each gets its own keystream, so equal ids give unrelated bytes. */
export type ContentDomain = 'attachments' | 'files';

const keys = new Map<string, Buffer>();

function keyFor(seed: number, domain: ContentDomain): Buffer {
  const name = `lethe-seed-${domain}:${seed}`;
  let key = keys.get(name);
  if (key === undefined) {
    // Two domains per seed in use at a time; older seeds are dropped.
    if (keys.size >= 4) keys.clear();
    key = createHash('sha256').update(name).digest();
    keys.set(name, key);
  }
  return key;
}

/**
 * Deterministic incompressible bytes for item `id` of `domain`: the AES-256-CTR keystream
 * under a key derived from the seed and the domain. Native speed, so hundreds of megabytes
 * cost little.
 */
export function randomContent(
  seed: number,
  id: number,
  size: number,
  domain: ContentDomain = 'attachments',
): Buffer {
  const iv = Buffer.alloc(16);
  iv.writeBigUInt64BE(BigInt(id), 0);
  return createCipheriv('aes-256-ctr', keyFor(seed, domain), iv).update(Buffer.alloc(size));
}

/** Compressible text content of about `size` bytes (as a .txt upload would be). */
export function textContent(sample: string, size: number): Buffer {
  const unit = Buffer.from(`${sample === '' ? 'empty' : sample}\n`, 'utf8');
  const out = Buffer.alloc(size);
  for (let offset = 0; offset < size; offset += unit.length) unit.copy(out, offset);
  return out;
}
