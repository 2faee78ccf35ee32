import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { migrationRefusal } from '../../../src/vault/migrate.ts';

/** Shared by `lethe init` and `lethe vault restore`: a refused format is the operator's error, with its fix. */
describe('migrationRefusal', () => {
  it('turns a migration that refuses the vault into a VAULT error carrying the hint', () => {
    const err = new pg.DatabaseError('this vault was written by an older lethe', 0, 'error');
    err.code = '55000';
    err.hint = 'give this version a new vault, then run lethe init';
    const refused = migrationRefusal(err, 'lethe', 5);
    expect(refused?.code).toBe('VAULT');
    expect(refused?.message).toBe('this vault was written by an older lethe: give this version a new vault, then run lethe init');
    expect(refused?.details).toEqual({ schema: 'lethe', migration: 5 });
  });

  it('leaves every other error to the caller', () => {
    const other = new pg.DatabaseError('relation exists', 0, 'error');
    other.code = '42P07';
    expect(migrationRefusal(other, 'lethe', 5)).toBeUndefined();
    expect(migrationRefusal(new Error('connection reset'), 'lethe', 5)).toBeUndefined();
  });
});
