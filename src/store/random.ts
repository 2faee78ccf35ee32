/**
 * Deterministic pseudo-randomness for the seeded generator. Everything here is pure 32-bit
 * integer arithmetic, so the same seed yields the same stream on every platform and Node
 * version (Math.random is never used).
 */

/** Mixes a 32-bit word (murmur3 finaliser); a bijection on uint32. */
export function mix32(value: number): number {
  let h = value >>> 0;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

const TWO_32 = 0x1_0000_0000;

/**
 * sfc32, a small fast generator with a 128-bit state. `reseed` lets one instance be reused
 * for per-row streams (seed, row id, purpose) without allocating.
 */
export class Prng {
  private a = 0;
  private b = 0;
  private c = 0;
  private d = 0;

  constructor(seed: number, stream = 0, purpose = 0) {
    this.reseed(seed, stream, purpose);
  }

  /**
   * Restarts the stream from (seed, stream, purpose). `seed` may be any non-negative safe
   * integer; `stream` and `purpose` are folded to 32 bits.
   */
  reseed(seed: number, stream = 0, purpose = 0): void {
    const lo = seed >>> 0;
    const hi = Math.floor(seed / TWO_32) >>> 0;
    this.a = mix32(lo ^ 0x9e3779b9);
    this.b = mix32(hi ^ mix32(stream ^ 0x7f4a7c15));
    this.c = mix32(stream ^ mix32(purpose ^ 0x94d049bb));
    this.d = mix32(purpose ^ mix32(lo + 0x2545f491));
    for (let i = 0; i < 12; i++) this.nextU32();
  }

  /** A uniform uint32. */
  nextU32(): number {
    const t0 = (this.a + this.b) | 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) | 0;
    this.c = (this.c << 21) | (this.c >>> 11);
    this.d = (this.d + 1) | 0;
    const t = (t0 + this.d) | 0;
    this.c = (this.c + t) | 0;
    return t >>> 0;
  }

  /** A uniform float in [0, 1). */
  next(): number {
    return this.nextU32() / TWO_32;
  }

  /** A uniform integer in [0, n); n must be a positive integer ≤ 2^32. */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }

  /** A uniform integer in [lo, hi] (inclusive). */
  range(lo: number, hi: number): number {
    return lo + this.int(hi - lo + 1);
  }

  /** True with probability p. */
  chance(p: number): boolean {
    return this.next() < p;
  }

  /** A uniform element of a non-empty array. */
  pick<T>(items: readonly T[]): T {
    const item = items[this.int(items.length)];
    if (item === undefined) throw new RangeError('pick from an empty array');
    return item;
  }

  /** A standard normal variate (Box–Muller). */
  normal(): number {
    const u = 1 - this.next();
    const v = this.next();
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
  }

  /** Log-uniform integer in [lo, hi]: small values are as likely per decade as large ones. */
  logUniform(lo: number, hi: number): number {
    return Math.round(Math.exp(Math.log(lo) + this.next() * (Math.log(hi) - Math.log(lo))));
  }
}

/**
 * Cumulative weights for sampling an index with probability proportional to its weight.
 * `sample(rng, n)` samples among the first n entries only, which is how "pick among the
 * conversations that exist at time t" is done without rebuilding tables.
 */
export class CumulativeTable {
  private readonly cdf: Float64Array;

  constructor(weights: ArrayLike<number>) {
    this.cdf = new Float64Array(weights.length);
    let sum = 0;
    for (let i = 0; i < weights.length; i++) {
      sum += weights[i] ?? 0;
      this.cdf[i] = sum;
    }
  }

  get length(): number {
    return this.cdf.length;
  }

  /** An index in [0, n) (default: all); n is clamped to [1, length]. */
  sample(rng: Prng, n = this.cdf.length): number {
    const limit = Math.max(1, Math.min(n, this.cdf.length));
    const target = rng.next() * (this.cdf[limit - 1] ?? 0);
    let lo = 0;
    let hi = limit - 1;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if ((this.cdf[mid] ?? 0) > target) hi = mid;
      else lo = mid + 1;
    }
    return lo;
  }
}

/** Zipf weights 1/(rank^s) for ranks 1..n: a few items get most of the mass. */
export function zipfWeights(n: number, s: number): Float64Array {
  const weights = new Float64Array(n);
  for (let i = 0; i < n; i++) weights[i] = 1 / Math.pow(i + 1, s);
  return weights;
}
