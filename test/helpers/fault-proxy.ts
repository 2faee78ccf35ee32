import { createHash, randomBytes } from 'node:crypto';
import { createServer, request, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

/**
 * A fault-injecting HTTP proxy on 127.0.0.1 between lethe's S3 client and s3rver. Each
 * request draws from a seeded generator: with probability `rate` it gets one fault, chosen
 * uniformly among those that apply to it. Headers are forwarded untouched (Host included),
 * so SigV4 signatures made for the proxy's address verify at the server.
 *
 * Faults, as S3 and the networks in front of it produce them:
 * - `internalError`: 500 InternalError, not forwarded.
 * - `slowDown`: 503 SlowDown with S3's XML body, not forwarded.
 * - `resetRequest`: the connection is reset after half the request body (bodies only).
 * - `resetResponse`: forwarded, then the connection is reset after half the response body.
 * - `stall`: no answer for `stallMs` (longer than the client's timeout), then a reset.
 * - `truncateHonest`: a GET answered with its real Content-Length but half its body.
 * - `truncateDishonest`: a GET answered with half its body and a Content-Length to match.
 * - `completeError`: CompleteMultipartUpload answered `200 OK` with an `<Error>` body, not forwarded.
 * - `wrongEtag`: a PUT or UploadPart forwarded, its ETag replaced by another MD5.
 *
 * Faults that forward the request let it take effect at the server first, as a lost answer
 * does; CompleteMultipartUpload is never forwarded under a fault, because s3rver (unlike
 * S3) answers a repeated Complete with NoSuchUpload.
 *
 * Arrival order decides which request gets which draw, so runs with concurrent requests
 * are reproducible in their fault rate, not request for request.
 *
 * A retry counts as one "on 403" or "on 404" only when the client received that answer
 * whole: a stall, or a reset or early end inside the body, hides whatever the server said
 * (an answer with no body to cut inside, such as a HEAD's, is dropped before its headers).
 */

export const FAULT_KINDS = [
  'internalError',
  'slowDown',
  'resetRequest',
  'resetResponse',
  'stall',
  'truncateHonest',
  'truncateDishonest',
  'completeError',
  'wrongEtag',
] as const;
export type FaultKind = (typeof FAULT_KINDS)[number];

export interface FaultProxyOptions {
  /** s3rver's endpoint (`http://127.0.0.1:PORT`). */
  readonly target: string;
  /** Returns numbers in [0, 1); the sweep passes seededRandom(seed). */
  readonly random: () => number;
  /** Fraction of requests that get a fault (0 passes everything through). */
  rate: number;
  /** How long a stalled response stays silent before its connection is reset. */
  readonly stallMs: number;
  /** Faults to choose from; all of them by default. */
  readonly kinds?: readonly FaultKind[];
}

export interface FaultProxyStats {
  requests: number;
  faults: Record<FaultKind, number>;
  /** Logical requests (method, path and query, Range, body hash), each counted once. */
  logical: number;
  /** Re-sends of a logical request whose previous attempt failed. */
  retries: number;
  /** Re-sends after the server answered 403 / 404 (these must never be retried). */
  retriesOn403: number;
  retriesOn404: number;
  /** Retries per logical request, for every logical request seen (0 for most). */
  retriesPerRequest: number[];
}

export interface FaultProxy {
  readonly endpoint: string;
  /** Changes the fault rate (0 for a clean check of the bucket's state). */
  setRate(rate: number): void;
  stats(): FaultProxyStats;
  /** Forgets the counts (not the seed's position). */
  resetStats(): void;
  stop(): Promise<void>;
}

interface Logical {
  retries: number;
  /** How the last attempt ended: an HTTP status, or 0 for a fault that gave none. */
  lastStatus: number;
  lastFaulted: boolean;
}

function xmlError(code: string, message: string): string {
  const id = randomBytes(8).toString('hex');
  return `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${code}</Code><Message>${message}</Message><RequestId>${id}</RequestId></Error>`;
}

function isComplete(method: string, url: URL): boolean {
  return method === 'POST' && url.searchParams.has('uploadId');
}

/** The faults that can happen to this request. */
function applicable(kinds: readonly FaultKind[], method: string, url: URL, bodyLength: number): FaultKind[] {
  const isPut = method === 'PUT' && !url.searchParams.has('retention') && !url.searchParams.has('tagging');
  return kinds.filter((kind) => {
    switch (kind) {
      case 'internalError':
      case 'slowDown':
      case 'stall':
      case 'resetResponse':
        return true;
      case 'resetRequest':
        return bodyLength > 1;
      case 'truncateHonest':
      case 'truncateDishonest':
        return method === 'GET';
      case 'completeError':
        return isComplete(method, url);
      case 'wrongEtag':
        return isPut;
    }
  });
}

async function readAll(stream: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

/**
 * Starts the proxy in front of `options.target`. Call stop() in afterAll; it closes every
 * connection, stalled ones included.
 */
export async function startFaultProxy(options: FaultProxyOptions): Promise<FaultProxy> {
  const upstream = new URL(options.target);
  const kinds = options.kinds ?? FAULT_KINDS;
  let rate = options.rate;
  const sockets = new Set<Socket>();
  const timers = new Set<NodeJS.Timeout>();
  let logical = new Map<string, Logical>();
  /** The last logical key sent per path: a retry is a re-send with nothing else in between. */
  let lastOnPath = new Map<string, string>();
  const fresh = (): FaultProxyStats => ({
    requests: 0,
    faults: Object.fromEntries(FAULT_KINDS.map((k) => [k, 0])) as Record<FaultKind, number>,
    logical: 0,
    retries: 0,
    retriesOn403: 0,
    retriesOn404: 0,
    retriesPerRequest: [],
  });
  let stats = fresh();

  const forward = (req: IncomingMessage, body: Buffer): Promise<{ status: number; headers: Record<string, string | string[]>; body: Buffer }> =>
    new Promise((resolve, reject) => {
      const headers = { ...req.headers };
      const out = request(
        { host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers },
        (answer) => {
          readAll(answer).then(
            (data) => {
              const h: Record<string, string | string[]> = {};
              for (const [k, v] of Object.entries(answer.headers)) if (v !== undefined) h[k] = v;
              resolve({ status: answer.statusCode ?? 502, headers: h, body: data });
            },
            reject,
          );
        },
      );
      out.on('error', reject);
      out.end(body);
    });

  /**
   * `socket` is the request's connection, taken when the request arrives: `req.socket` is
   * null once the request stream has been destroyed (as leaving a `for await` over it early does).
   */
  const handle = async (req: IncomingMessage, res: ServerResponse, socket: Socket): Promise<void> => {
    const method = req.method ?? '';
    const url = new URL(req.url ?? '/', 'http://proxy');
    const declared = Number(req.headers['content-length'] ?? 0);
    stats.requests += 1;
    const fault = (() => {
      if (options.random() >= rate) return undefined;
      const choices = applicable(kinds, method, url, declared);
      return choices[Math.floor(options.random() * choices.length)];
    })();
    if (fault !== undefined) stats.faults[fault] += 1;

    if (fault === 'resetRequest') {
      // Read about half of the body, then cut the connection mid-upload.
      let seen = 0;
      for await (const chunk of req) {
        seen += (chunk as Buffer).byteLength;
        if (seen >= declared / 2) break;
      }
      note(method, url, req, undefined, 0, true);
      socket.destroy();
      return;
    }
    const body = await readAll(req);
    const key = `${method} ${req.url ?? ''} ${req.headers.range ?? ''} ${createHash('sha256').update(body).digest('hex')}`;
    const entry = note(method, url, req, key, 0, fault !== undefined);

    const finish = (status: number, faulted: boolean): void => {
      entry.lastStatus = status;
      entry.lastFaulted = faulted;
    };

    if (fault === 'internalError' || fault === 'slowDown') {
      const [status, code, message] =
        fault === 'internalError'
          ? [500, 'InternalError', 'We encountered an internal error. Please try again.']
          : [503, 'SlowDown', 'Please reduce your request rate.'];
      res.writeHead(status, { 'content-type': 'application/xml' });
      res.end(xmlError(code, message));
      finish(status, true);
      return;
    }
    if (fault === 'completeError') {
      res.writeHead(200, { 'content-type': 'application/xml' });
      res.end(xmlError('InternalError', 'We encountered an internal error. Please try again.'));
      finish(200, true);
      return;
    }
    if (fault === 'stall' && isComplete(method, url)) {
      stall(socket);
      finish(0, true);
      return;
    }
    if (fault === 'resetResponse' && isComplete(method, url)) {
      socket.destroy();
      finish(0, true);
      return;
    }

    let answer;
    try {
      answer = await forward(req, body);
    } catch {
      socket.destroy();
      finish(0, true);
      return;
    }
    // The status recorded is the one the client received in a complete answer. A stall, or a
    // reset or early end inside the body, leaves it with no answer whatever the server said:
    // re-sending then is a retry after a transport failure, not a retry of a 403 or 404.
    finish(answer.status, fault !== undefined);
    const headers = { ...answer.headers };
    const half = answer.body.subarray(0, Math.floor(answer.body.byteLength / 2));
    switch (fault) {
      case 'stall':
        stall(socket);
        finish(0, true);
        return;
      case 'resetResponse':
      case 'truncateHonest': {
        finish(0, true);
        if (half.byteLength === 0) {
          // Nothing to cut inside (a HEAD, an empty body): the connection drops before the answer.
          socket.destroy();
          return;
        }
        res.writeHead(answer.status, headers);
        res.write(half);
        // A reset mid-body, or (truncateHonest) a clean end short of the Content-Length it announced.
        setImmediate(() => (fault === 'resetResponse' ? socket.destroy() : socket.end()));
        return;
      }
      case 'truncateDishonest': {
        headers['content-length'] = String(half.byteLength);
        res.writeHead(answer.status, headers);
        res.end(half);
        return;
      }
      case 'wrongEtag': {
        if (answer.status === 200 && headers.etag !== undefined) {
          headers.etag = `"${createHash('md5').update(randomBytes(16)).digest('hex')}"`;
        }
        break;
      }
      case undefined:
        break;
    }
    res.writeHead(answer.status, headers);
    res.end(answer.body);
  };

  /** Counts the request, and whether it re-sends a logical request whose last attempt failed. */
  function note(method: string, url: URL, req: IncomingMessage, key: string | undefined, status: number, faulted: boolean): Logical {
    const sdkAttempt = /attempt=(\d+)/.exec(String(req.headers['amz-sdk-request'] ?? ''))?.[1];
    const path = `${method} ${url.pathname}`;
    const id = key ?? `${path} (reset before its body was read) ${String(req.headers['content-length'])} ${String(req.headers['content-md5'] ?? req.headers['x-amz-content-sha256'] ?? '')}`;
    const previous = logical.get(id);
    const resent = previous !== undefined && lastOnPath.get(path) === id && (previous.lastFaulted || previous.lastStatus >= 400);
    const sdkRetry = Number(sdkAttempt ?? 1) > 1;
    const entry = previous ?? { retries: 0, lastStatus: status, lastFaulted: faulted };
    if (previous === undefined) {
      // An SDK retry of a request reset before its body could be hashed is not a new request.
      if (!sdkRetry) stats.logical += 1;
      logical.set(id, entry);
    }
    if (resent || sdkRetry) {
      entry.retries += 1;
      stats.retries += 1;
      if (previous?.lastStatus === 403) stats.retriesOn403 += 1;
      if (previous?.lastStatus === 404) stats.retriesOn404 += 1;
    }
    lastOnPath.set(path, id);
    return entry;
  }

  function stall(socket: Socket): void {
    const timer = setTimeout(() => {
      timers.delete(timer);
      socket.destroy();
    }, options.stallMs);
    timers.add(timer);
  }

  const server = createServer((req, res) => {
    const socket = req.socket;
    // Whatever fails here (a client that hung up first, say) ends that connection, nothing more.
    handle(req, res, socket).catch(() => socket.destroy());
  });
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

  return {
    endpoint,
    setRate: (r) => (rate = r),
    stats: () => ({ ...stats, retriesPerRequest: [...logical.values()].map((l) => l.retries) }),
    resetStats: () => {
      stats = fresh();
      logical = new Map();
      lastOnPath = new Map();
    },
    stop: () =>
      new Promise<void>((resolve, reject) => {
        for (const timer of timers) clearTimeout(timer);
        for (const socket of sockets) socket.destroy();
        server.close((err) => (err ? reject(err) : resolve()));
      }),
  };
}
