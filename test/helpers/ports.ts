export { freePort } from '../../src/util/net.ts';
