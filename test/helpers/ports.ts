import { createServer } from 'node:net';

export { freePort } from '../../src/util/net.ts';

/** The embedded server's default port, which `lethe demo` takes when it is free. */
const DEMO_DEFAULT_PORT = 54329;

/**
 * Keeps the demo's default port busy for a test file that runs `lethe demo`, so that its
 * demo (and one in another test file running at the same time) picks a free port instead:
 * two demos that both found the default port free would otherwise race for it, and the
 * second embedded server would fail to start. When another test file already holds the
 * port, this holds nothing (the port is busy either way). Returns the release function.
 */
export async function holdDemoDefaultPort(): Promise<() => Promise<void>> {
  const server = createServer();
  const held = await new Promise<boolean>((resolve) => {
    server.once('error', () => resolve(false));
    server.listen(DEMO_DEFAULT_PORT, '127.0.0.1', () => resolve(true));
  });
  if (!held) return () => Promise.resolve();
  return () => new Promise<void>((resolve) => server.close(() => resolve()));
}
