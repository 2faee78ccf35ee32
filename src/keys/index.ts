export { KeyMinter, type CellKeyResult } from './minter.ts';
export { KeyOpener, type OpenedKey } from './opener.ts';
