import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { compareNatural, compareTenants, sortTenants } from '../../../src/util/tenant-order.ts';

describe('tenant order', () => {
  it('sorts integer tenant ids numerically, not as text', () => {
    expect(sortTenants(['1', '10', '11', '2', '-3', '007'])).toEqual(['-3', '1', '2', '007', '10', '11']);
  });

  it('sorts any list of integers as numbers', () => {
    fc.assert(
      fc.property(fc.array(fc.bigInt({ min: -(10n ** 30n), max: 10n ** 30n })), (ns) => {
        const sorted = sortTenants(ns.map(String));
        expect(sorted).toEqual([...ns].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0)).map(String));
      }),
    );
  });

  it('puts integers first and other ids in text order, as a total order', () => {
    expect(sortTenants(['beta', '10', 'alpha', '9'])).toEqual(['9', '10', 'alpha', 'beta']);
    fc.assert(
      fc.property(fc.array(fc.oneof(fc.string(), fc.nat().map(String)), { minLength: 3, maxLength: 3 }), ([a = '', b = '', c = '']) => {
        expect(Math.sign(compareTenants(a, b)) + Math.sign(compareTenants(b, a))).toBe(0);
        if (compareTenants(a, b) <= 0 && compareTenants(b, c) <= 0) expect(compareTenants(a, c)).toBeLessThanOrEqual(0);
        expect(compareTenants(a, a)).toBe(0);
      }),
    );
  });

  it('orders key ids with their numbers as numbers', () => {
    const ids = ['user:10/2', 'user:2/10', 'tenant:10', 'user:2/9', 'tenant:2'];
    expect([...ids].sort(compareNatural)).toEqual(['tenant:2', 'tenant:10', 'user:2/9', 'user:2/10', 'user:10/2']);
  });
});
