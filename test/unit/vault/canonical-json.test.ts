import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { isLetheError } from '../../../src/errors/index.ts';
import { canonicalJson } from '../../../src/vault/index.ts';

/** Deterministic PRNG so a failing shuffle is reproducible from fast-check's seed. */
function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A deep copy of `value` whose objects were built with their keys in a shuffled order. */
function reorderKeys(value: unknown, random: () => number): unknown {
  if (Array.isArray(value)) return value.map((v: unknown) => reorderKeys(v, random));
  if (value === null || typeof value !== 'object') return value;
  const keys = Object.keys(value);
  for (let i = keys.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [keys[i], keys[j]] = [keys[j] as string, keys[i] as string];
  }
  const out: Record<string, unknown> = {};
  for (const k of keys) {
    // defineProperty, so a "__proto__" key stays an own key as JSON.parse makes it.
    Object.defineProperty(out, k, {
      value: reorderKeys((value as Record<string, unknown>)[k], random),
      enumerable: true,
      writable: true,
      configurable: true,
    });
  }
  return out;
}

describe('canonicalJson', () => {
  it('sorts keys at every depth and writes no whitespace', () => {
    expect(canonicalJson({ b: 1, a: { d: [3, { z: 1, y: 2 }], c: null } })).toBe(
      '{"a":{"c":null,"d":[3,{"y":2,"z":1}]},"b":1}',
    );
  });

  it('orders integer-like keys as strings, unlike object enumeration order', () => {
    const value = { a: 3, '9': 2, '10': 1 };
    expect(JSON.stringify(value)).toBe('{"9":2,"10":1,"a":3}');
    expect(canonicalJson(value)).toBe('{"10":1,"9":2,"a":3}');
  });

  it('orders keys by UTF-16 code units (RFC 8785), not by code point', () => {
    // U+1F600 is the surrogate pair D83D DE00, which sorts before U+FFFF in code units.
    expect(canonicalJson({ '\uffff': 1, '\u{1f600}': 2, é: 3, z: 4 })).toBe(
      '{"z":4,"é":3,"\u{1f600}":2,"\uffff":1}',
    );
  });

  it('follows JSON.stringify for undefined, functions, non-finite numbers, dates and boxes', () => {
    const value = {
      u: undefined,
      f: () => 1,
      arr: [undefined, NaN, Infinity, -0],
      when: new Date('2026-03-01T12:00:00.000Z'),
      boxed: [new Number(2), new String('s'), new Boolean(false)],
      custom: { toJSON: (key: string) => `custom:${key}` },
    };
    expect(canonicalJson(value)).toBe(
      '{"arr":[null,null,null,0],"boxed":[2,"s",false],"custom":"custom:custom","when":"2026-03-01T12:00:00.000Z"}',
    );
  });

  it('keeps an own "__proto__" key, as JSON.parse produces it', () => {
    expect(canonicalJson(JSON.parse('{"b":1,"__proto__":{"x":2}}'))).toBe(
      '{"__proto__":{"x":2},"b":1}',
    );
  });

  it('refuses bigints and cycles, naming the path', () => {
    const bigint = (): string => canonicalJson({ stats: { rows: 10n } });
    expect(bigint).toThrow(/\$\.stats\.rows is a bigint/);
    const cyclic: Record<string, unknown> = { a: [1] };
    (cyclic.a as unknown[]).push(cyclic);
    expect(() => canonicalJson(cyclic)).toThrow(/\$\.a\[1\] is circular/);
    try {
      canonicalJson(undefined);
      expect.unreachable();
    } catch (err) {
      expect(isLetheError(err, 'INTERNAL')).toBe(true);
    }
  });

  it('does not depend on the order keys were inserted in (property)', () => {
    fc.assert(
      fc.property(fc.jsonValue(), fc.integer(), (value, seed) => {
        const shuffled = reorderKeys(value, mulberry32(seed));
        expect(canonicalJson(shuffled)).toBe(canonicalJson(value));
      }),
      { numRuns: 500 },
    );
  });

  it('means the same JSON as JSON.stringify and is stable across a round trip (property)', () => {
    const anything = fc.anything({
      withBoxedValues: true,
      withDate: true,
      withNullPrototype: true,
      withSparseArray: true,
      withMap: true,
      withSet: true,
      withTypedArray: true,
    });
    fc.assert(
      fc.property(anything, (inner) => {
        const value = { inner };
        const canonical = canonicalJson(value);
        expect(JSON.parse(canonical)).toEqual(JSON.parse(JSON.stringify(value)));
        expect(canonicalJson(JSON.parse(canonical))).toBe(canonical);
      }),
      { numRuns: 500 },
    );
  });
});
