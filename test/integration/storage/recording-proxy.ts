import { createServer, request, type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface RecordedRequest {
  method: string;
  /** Path and query, e.g. `/bucket/key?uploads`. */
  url: string;
  headers: IncomingHttpHeaders;
}

export interface RecordingProxy {
  endpoint: string;
  requests: RecordedRequest[];
  /** Extra headers to add to the response for a request; lets a test model server state. */
  addResponseHeaders: (req: RecordedRequest) => Record<string, string> | undefined;
  stop: () => Promise<void>;
}

/**
 * A pass-through HTTP proxy on 127.0.0.1 in front of `target` that records what reaches
 * the wire. Headers are forwarded untouched (Host included), so SigV4 signatures made for
 * the proxy's address still verify at the server.
 */
export async function startRecordingProxy(target: string): Promise<RecordingProxy> {
  const upstream = new URL(target);
  const proxy: RecordingProxy = {
    endpoint: '',
    requests: [],
    addResponseHeaders: () => undefined,
    stop: () =>
      new Promise((resolve, reject) => {
        server.close((err) => (err ? reject(err) : resolve()));
        server.closeAllConnections();
      }),
  };
  const server = createServer((req, res) => {
    const recorded = { method: req.method ?? '', url: req.url ?? '', headers: req.headers };
    proxy.requests.push(recorded);
    const forward = request(
      {
        host: upstream.hostname,
        port: upstream.port,
        method: req.method,
        path: req.url,
        headers: req.headers,
      },
      (answer) => {
        const extra = proxy.addResponseHeaders(recorded) ?? {};
        res.writeHead(answer.statusCode ?? 502, { ...answer.headers, ...extra });
        answer.pipe(res);
      },
    );
    forward.on('error', () => res.destroy());
    req.pipe(forward);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  proxy.endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return proxy;
}
