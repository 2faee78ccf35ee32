import { getContainerRuntimeClient } from 'testcontainers';

let probe: Promise<boolean> | undefined;

/**
 * True when testcontainers finds a working container runtime. Answers within 10 s even if
 * a configured DOCKER_HOST never responds, and asks only once per test file.
 */
export function dockerAvailable(): Promise<boolean> {
  probe ??= Promise.race([
    getContainerRuntimeClient().then(
      () => true,
      () => false,
    ),
    new Promise<boolean>((resolve) => {
      setTimeout(() => resolve(false), 10_000).unref();
    }),
  ]);
  return probe;
}
