import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

export interface S3rverHandle {
  /** `http://127.0.0.1:<port>` (`https://` when started with a certificate); use path-style addressing. */
  endpoint: string;
  bucket: string;
  accessKeyId: string;
  secretAccessKey: string;
  /** Stops the server and removes its directory. */
  stop: () => Promise<void>;
}

/**
 * Runs in the child. s3rver signs ListObjectsV2 continuation tokens with single DES, which
 * Node's OpenSSL 3 only offers through the legacy provider: without
 * `--openssl-legacy-provider` every truncated listing is a 500. A child process also keeps
 * s3rver's process-wide logger hooks out of the test worker. It exits when its stdin
 * closes, so a crashed test run cannot leave it behind.
 */
const CHILD_SOURCE = `
const S3rver = require(process.argv[1]);
const tls = process.argv[4] === undefined ? {} : {
  cert: require('node:fs').readFileSync(process.argv[4]),
  key: require('node:fs').readFileSync(process.argv[5]),
};
const server = new S3rver({
  ...tls,
  address: '127.0.0.1',
  port: 0,
  silent: true,
  directory: process.argv[2],
  configureBuckets: [{ name: process.argv[3] }],
});
server.run().then(
  (address) => process.stdout.write(JSON.stringify({ port: address.port }) + '\\n'),
  (err) => { process.stderr.write(String((err && err.stack) || err)); process.exit(1); },
);
const stop = () => server.close().finally(() => process.exit(0));
process.stdin.on('end', stop);
process.stdin.resume();
process.on('SIGTERM', stop);
`;

/** s3rver's only account. */
const ACCOUNT = { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' };

/**
 * Starts s3rver on 127.0.0.1 at a random port, storing into a fresh temp directory, with
 * one bucket created; over https when `tls` names a PEM certificate and key. Call stop() in
 * afterAll.
 */
export async function startS3rver(tls?: { cert: string; key: string }): Promise<S3rverHandle> {
  const directory = await mkdtemp(join(tmpdir(), 'lethe-s3rver-'));
  const bucket = 'lethe-test';
  const modulePath = createRequire(import.meta.url).resolve('s3rver');
  const child = spawn(
    process.execPath,
    ['--openssl-legacy-provider', '-e', CHILD_SOURCE, modulePath, directory, bucket, ...(tls === undefined ? [] : [tls.cert, tls.key])],
    { stdio: ['pipe', 'pipe', 'pipe'] },
  );
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (text: string) => (stderr += text));

  const stop = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) {
      const exited = once(child, 'exit');
      child.stdin.end();
      const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
      await exited;
      clearTimeout(timer);
    }
    await rm(directory, { recursive: true, force: true });
  };

  try {
    const port = await new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => {
        reject(new Error(`s3rver did not start within 30 s: ${stderr}`));
      }, 30_000);
      child.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`s3rver exited with ${String(code)} before listening: ${stderr}`));
      });
      createInterface({ input: child.stdout }).once('line', (line) => {
        clearTimeout(timer);
        const { port: value } = JSON.parse(line) as { port: unknown };
        if (typeof value === 'number') resolve(value);
        else reject(new Error(`s3rver reported no port: ${line}`));
      });
    });
    return { endpoint: `${tls === undefined ? 'http' : 'https'}://127.0.0.1:${port}`, bucket, ...ACCOUNT, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}
