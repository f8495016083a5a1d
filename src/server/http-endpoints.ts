/**
 * Plain-HTTP operational endpoints, each on its own port as in Dapr: `/healthz` (200 when
 * serving, 503 otherwise), `/livez` (200 while the process runs) and the metrics (Prometheus text format, on every path, as Dapr).
 *
 * @module
 */
import { createServer, type Server } from "node:http";
import type { Registry } from "prom-client";

/** A started HTTP endpoint server. */
export interface HttpEndpoint {
  server: Server;
  port: number;
  close(): Promise<void>;
}

async function listen(
  server: Server,
  address: string,
  port: number,
  what: string,
): Promise<HttpEndpoint> {
  await new Promise<void>((resolve, reject) => {
    server.once(
      "error",
      (error) =>
        reject(new Error(`cannot listen on ${address}:${port} for ${what}: ${error.message}`)),
    );
    server.listen(port, address, () => resolve());
  });
  const bound = server.address();
  return {
    server,
    port: typeof bound === "object" && bound ? bound.port : port,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections?.();
        server.close(() => resolve());
      }),
  };
}

/**
 * Serves `/healthz`, answering 200 while `isReady()` holds and 503 otherwise (Dapr's chart
 * uses it for both probes), and `/livez`, 200 whenever the process answers at all: a liveness
 * probe on it does not restart a sentry that is merely unable to sign (an expired issuer),
 * which a restart would not fix.
 */
export function startHealthServer(
  address: string,
  port: number,
  isReady: () => boolean,
): Promise<HttpEndpoint> {
  const server = createServer((request, response) => {
    const path = request.url?.split("?")[0];
    if (path === "/livez") {
      response.writeHead(200, { "content-type": "text/plain" }).end("ok\n");
      return;
    }
    if (path !== "/healthz") {
      response.writeHead(404).end("not found\n");
      return;
    }
    const ready = isReady();
    response.writeHead(ready ? 200 : 503, { "content-type": "text/plain" });
    response.end(ready ? "ok\n" : "not ready\n");
  });
  return listen(server, address, port, "health");
}

/**
 * Serves `registry` on every path, as Dapr's sentry does: its Helm chart tells Prometheus to
 * scrape `/`, and `/metrics` is what everyone else expects.
 */
export function startMetricsServer(
  address: string,
  port: number,
  registry: Registry,
): Promise<HttpEndpoint> {
  const server = createServer((_request, response) => {
    registry.metrics().then(
      (text) => response.writeHead(200, { "content-type": registry.contentType }).end(text),
      (error) => response.writeHead(500).end(`${(error as Error).message}\n`),
    );
  });
  return listen(server, address, port, "metrics");
}
