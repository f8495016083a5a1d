/**
 * Load generator for the end-to-end benchmark, run as its own process (bundled for Node by
 * bench/run.ts) so that the server under test never shares an event loop with its load.
 *
 * It drives either sentry (`dapr.proto.sentry.v1.CA/SignCertificate` over TLS, grpc-js) or
 * CFSSL (`POST /api/v1/cfssl/sign`, keep-alive HTTP) with the same shape: `callers` loops that
 * each send the same CSR back to back over `connections` long-lived connections, a warm-up that
 * is not counted, then `seconds` of measurement (or until `count` certificates). Prints one JSON
 * line ({@link LoadResult}); asserts nothing. In burst mode every caller starts at once, wants one
 * certificate and retries with backoff when told the server is busy ({@link BurstResult}).
 *
 * Usage: node load.cjs '<LoadPlan as JSON>'
 *
 * @module
 */
import { Buffer } from "node:buffer";
import http from "node:http";
import http2 from "node:http2";
import https from "node:https";
import process from "node:process";
import * as grpc from "@grpc/grpc-js";
import { CA_SERVICE, sentryPackageDefinition } from "../src/proto/sentry-proto.ts";

/** What to load and how hard. */
export interface LoadPlan {
  target: "sentry" | "cfssl";
  port: number;
  /** PEM of the CSR every call sends. */
  csrPem: string;
  /** PEM of the anchors to trust: sentry's, or CFSSL's TLS certificate to use HTTPS. */
  anchorsPem?: string;
  /**
   * Verify sentry as daprd does: this SPIFFE ID as the only URI SAN of its certificate, no host
   * name check (Dapr's own sentry has no DNS name). Without it, sentry must be valid for
   * `localhost`.
   */
  spiffeId?: string;
  callers: number;
  /** Audiences of the JWT-SVIDs each call asks for (sentry issues them with `--jwt-enabled`). */
  jwtAudiences?: string[];
  /** Long-lived connections the callers share round-robin (default min(callers, 32); 100 in bursts). */
  connections?: number;
  /** Measured seconds (ignored when `count` is set). */
  seconds: number;
  /** Stop after this many successful certificates instead of after `seconds`. */
  count?: number;
  /** Seconds of unmeasured load first (default 1). */
  warmupSeconds?: number;
  /**
   * Burst mode: every caller starts at once and wants one certificate; a call refused as busy
   * (RESOURCE_EXHAUSTED, UNAVAILABLE) is retried with exponential backoff and jitter, as
   * sidecars do. Ignores `seconds`, `count` and `warmupSeconds`.
   */
  burst?: boolean;
}

/** What a burst measured. */
export interface BurstResult {
  callers: number;
  connections: number;
  /** Callers that got their certificate. */
  served: number;
  /** Calls refused as busy and retried. */
  retries: number;
  /** Calls that failed for another reason (not retried), by reason. */
  errors: Record<string, number>;
  /** From the start of the burst to the last certificate. */
  seconds: number;
  /** Time from the start of the burst to each caller's certificate. */
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
}

/** What one run measured. */
export interface LoadResult {
  callers: number;
  connections: number;
  certificates: number;
  seconds: number;
  certificatesPerSecond: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  /** Failed calls by reason (gRPC status name or HTTP status / error code). */
  errors: Record<string, number>;
}

type Call = () => Promise<void>;

/**
 * One function per connection that performs a single SignCertificate call on it. The client is
 * a minimal gRPC-over-HTTP/2 caller (node:http2, the request serialized once, status read from
 * the trailers), as light as the HTTP/1.1 caller used for CFSSL, so that the load generator
 * costs both servers alike and leaves them the CPU.
 */
function sentryCalls(plan: LoadPlan, connections: number): { calls: Call[]; close(): void } {
  const method = sentryPackageDefinition()[CA_SERVICE] as unknown as {
    SignCertificate: grpc.MethodDefinition<unknown, unknown>;
  };
  const message = method.SignCertificate.requestSerialize({
    id: "bench",
    namespace: "default",
    certificateSigningRequest: Buffer.from(plan.csrPem),
    jwtAudiences: plan.jwtAudiences ?? [],
  });
  const frame = Buffer.alloc(5 + message.length);
  frame.writeUInt32BE(message.length, 1);
  message.copy(frame, 5);
  const headers = {
    ":method": "POST",
    ":path": method.SignCertificate.path,
    "content-type": "application/grpc",
    te: "trailers",
  };
  const sessions = Array.from(
    { length: connections },
    () =>
      http2.connect(`https://localhost:${plan.port}`, {
        ca: plan.anchorsPem,
        servername: "localhost",
        checkServerIdentity: plan.spiffeId === undefined ? undefined : (_host, cert) => {
          const uris = (cert.subjectaltname ?? "").split(", ").filter((san) =>
            san.startsWith("URI:")
          );
          return uris.length === 1 && uris[0] === `URI:${plan.spiffeId}`
            ? undefined
            : new Error(`sentry presented ${cert.subjectaltname}, not ${plan.spiffeId}`);
        },
      }).on("error", () => {/* reported per call */}),
  );
  const calls = sessions.map((session) => () =>
    new Promise<void>((resolve, reject) => {
      const stream = session.request(headers);
      let status: string | undefined;
      let message = "";
      let bytes = 0;
      const read = (fields: http2.IncomingHttpHeaders) => {
        if (fields["grpc-status"] !== undefined) {
          status = String(fields["grpc-status"]);
          message = decodeURIComponent(String(fields["grpc-message"] ?? ""));
        }
      };
      stream.on("response", read);
      stream.on("trailers", read);
      stream.on("data", (chunk: Buffer) => (bytes += chunk.length));
      stream.on("error", reject);
      stream.on("close", () => {
        if (status === "0" && bytes > 5) resolve();
        else {
          const code = grpc.status[Number(status)] ?? `HTTP/2 stream closed (${stream.rstCode})`;
          reject(Object.assign(new Error(message), { code }));
        }
      });
      stream.end(frame);
    })
  );
  return { calls, close: () => sessions.forEach((session) => session.close()) };
}

/** The same for CFSSL's JSON API over keep-alive HTTP/1.1. */
function cfsslCalls(plan: LoadPlan, connections: number): { calls: Call[]; close(): void } {
  // With anchors, CFSSL is reached over HTTPS (cfssl serve -tls-cert/-tls-key), like sentry.
  const secure = plan.anchorsPem !== undefined;
  const agent = secure
    ? new https.Agent({
      keepAlive: true,
      maxSockets: connections,
      ca: plan.anchorsPem,
      servername: "localhost",
    })
    : new http.Agent({ keepAlive: true, maxSockets: connections });
  const request = secure ? https.request : http.request;
  const body = JSON.stringify({ certificate_request: plan.csrPem });
  const call: Call = () =>
    new Promise<void>((resolve, reject) => {
      const req = request({
        host: "127.0.0.1",
        port: plan.port,
        path: "/api/v1/cfssl/sign",
        method: "POST",
        agent,
        headers: { "content-type": "application/json", "content-length": Buffer.byteLength(body) },
      }, (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (chunk: Buffer) => chunks.push(chunk));
        res.on("end", () => {
          const text = Buffer.concat(chunks).toString();
          if (res.statusCode === 200 && text.includes('"success":true')) resolve();
          else reject(Object.assign(new Error(text), { code: `HTTP ${res.statusCode}` }));
        });
      });
      req.on("error", reject);
      req.end(body);
    });
  return { calls: Array.from({ length: connections }, () => call), close: () => agent.destroy() };
}

/**
 * Opens `plan.connections` connections to the target (default: one per caller, at most
 * `maxDefault`) and returns one call function per connection.
 */
function connect(plan: LoadPlan, maxDefault: number) {
  const connections = Math.max(1, plan.connections ?? Math.min(plan.callers, maxDefault));
  const { calls, close } = plan.target === "sentry"
    ? sentryCalls(plan, connections)
    : cfsslCalls(plan, connections);
  return { connections, calls, close };
}

function reasonOf(error: unknown): string {
  const code = (error as { code?: unknown }).code;
  if (typeof code === "number") return grpc.status[code] ?? String(code);
  return typeof code === "string" ? code : (error as Error).message.slice(0, 80);
}

function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

function round(value: number, digits = 2): number {
  return Number(value.toFixed(digits));
}

/** Runs `plan` and resolves with what it measured. */
async function runLoad(plan: LoadPlan): Promise<LoadResult> {
  const { connections, calls, close } = connect(plan, 32);
  const latencies: number[] = [];
  const errors: Record<string, number> = {};
  let measuring = false;
  let stop = false;
  let measuredStart = 0;

  const caller = async (index: number) => {
    const call = calls[index % calls.length];
    while (!stop) {
      const started = performance.now();
      try {
        await call();
        if (measuring) {
          latencies.push(performance.now() - started);
          if (plan.count !== undefined && latencies.length >= plan.count) stop = true;
        }
      } catch (error) {
        if (measuring) {
          const reason = reasonOf(error);
          errors[reason] = (errors[reason] ?? 0) + 1;
        }
        // A refused call (busy, connection reset) must not turn into a hot loop.
        await new Promise((resolve) => setTimeout(resolve, 1));
      }
    }
  };
  const callers = Array.from({ length: plan.callers }, (_, index) => caller(index));
  await new Promise((resolve) => setTimeout(resolve, (plan.warmupSeconds ?? 1) * 1000));
  measuring = true;
  measuredStart = performance.now();
  if (plan.count === undefined) {
    setTimeout(() => (stop = true), plan.seconds * 1000);
  }
  await Promise.all(callers);
  const elapsed = (performance.now() - measuredStart) / 1000;
  close();
  const sorted = Float64Array.from(latencies).sort();
  return {
    callers: plan.callers,
    connections,
    certificates: latencies.length,
    seconds: round(elapsed),
    certificatesPerSecond: Math.round(latencies.length / elapsed),
    p50Ms: round(percentile(sorted, 50)),
    p99Ms: round(percentile(sorted, 99)),
    maxMs: round(sorted.length ? sorted[sorted.length - 1] : NaN),
    errors,
  };
}

const RETRIED = new Set(["RESOURCE_EXHAUSTED", "UNAVAILABLE"]);

/** Runs a burst (see {@link LoadPlan.burst}). */
async function runBurst(plan: LoadPlan): Promise<BurstResult> {
  const { connections, calls, close } = connect(plan, 100);
  // Connect every connection before the burst so that it measures signing, not handshakes.
  await Promise.all(calls.map((call) => call().catch(() => undefined)));
  const times: number[] = [];
  const errors: Record<string, number> = {};
  let retries = 0;
  const start = performance.now();
  await Promise.all(Array.from({ length: plan.callers }, async (_, index) => {
    const call = calls[index % calls.length];
    for (let attempt = 0;; attempt++) {
      try {
        await call();
        times.push(performance.now() - start);
        return;
      } catch (error) {
        const reason = reasonOf(error);
        if (!RETRIED.has(reason)) {
          errors[reason] = (errors[reason] ?? 0) + 1;
          return;
        }
        retries++;
        const backoff = Math.min(2000, 50 * 2 ** attempt);
        await new Promise((resolve) => setTimeout(resolve, backoff / 2 + Math.random() * backoff));
      }
    }
  }));
  close();
  const sorted = Float64Array.from(times).sort();
  return {
    callers: plan.callers,
    connections,
    served: times.length,
    retries,
    errors,
    seconds: round((sorted.length ? sorted[sorted.length - 1] : 0) / 1000),
    p50Ms: round(percentile(sorted, 50)),
    p99Ms: round(percentile(sorted, 99)),
    maxMs: round(sorted.length ? sorted[sorted.length - 1] : NaN),
  };
}

// Imported only for its types by bench/run.ts; run as a program otherwise.
const plan = JSON.parse(process.argv[2]) as LoadPlan;
(plan.burst ? runBurst(plan) : runLoad(plan)).then((result) => {
  console.log(JSON.stringify(result));
  process.exit(0);
});
