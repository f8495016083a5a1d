/**
 * Runs the real Dapr sidecar (`daprd`, built by tests/dapr/build.sh) against a sentry under
 * test, for end-to-end tests: free loopback ports for every listener, mTLS on, trust anchors in
 * `DAPR_TRUST_ANCHORS` (daprd v1.18.3 has no flag for them), a Configuration file that names the
 * `kubernetes` name resolver with a fixed template (mDNS needs a multicast interface, which the
 * loopback-only network namespace of `deno task test:binary` lacks), health polling, the
 * certificate chain daprd presents to its peers, a tiny HTTP app, and a TCP relay that can drop
 * its connections so that every call through it makes a new mTLS handshake.
 *
 * @module
 */
import { createConnection, createServer, type Server, type Socket } from "node:net";
import { join } from "node:path";
import { daprBinaries } from "./dapr_binaries.ts";
import { freePort } from "./sentry_process.ts";
import { terminate } from "./processes.ts";

/** The SPIFFE trust domain daprd asks for when nothing configures one (Dapr's default). */
export const WORKLOAD_TRUST_DOMAIN = "public";

/** Options for {@link startDaprd}. */
export interface DaprdOptions {
  /** `--app-id`. */
  appId: string;
  /** Sentry's gRPC port on 127.0.0.1 (`--sentry-address`). */
  sentryPort: number;
  /** PEM trust anchors (`DAPR_TRUST_ANCHORS`). */
  trustAnchors: string;
  /** `--control-plane-trust-domain`: sentry's `--trust-domain`. */
  controlPlaneTrustDomain: string;
  /** `NAMESPACE` of the sidecar and `--control-plane-namespace` (default `default`). */
  namespace?: string;
  /** `--app-port` of the app daprd forwards invocations to (none by default). */
  appPort?: number;
  /** `--config` file (see {@link writeDaprdConfig}). */
  config?: string;
  /** `--dapr-internal-grpc-port` (a free one by default); peers reach this daprd there. */
  internalGrpcPort?: number;
  /** Extra flags. */
  args?: string[];
}

/** A daprd process started by {@link startDaprd}. */
export interface RunningDaprd {
  appId: string;
  httpPort: number;
  grpcPort: number;
  internalGrpcPort: number;
  metricsPort: number;
  child: Deno.ChildProcess;
  /** Everything daprd wrote (stdout and stderr) so far. */
  logs(): string;
  /** The exit status once daprd has exited, else undefined. */
  exited(): Deno.CommandStatus | undefined;
  /** Waits until `GET /v1.0/healthz` answers 204; throws with daprd's logs otherwise. */
  waitHealthy(timeoutMs?: number): Promise<void>;
  /** `GET /v1.0/invoke/<appId>/method/<method>` on this daprd's HTTP API. */
  invoke(appId: string, method: string): Promise<{ status: number; body: string }>;
  /** The PEM chain daprd presents on its internal gRPC port (its workload identity). */
  presentedChain(): Promise<string>;
  /** SIGTERM (SIGKILL after `graceMs`), then the exit code; safe to call twice. */
  stop(graceMs?: number): Promise<number>;
}

/** Starts daprd on free ports; does not wait for health (see {@link RunningDaprd.waitHealthy}). */
export async function startDaprd(options: DaprdOptions): Promise<RunningDaprd> {
  const { daprd } = await daprBinaries();
  const namespace = options.namespace ?? "default";
  const httpPort = await freePort();
  const grpcPort = await freePort();
  const metricsPort = await freePort();
  const internalGrpcPort = options.internalGrpcPort ?? await freePort();
  const args = [
    "--app-id",
    options.appId,
    "--mode",
    "standalone",
    "--enable-mtls",
    "--sentry-address",
    `127.0.0.1:${options.sentryPort}`,
    "--control-plane-trust-domain",
    options.controlPlaneTrustDomain,
    "--control-plane-namespace",
    namespace,
    "--dapr-listen-addresses",
    "127.0.0.1",
    "--dapr-http-port",
    String(httpPort),
    "--dapr-grpc-port",
    String(grpcPort),
    "--dapr-internal-grpc-listen-address",
    "127.0.0.1",
    "--dapr-internal-grpc-port",
    String(internalGrpcPort),
    "--metrics-listen-address",
    "127.0.0.1",
    "--metrics-port",
    String(metricsPort),
    "--dapr-graceful-shutdown-seconds",
    "1",
    ...(options.appPort ? ["--app-port", String(options.appPort)] : []),
    ...(options.config ? ["--config", options.config] : []),
    ...(options.args ?? []),
  ];
  const child = new Deno.Command(daprd, {
    args,
    env: {
      DAPR_TRUST_ANCHORS: options.trustAnchors,
      NAMESPACE: namespace,
      // Without a non-loopback interface daprd cannot work out its host address and exits
      // ("could not determine host IP address"); this is the variable Dapr's injector sets.
      DAPR_HOST_IP: "127.0.0.1",
    },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();

  let logs = "";
  const decoder = new TextDecoder();
  const collect = async (stream: ReadableStream<Uint8Array>) => {
    for await (const chunk of stream) logs += decoder.decode(chunk, { stream: true });
  };
  const collecting = Promise.all([collect(child.stdout), collect(child.stderr)]);
  let status: Deno.CommandStatus | undefined;
  const statusPromise = child.status.then((s) => (status = s));

  const daprdRun: RunningDaprd = {
    appId: options.appId,
    httpPort,
    grpcPort,
    internalGrpcPort,
    metricsPort,
    child,
    logs: () => logs,
    exited: () => status,
    async waitHealthy(timeoutMs = 30_000) {
      const deadline = Date.now() + timeoutMs;
      while (true) {
        if (status) {
          await collecting;
          throw new Error(
            `daprd ${options.appId} exited with code ${status.code} before becoming healthy:\n${logs}`,
          );
        }
        try {
          const response = await fetch(`http://127.0.0.1:${httpPort}/v1.0/healthz`);
          await response.body?.cancel();
          if (response.status === 204) return;
        } catch {
          // not listening yet
        }
        if (Date.now() > deadline) {
          throw new Error(`daprd ${options.appId} did not become healthy in time:\n${logs}`);
        }
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    },
    async invoke(appId: string, method: string) {
      const response = await fetch(
        `http://127.0.0.1:${httpPort}/v1.0/invoke/${appId}/method/${method}`,
      );
      return { status: response.status, body: await response.text() };
    },
    async presentedChain() {
      return await presentedChain(internalGrpcPort);
    },
    async stop(graceMs = 10_000) {
      const { code } = status ? await statusPromise : await terminate(child, graceMs);
      await collecting;
      return code;
    },
  };
  return daprdRun;
}

/**
 * The certificate chain (PEM blocks, leaf first) a TLS server on 127.0.0.1:`port` presents, as
 * `openssl s_client -showcerts` sees it. daprd's internal gRPC server asks for a client
 * certificate, which s_client does not send; with TLS 1.3 the server's chain arrives first.
 */
export async function presentedChain(port: number): Promise<string> {
  const output = await new Deno.Command("openssl", {
    args: ["s_client", "-connect", `127.0.0.1:${port}`, "-alpn", "h2", "-showcerts"],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(output.stdout);
  const blocks = text.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----\n?/g);
  if (!blocks) {
    throw new Error(
      `no certificate from 127.0.0.1:${port}: ${text}${new TextDecoder().decode(output.stderr)}`,
    );
  }
  return blocks.map((b) => b.trimEnd() + "\n").join("");
}

/** The address each app id resolves to, for {@link writeDaprdConfig}. */
export type AppAddresses = Record<string, number>;

/**
 * Writes a daprd Configuration into `dir` and returns its path. Name resolution uses the
 * `kubernetes` resolver (compiled into daprd's stable flavour) with a Go template that maps
 * each app id of `addresses` to 127.0.0.1:<port>: deterministic, no DNS or multicast.
 * `allowOnly` adds an access control list that denies every caller except that app id
 * (checked by daprd against the SPIFFE ID in the caller's mTLS certificate).
 */
export async function writeDaprdConfig(
  dir: string,
  name: string,
  addresses: AppAddresses,
  allowOnly?: { appId: string; namespace?: string },
): Promise<string> {
  const branches = Object.entries(addresses)
    .map(([id, port], i) => `${i === 0 ? "{{if" : "{{else if"} eq .ID "${id}"}}127.0.0.1:${port}`)
    .join("");
  const template = branches ? `${branches}{{end}}` : "";
  const acl = allowOnly
    ? `  accessControl:
    defaultAction: deny
    trustDomain: ${WORKLOAD_TRUST_DOMAIN}
    policies:
      - appId: ${allowOnly.appId}
        defaultAction: allow
        trustDomain: ${WORKLOAD_TRUST_DOMAIN}
        namespace: ${allowOnly.namespace ?? "default"}
`
    : "";
  const yaml = `apiVersion: dapr.io/v1alpha1
kind: Configuration
metadata:
  name: ${name}
spec:
  nameResolution:
    component: kubernetes
    configuration:
      template: '${template}'
${acl}`;
  const path = join(dir, `${name}.yaml`);
  await Deno.writeTextFile(path, yaml);
  return path;
}

/** A tiny HTTP app daprd forwards invocations to. */
export interface TinyApp {
  port: number;
  /** The requests the app answered, as `METHOD /path` (daprd also asks for its config). */
  requests(): string[];
  close(): Promise<void>;
}

/**
 * Starts an HTTP app on 127.0.0.1 that answers every request with JSON naming itself, the
 * method, the path and the caller app id daprd passed on (`dapr-caller-app-id`).
 */
export function startTinyApp(name: string): TinyApp {
  const seen: string[] = [];
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    (request) => {
      const url = new URL(request.url);
      seen.push(`${request.method} ${url.pathname}`);
      return Response.json({
        app: name,
        method: request.method,
        path: url.pathname,
        caller: request.headers.get("dapr-caller-app-id"),
      });
    },
  );
  return {
    port: server.addr.port,
    requests: () => [...seen],
    close: () => server.shutdown(),
  };
}

/**
 * A TCP relay from a free port on 127.0.0.1 to `targetPort`. {@link TcpRelay.dropAll} closes
 * every open connection, so the next call through the relay must connect, and handshake, anew.
 */
export interface TcpRelay {
  port: number;
  /** Connections accepted so far. */
  connections(): number;
  /** Closes all open connections (both sides). */
  dropAll(): void;
  close(): Promise<void>;
}

/**
 * Starts a {@link TcpRelay}; `targetPort` may be a function, read at each connection, for a
 * target that starts after the relay.
 */
export async function startTcpRelay(targetPort: number | (() => number)): Promise<TcpRelay> {
  const target = typeof targetPort === "number" ? () => targetPort : targetPort;
  const open = new Set<Socket>();
  let accepted = 0;
  const server: Server = createServer((inbound) => {
    accepted++;
    const outbound = createConnection({ host: "127.0.0.1", port: target() });
    open.add(inbound);
    open.add(outbound);
    const end = () => {
      inbound.destroy();
      outbound.destroy();
      open.delete(inbound);
      open.delete(outbound);
    };
    inbound.on("error", end).on("close", end);
    outbound.on("error", end).on("close", end);
    inbound.pipe(outbound);
    outbound.pipe(inbound);
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  const address = server.address();
  const port = typeof address === "object" && address ? address.port : 0;
  return {
    port,
    connections: () => accepted,
    dropAll() {
      for (const socket of open) socket.destroy();
      open.clear();
    },
    close() {
      for (const socket of open) socket.destroy();
      open.clear();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}
