import { randomFillSync } from 'node:crypto';

// A call into OpenSSL's CSPRNG costs the same ~6 µs for 32 bytes as for 4 KiB, about 5% of
// encrypting a small file, so bytes are drawn in blocks (as Node's randomUUID does) and each
// is handed out once and then wiped from the block.
const BLOCK_BYTES = 4096;
const block = Buffer.allocUnsafeSlow(BLOCK_BYTES);
let used = BLOCK_BYTES;

/**
 * `length` bytes from node:crypto's CSPRNG, in memory of their own (not Node's shared buffer
 * pool, so no other allocation can see them). Never throws.
 */
export function randomBytes(length: number): Uint8Array {
  const out = new Uint8Array(length);
  if (length > BLOCK_BYTES) return randomFillSync(out);
  if (used + length > BLOCK_BYTES) {
    randomFillSync(block);
    used = 0;
  }
  out.set(block.subarray(used, used + length));
  block.fill(0, used, used + length);
  used += length;
  return out;
}
