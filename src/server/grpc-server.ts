/**
 * The gRPC server: TLS (>= 1.2, ALPN h2) with sentry's serving identity, the CA service on
 * unary-grpc.ts, a 64 KiB request limit, and in-place rotation of the serving certificate
 * (renewed at half its life and whenever the bundle changes) without closing the port. With
 * `--serving-threads`, serving threads share the port and relay their calls here
 * (serving-threads.ts), so that every call goes through the same checks, limits and metrics.
 *
 * @module
 */
import type { Buffer } from "node:buffer";
import * as grpc from "@grpc/grpc-js";
import type { SignRequest } from "../identity/validator.ts";
import type { Logger } from "../observability/logger.ts";
import type { SentryMetrics } from "../observability/metrics.ts";
import type { CaState } from "./ca-state.ts";
import { type CaServiceDeps, type JwtIssuing, signCertificate, SignFailure } from "./ca-service.ts";
import { OffloadPolicy } from "./offload-policy.ts";
import type { IdentityRateLimiter } from "./identity-rate-limit.ts";
import type { SigningPool } from "./signing-pool.ts";
import { CA_SERVICE, sentryPackageDefinition } from "../proto/sentry-proto.ts";
import { issueServingIdentity, renewalDelayMs, type ServingIdentity } from "./serving-identity.ts";
import { IssuerRouter } from "./workload-issuer.ts";
import {
  GrpcError,
  type ServingTls,
  UnaryGrpcServer,
  type UnaryGrpcServerOptions,
} from "./unary-grpc.ts";
import { ServingThreads } from "./serving-threads.ts";
import type { WorkerScript } from "./worker-script.ts";
import { safeDelayMs, setSafeTimeout } from "../util/timers.ts";
import {
  ConnectionGuard,
  DEFAULT_IDLE_TIMEOUT_MS,
  DEFAULT_PREFACE_TIMEOUT_MS,
  defaultMaxConnections,
} from "./connection-guard.ts";

/** Largest accepted request message: far above any CSR, far below a memory risk. */
export const MAX_REQUEST_BYTES = 64 * 1024;

/**
 * Most concurrent calls on one HTTP/2 connection. A sidecar makes one call at a time; the
 * bound keeps a burst on a few busy connections from holding thousands of decoded requests
 * in memory at once (clients queue the rest on their side).
 */
export const MAX_STREAMS_PER_CONNECTION = 32;

/** How long answers written just before a shutdown get to reach their sockets. */
const FLUSH_MS = 100;

/**
 * Limits on the gRPC port's connections (`--max-connections`, `--handshake-timeout`,
 * `--connection-idle-timeout`); see connection-guard.ts.
 */
export interface ConnectionLimits {
  /**
   * Most connections open at once on the gRPC port; beyond it a new one is closed at once.
   * Default: {@link defaultMaxConnections} (4096, or the descriptor limit less a reserve).
   */
  maxConnections?: number;
  /**
   * How long a new connection has to finish TLS and send the HTTP/2 preface (default
   * {@link DEFAULT_PREFACE_TIMEOUT_MS}).
   */
  prefaceTimeoutMs?: number;
  /**
   * How long a connection with no call in progress stays open before GOAWAY (default
   * {@link DEFAULT_IDLE_TIMEOUT_MS}; 0: no limit).
   */
  idleTimeoutMs?: number;
}

/** Options of the gRPC server. */
export interface GrpcServerOptions extends ConnectionLimits {
  listenAddress: string;
  port: number;
  trustDomain: string;
  namespace: string;
  /**
   * The cluster domain of the scheduler's DNS names (see control-plane.ts); Dapr's fallback,
   * the trust domain, when not given.
   */
  clusterDomain?: string;
  state: CaState;
  metrics: SentryMetrics;
  logger: Logger;
  now: () => Date;
  /**
   * Most requests handled at once; beyond it, callers get RESOURCE_EXHAUSTED and retry.
   * Bounds memory and the load put on token validators' backends during a burst.
   */
  maxConcurrentRequests: number;
  /** Worker threads for requests that arrive in batches (see ca-service.ts). */
  signingPool?: SigningPool;
  /** The per-identity limit, when set. */
  rateLimiter?: IdentityRateLimiter;
  /** JWT-SVID issuing, when on (see ca-service.ts). */
  jwt?: JwtIssuing;
  /**
   * Threads that serve the port beside the main thread (serving-threads.ts), when asked for
   * and when this runtime can start them.
   */
  servingThreads?: { count: number; script: WorkerScript };
}

/** Least time between two warnings about refused connections. */
const REFUSAL_WARNING_INTERVAL_MS = 60_000;

interface WireRequest {
  id: string;
  token: string;
  trustDomain: string;
  namespace: string;
  certificateSigningRequest: Buffer;
  tokenValidator: number;
  jwtAudiences: string[];
}

function toSignRequest(wire: WireRequest): SignRequest {
  return {
    id: wire.id,
    token: wire.token,
    trustDomain: wire.trustDomain,
    namespace: wire.namespace,
    csr: wire.certificateSigningRequest,
    tokenValidator: wire.tokenValidator,
    jwtAudiences: wire.jwtAudiences,
  };
}

/** A running gRPC CA server. */
export class SentryGrpcServer {
  #server?: UnaryGrpcServer;
  #threads?: ServingThreads;
  readonly #options: GrpcServerOptions;
  readonly #method: grpc.MethodDefinition<WireRequest, unknown>;
  readonly #deps: CaServiceDeps;
  #renewTimer?: ReturnType<typeof setTimeout>;
  #unsubscribe?: () => void;
  #inFlight = 0;
  readonly #guard: ConnectionGuard;
  /** The cap on open connections over the whole port (`--max-connections`). */
  readonly #maxConnections: number;
  /** How long a new connection has for its TLS handshake and HTTP/2 preface. */
  readonly #prefaceTimeoutMs: number;
  #refusedSinceWarning = 0;
  #lastRefusalWarning = -Infinity;
  /** Called once when no call is in progress any more (set while shutting down). */
  #onIdle?: () => void;
  /** The port actually bound. */
  port = 0;

  /** Prepares the server; {@link start} binds it. */
  constructor(options: GrpcServerOptions) {
    this.#options = options;
    this.#maxConnections = options.maxConnections ?? defaultMaxConnections();
    this.#prefaceTimeoutMs = options.prefaceTimeoutMs ?? DEFAULT_PREFACE_TIMEOUT_MS;
    this.#guard = new ConnectionGuard({
      maxConnections: this.#connectionsPerListener(),
      prefaceTimeoutMs: this.#prefaceTimeoutMs,
      onRefused: () => this.#connectionRefused(),
      onPrefaceTimeout: () => {
        options.metrics.connectionRefused("handshake_timeout");
        options.logger.debug("closed a connection that sent no HTTP/2 preface in time");
      },
    });
    options.metrics.observeOpenConnections(() => this.openConnections);
    const definition = sentryPackageDefinition()[CA_SERVICE] as grpc.ServiceDefinition;
    this.#method = definition.SignCertificate as grpc.MethodDefinition<WireRequest, unknown>;
    const offload = new OffloadPolicy();
    this.#deps = {
      ...options,
      clusterDomain: options.clusterDomain ?? options.trustDomain,
      issuer: new IssuerRouter({
        offload: () => offload.onArrival(this.#inFlight),
        pool: options.signingPool,
        onWorkerIssue: () => options.metrics.signedOnWorkers.inc(),
      }),
    };
  }

  /**
   * Each listener's share of the connection cap: the main thread and every serving thread
   * count their own connections.
   */
  #connectionsPerListener(): number {
    const listeners = 1 + (this.#options.servingThreads?.count ?? 0);
    return Math.max(1, Math.floor(this.#maxConnections / listeners));
  }

  /** What the port presents in TLS handshakes: the serving identity and the current anchors. */
  #servingTls(identity: ServingIdentity): ServingTls {
    return { ...identity, anchorsPem: this.#options.state.bundle.anchorsPem };
  }

  /** The limits every listener of the port (main thread and serving threads) applies. */
  #callLimits(): Pick<
    UnaryGrpcServerOptions,
    "maxMessageBytes" | "maxConcurrentStreams" | "idleTimeoutMs"
  > {
    return {
      maxMessageBytes: MAX_REQUEST_BYTES,
      maxConcurrentStreams: MAX_STREAMS_PER_CONNECTION,
      idleTimeoutMs: safeDelayMs(this.#options.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS),
    };
  }

  /** One SignCertificate call: the request message in, the answer message out. */
  async #signCertificate(message: Buffer): Promise<Buffer> {
    const { metrics, logger, maxConcurrentRequests } = this.#options;
    let request: WireRequest;
    try {
      request = this.#method.requestDeserialize(message);
    } catch (error) {
      throw new GrpcError(
        grpc.status.INTERNAL,
        `cannot decode the SignCertificateRequest: ${(error as Error).message}`,
      );
    }
    metrics.requestsReceived.inc();
    if (this.#inFlight >= maxConcurrentRequests) {
      metrics.failure("busy");
      throw new GrpcError(
        grpc.status.RESOURCE_EXHAUSTED,
        `sentry is busy (${this.#inFlight} requests in progress): retry with backoff`,
      );
    }
    this.#inFlight++;
    try {
      const response = await signCertificate(toSignRequest(request), this.#deps);
      metrics.signSuccess.inc();
      return this.#method.responseSerialize(response);
    } catch (error) {
      if (error instanceof SignFailure) {
        metrics.failure(error.reason);
        logger.debug(`request refused: ${error.message}`, { app_id: request.id });
        throw new GrpcError(error.code, error.message);
      }
      metrics.failure("cert_sign_failed");
      logger.error(`unexpected error while signing: ${(error as Error).stack}`);
      throw new GrpcError(grpc.status.INTERNAL, "internal error while signing");
    } finally {
      this.#callEnded();
    }
  }

  /** Open connections on the gRPC port (serving threads included). */
  get openConnections(): number {
    return this.#guard.open + (this.#threads?.open ?? 0);
  }

  #connectionRefused(): void {
    this.#options.metrics.connectionRefused("max_connections");
    this.#refusedSinceWarning++;
    const now = Date.now();
    if (now - this.#lastRefusalWarning < REFUSAL_WARNING_INTERVAL_MS) return;
    this.#options.logger.warn(
      `refused ${this.#refusedSinceWarning} connection(s): ${this.#maxConnections} already open ` +
        "(raise --max-connections and the open-files limit together)",
    );
    this.#refusedSinceWarning = 0;
    this.#lastRefusalWarning = now;
  }

  #issueIdentity(): ServingIdentity {
    const { state, trustDomain, namespace, now } = this.#options;
    return issueServingIdentity(
      state.bundle,
      trustDomain,
      namespace,
      state.settings.workloadCertTtlMs,
      state.settings.allowedClockSkewMs,
      now(),
    );
  }

  /** Re-issues the serving certificate and swaps it into the running TLS server. */
  rotateServingCertificate(): void {
    clearTimeout(this.#renewTimer);
    let identity: ServingIdentity;
    try {
      identity = this.#issueIdentity();
    } catch (error) {
      this.#options.metrics.serverCertIssueFailed.inc();
      this.#options.logger.error(
        `failed to issue the serving certificate: ${(error as Error).message}`,
      );
      this.#renewTimer = setTimeout(() => this.rotateServingCertificate(), 30_000);
      this.#renewTimer.unref?.();
      return;
    }
    const tls = this.#servingTls(identity);
    this.#server?.setTls(tls);
    this.#threads?.setTls(tls);
    this.#scheduleRenewal(identity);
    this.#options.logger.info("serving certificate rotated", {
      expiry: identity.notAfter.toISOString(),
    });
  }

  #scheduleRenewal(identity: ServingIdentity): void {
    this.#renewTimer = setSafeTimeout(
      () => this.rotateServingCertificate(),
      renewalDelayMs(identity, this.#options.now()),
    );
  }

  /** Issues the serving certificate and binds the port. */
  async start(): Promise<void> {
    const identity = this.#issueIdentity();
    const server = new UnaryGrpcServer({
      handlers: new Map([[this.#method.path, (message) => this.#signCertificate(message)]]),
      tls: this.#servingTls(identity),
      ...this.#callLimits(),
    });
    this.#guard.attach(server.http2);
    const host = this.#options.listenAddress;
    // An IPv6 literal (`::`, `::1`) goes in brackets before the port.
    const address = `${host.includes(":") ? `[${host}]` : host}:${this.#options.port}`;
    const threads = this.#options.servingThreads;
    try {
      this.port = await server.listen(host, this.#options.port, threads !== undefined);
    } catch (error) {
      throw new Error(`cannot listen on ${address}: ${(error as Error).message}`);
    }
    this.#server = server;
    if (threads) await this.#startThreads(threads, identity);
    this.#scheduleRenewal(identity);
    this.#unsubscribe = this.#options.state.onBundle(() => this.rotateServingCertificate());
  }

  async #startThreads(
    threads: { count: number; script: WorkerScript },
    identity: ServingIdentity,
  ): Promise<void> {
    const options = this.#options;
    this.#threads = new ServingThreads({
      ...threads,
      setup: {
        host: options.listenAddress,
        tls: this.#servingTls(identity),
        paths: [this.#method.path],
        ...this.#callLimits(),
        maxConnections: this.#connectionsPerListener(),
        prefaceTimeoutMs: this.#prefaceTimeoutMs,
      },
      handle: (_path, message) => this.#signCertificate(message),
      onRefused: (reason) => {
        if (reason === "max_connections") this.#connectionRefused();
        else options.metrics.connectionRefused("handshake_timeout");
      },
      logger: options.logger,
    });
    try {
      await this.#threads.start(this.port);
    } catch (error) {
      this.forceShutdown();
      throw new Error(`cannot start the serving threads: ${(error as Error).message}`);
    }
    options.logger.info(
      `serving the gRPC port on the main thread and ${threads.count} serving thread(s)`,
    );
  }

  /**
   * Stops taking new calls and waits up to `graceMs` for in-flight ones to finish, then closes
   * what is left. Resolves to true when everything finished in time.
   *
   * Node's HTTP/2 server sends GOAWAY to an idle connection but then waits for the client to
   * hang up (Go's gRPC clients wait ~10 s), so once the last call in progress has answered,
   * and its answer has had {@link FLUSH_MS} to reach the socket, the remaining (idle)
   * connections are closed, as Go's GracefulStop does.
   */
  shutdown(graceMs: number): Promise<boolean> {
    clearTimeout(this.#renewTimer);
    this.#unsubscribe?.();
    return new Promise((resolve) => {
      let flush: ReturnType<typeof setTimeout> | undefined;
      let finished = false;
      const finish = (graceful: boolean) => {
        if (finished) return;
        finished = true;
        clearTimeout(deadline);
        clearTimeout(flush);
        this.#onIdle = undefined;
        this.forceShutdown();
        resolve(graceful);
      };
      const deadline = setTimeout(() => finish(false), graceMs);
      const server = this.#server;
      const closed = [
        server ? new Promise<void>((done) => server.tryShutdown(done)) : Promise.resolve(),
        this.#threads?.shutdown() ?? Promise.resolve(),
      ];
      Promise.all(closed).then(() => finish(true));
      this.#onIdle = () => {
        flush = setTimeout(() => finish(true), FLUSH_MS);
      };
      if (this.#inFlight === 0) this.#onIdle();
    });
  }

  #callEnded(): void {
    this.#inFlight--;
    if (this.#inFlight === 0) this.#onIdle?.();
  }

  /** Closes every connection at once. */
  forceShutdown(): void {
    clearTimeout(this.#renewTimer);
    this.#server?.forceShutdown();
    this.#threads?.forceShutdown();
  }
}
