import { mkdirSync, readFileSync, renameSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';

const REPO_ROOT = fileURLToPath(new URL('../..', import.meta.url));
const CONFIG_FILES = ['tsconfig.json', 'tsconfig.build.json'].map((f) => join(REPO_ROOT, f));

/**
 * Vitest global setup: the tests that spawn `bin/lethe.js` run dist/, so dist/ must be the
 * compiled form of the sources as they are now, not as they were at `npm ci`. Rebuilds when
 * an output is missing or older than any source or tsconfig; otherwise costs a few stats.
 *
 * The rebuild skips type checking (`noCheck`): the JavaScript is the same, `npm run
 * typecheck` is where types are checked, and a type error mid-edit must not stop every test.
 * Syntax errors do stop the run. Each output is replaced by an atomic rename, and left alone
 * (only touched) when unchanged, because other test runs in the same working tree may be
 * starting the CLI from dist/ at that moment.
 */
export default function setup(): void {
  const config = readBuildConfig();
  const stale = staleness(config);
  if (stale === undefined) return;
  process.stderr.write(
    `dist/ is out of date (${stale}): compiling tsconfig.build.json without type checks\n`,
  );
  const started = Date.now();
  emit(config);
  process.stderr.write(`dist/ rebuilt in ${((Date.now() - started) / 1000).toFixed(1)} s\n`);
}

function readBuildConfig(): ts.ParsedCommandLine {
  const config = ts.getParsedCommandLineOfConfigFile(
    join(REPO_ROOT, 'tsconfig.build.json'),
    { noCheck: true },
    {
      ...ts.sys,
      onUnRecoverableConfigFileDiagnostic: (d) => {
        throw new Error(
          `tsconfig.build.json: ${ts.flattenDiagnosticMessageText(d.messageText, '\n')}`,
        );
      },
    },
  );
  if (config === undefined) throw new Error('tsconfig.build.json could not be read');
  failOnErrors(config.errors);
  return config;
}

/** `read(file)`, or undefined when the file does not exist. */
function ifExists<T>(read: (file: string) => T, file: string): T | undefined {
  try {
    return read(file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

const mtimeMs = (file: string): number | undefined => ifExists((f) => statSync(f).mtimeMs, file);

/** Why dist/ needs a rebuild, or undefined when every output is newer than every input. */
function staleness(config: ts.ParsedCommandLine): string | undefined {
  let newestInput = { file: '', mtime: 0 };
  let oldestOutput = Infinity;
  for (const file of [...CONFIG_FILES, ...config.fileNames]) {
    const mtime = mtimeMs(file) ?? 0;
    if (mtime > newestInput.mtime) newestInput = { file, mtime };
  }
  for (const source of config.fileNames) {
    for (const output of ts.getOutputFileNames(config, source, !ts.sys.useCaseSensitiveFileNames)) {
      const mtime = mtimeMs(output);
      if (mtime === undefined) return `${relative(REPO_ROOT, output)} is missing`;
      oldestOutput = Math.min(oldestOutput, mtime);
    }
  }
  return newestInput.mtime > oldestOutput
    ? `${relative(REPO_ROOT, newestInput.file)} is newer`
    : undefined;
}

function writeOutput(file: string, text: string): void {
  if (ifExists((f) => readFileSync(f, 'utf8'), file) === text) {
    // A type-only edit compiles to the same JavaScript: keep the file, mark it current.
    const now = new Date();
    utimesSync(file, now, now);
    return;
  }
  mkdirSync(dirname(file), { recursive: true });
  const temp = `${file}.${process.pid}.tmp`;
  writeFileSync(temp, text);
  renameSync(temp, file);
}

function emit(config: ts.ParsedCommandLine): void {
  const program = ts.createProgram({
    rootNames: config.fileNames,
    options: config.options,
    configFileParsingDiagnostics: ts.getConfigFileParsingDiagnostics(config),
  });
  failOnErrors([...program.getOptionsDiagnostics(), ...program.getSyntacticDiagnostics()]);
  const result = program.emit(undefined, (file, text) => writeOutput(file, text));
  failOnErrors(result.diagnostics);
  if (result.emitSkipped) throw new Error('tsc skipped emitting dist/');
}

function failOnErrors(diagnostics: readonly ts.Diagnostic[]): void {
  const errors = diagnostics.filter((d) => d.category === ts.DiagnosticCategory.Error);
  if (errors.length === 0) return;
  const text = ts.formatDiagnostics(errors, {
    getCanonicalFileName: (f) => f,
    getCurrentDirectory: () => REPO_ROOT,
    getNewLine: () => '\n',
  });
  throw new Error(
    `compiling dist/ failed; fix the sources (npx tsc -p tsconfig.build.json --noCheck shows the same):\n${text}`,
  );
}
