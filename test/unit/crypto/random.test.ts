import { describe, expect, it } from 'vitest';
import { randomBytes } from '../../../src/crypto/random.ts';

describe('randomBytes', () => {
  it('hands out fresh bytes of the length asked, in memory of their own', () => {
    const seen = new Set<string>();
    // Several times round the 4 KiB block, with lengths that do not divide it.
    for (let i = 0; i < 600; i++) {
      const bytes = randomBytes(32 + (i % 7));
      expect(bytes).toHaveLength(32 + (i % 7));
      expect(bytes.buffer.byteLength).toBe(bytes.length);
      const hex = Buffer.from(bytes).toString('hex');
      expect(seen.has(hex)).toBe(false);
      seen.add(hex);
    }
  });

  it('serves lengths larger than its block, and zero', () => {
    const big = randomBytes(10_000);
    expect(big).toHaveLength(10_000);
    expect(big.some((b) => b !== 0)).toBe(true);
    expect(randomBytes(0)).toHaveLength(0);
  });

  it('looks uniform (no byte value wildly over- or under-represented)', () => {
    const counts = new Array<number>(256).fill(0);
    for (let i = 0; i < 200; i++)
      for (const b of randomBytes(512)) counts[b] = (counts[b] ?? 0) + 1;
    // 102,400 bytes: 400 expected per value; 5 standard deviations is ±100.
    expect(Math.min(...counts)).toBeGreaterThan(300);
    expect(Math.max(...counts)).toBeLessThan(500);
  });
});
