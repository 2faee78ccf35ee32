import { createHash, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from '../log/index.ts';
import type { Observer } from './observe.ts';
import { renderStatusPage, STATUS_PAGE_CSP } from './status-page.ts';

/**
 * The daemon's HTTP endpoint: /healthz (the process answers), /readyz (the vault answers and
 * the schedules are loaded), /metrics (Prometheus text) and / (the status page). With a
 * token configured, everything but /healthz needs `Authorization: Bearer <token>`. Only GET
 * and HEAD are served; nothing here changes state.
 */

export interface HttpOptions {
  readonly host: string;
  readonly port: number;
  readonly token: string | undefined;
  readonly observer: Observer;
  /** Resolves true when the daemon can do its work (vault reachable, schedules loaded). */
  readonly ready: () => Promise<{ ok: boolean; problems: string[] }>;
  readonly log: Logger;
}

const COMMON_HEADERS = {
  'cache-control': 'no-store',
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
} as const;

function digest(text: string): Buffer {
  return createHash('sha256').update(text, 'utf8').digest();
}

/** Constant-time check of a bearer token (comparing digests, so lengths do not leak either). */
function authorised(req: IncomingMessage, expected: Buffer | undefined): boolean {
  if (expected === undefined) return true;
  const header = req.headers.authorization ?? '';
  const match = /^Bearer[ ]+(\S+)$/i.exec(header);
  return match?.[1] !== undefined && timingSafeEqual(digest(match[1]), expected);
}

function send(res: ServerResponse, status: number, type: string, body: string, extra: Record<string, string> = {}): void {
  res.writeHead(status, { ...COMMON_HEADERS, 'content-type': type, 'content-length': Buffer.byteLength(body), ...extra });
  res.end(res.req.method === 'HEAD' ? undefined : body);
}

export class DaemonHttp {
  readonly #server: Server;
  readonly #o: HttpOptions;
  readonly #token: Buffer | undefined;

  constructor(options: HttpOptions) {
    this.#o = options;
    this.#token = options.token === undefined ? undefined : digest(options.token);
    this.#server = createServer((req, res) => {
      this.#handle(req, res).catch((err: unknown) => {
        options.log.error({ err, path: req.url }, 'daemon http: request failed');
        if (!res.headersSent) send(res, 500, 'text/plain; charset=utf-8', 'internal error: see the daemon log\n');
        else res.destroy();
      });
    });
    // A slow or stuck client cannot hold a socket for long.
    this.#server.requestTimeout = 15_000;
    this.#server.headersTimeout = 10_000;
    this.#server.keepAliveTimeout = 5_000;
    // Nothing here needs many clients; a flood of idle sockets must not exhaust descriptors.
    this.#server.maxConnections = 64;
    this.#server.on('connection', (socket) => socket.setTimeout(20_000, () => socket.destroy()));
  }

  /** Starts listening; resolves with the address actually bound (port 0 picks one). */
  async listen(): Promise<{ host: string; port: number }> {
    this.#server.listen({ host: this.#o.host, port: this.#o.port });
    await new Promise<void>((resolve, reject) => {
      const onError = (err: Error): void => reject(err);
      this.#server.once('error', onError);
      this.#server.once('listening', () => {
        this.#server.off('error', onError);
        resolve();
      });
    });
    const address = this.#server.address() as AddressInfo;
    return { host: address.address, port: address.port };
  }

  async close(): Promise<void> {
    if (!this.#server.listening) return;
    const closed = new Promise<void>((resolve) => this.#server.close(() => resolve()));
    this.#server.closeAllConnections();
    await closed;
  }

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      send(res, 405, 'text/plain; charset=utf-8', 'only GET and HEAD are served\n', { allow: 'GET, HEAD' });
      return;
    }
    let path: string;
    try {
      path = new URL(req.url ?? '/', 'http://daemon').pathname;
    } catch {
      send(res, 400, 'text/plain; charset=utf-8', 'bad request\n');
      return;
    }
    if (path === '/healthz') {
      send(res, 200, 'text/plain; charset=utf-8', 'ok\n');
      return;
    }
    if (!authorised(req, this.#token)) {
      send(res, 401, 'text/plain; charset=utf-8', 'a bearer token is required (daemon.token in the config)\n', {
        'www-authenticate': 'Bearer realm="lethe"',
      });
      return;
    }
    switch (path) {
      case '/readyz': {
        const { ok, problems } = await this.#o.ready();
        send(res, ok ? 200 : 503, 'text/plain; charset=utf-8', ok ? 'ready\n' : `not ready: ${problems.join('; ')}\n`);
        return;
      }
      case '/metrics': {
        const registry = this.#o.observer.registry;
        send(res, 200, registry.contentType, await registry.metrics());
        return;
      }
      case '/':
      case '/status': {
        const html = renderStatusPage(await this.#o.observer.statusModel(), { refreshSeconds: 60 });
        send(res, 200, 'text/html; charset=utf-8', html, { 'content-security-policy': STATUS_PAGE_CSP, 'x-frame-options': 'DENY' });
        return;
      }
      default:
        send(res, 404, 'text/plain; charset=utf-8', 'not found: try /, /metrics, /healthz or /readyz\n');
    }
  }
}
