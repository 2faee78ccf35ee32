import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * The repository root: the nearest directory above this module that holds package.json.
 * The benchmark runs compiled from dist/bench/ (bin/lethe-bench.js) and from its sources in
 * bench/ (the unit tests), so a fixed `..` would be right for only one of them. Throws when
 * no package.json is found, which means the module was copied out of the repository.
 */
export const REPO_ROOT: string = findRoot(dirname(fileURLToPath(import.meta.url)));

function findRoot(start: string): string {
  for (let dir = start; ; dir = dirname(dir)) {
    if (existsSync(join(dir, 'package.json'))) return dir;
    if (dirname(dir) === dir)
      throw new Error(`no package.json above ${start}: run the benchmark from its repository`);
  }
}
