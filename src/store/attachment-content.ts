import { createCipheriv, createHash } from 'node:crypto';

let cachedSeed = -1;
let cachedKey: Buffer = Buffer.alloc(32);

/**
 * Deterministic incompressible bytes for attachment `id`: the AES-256-CTR keystream under a
 * key derived from the seed. Native speed, so hundreds of megabytes cost little.
 */
export function randomContent(seed: number, id: number, size: number): Buffer {
  if (seed !== cachedSeed) {
    cachedKey = createHash('sha256').update(`lethe-seed-attachments:${seed}`).digest();
    cachedSeed = seed;
  }
  const iv = Buffer.alloc(16);
  iv.writeBigUInt64BE(BigInt(id), 0);
  return createCipheriv('aes-256-ctr', cachedKey, iv).update(Buffer.alloc(size));
}

/** Compressible text content of about `size` bytes (as a .txt upload would be). */
export function textContent(sample: string, size: number): Buffer {
  const unit = Buffer.from(`${sample === '' ? 'empty' : sample}\n`, 'utf8');
  const out = Buffer.alloc(size);
  for (let offset = 0; offset < size; offset += unit.length) unit.copy(out, offset);
  return out;
}
