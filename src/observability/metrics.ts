/**
 * Sentry's Prometheus metrics with Dapr's names (docs/compatibility.md#metrics), on a private registry so
 * that several servers in one process (tests) do not share counters.
 *
 * @module
 */
import { collectDefaultMetrics, Counter, Gauge, Registry } from "prom-client";

/** Why a signing request failed, as the `reason` label. */
export type FailureReason =
  | "invalid_validator"
  | "token_validation_failed"
  | "invalid_csr"
  | "invalid_request"
  | "cert_sign_failed"
  | "busy"
  | "rate_limited";

/**
 * Why a connection to the gRPC port was closed by sentry, as the `reason` label:
 * `max_connections` (closed on accept, `--max-connections` were open) or `handshake_timeout`
 * (no TLS handshake and HTTP/2 preface within `--handshake-timeout`).
 */
export type ConnectionRefusal = "max_connections" | "handshake_timeout";

/** The root rotation counter's name (Dapr PR 9797). */
const ROTATION_METRIC = "dapr_sentry_rootcert_rotation_total";

/**
 * A root rotation phase change, as the `phase` label of `dapr_sentry_rootcert_rotation_total`
 * (Dapr's development branch): `distributing` (a rotation started), `signing` (signing
 * switched to the new issuer), `complete` (the old root left the trust anchors).
 */
export type RotationMetricPhase = "distributing" | "signing" | "complete";

const CONNECTION_REFUSALS: readonly ConnectionRefusal[] = ["max_connections", "handshake_timeout"];

/** The metric set of one sentry server. */
export class SentryMetrics {
  /** The registry to expose on /metrics. */
  readonly registry = new Registry();

  /**
   * A metric set. With `processMetrics`, the registry also carries prom-client's default
   * collectors (`process_*` CPU, memory, file descriptors and start time, `nodejs_*` heap, GC
   * and event-loop lag), as Dapr's binaries expose `process_*` and `go_*`; one per process.
   */
  constructor(options: { processMetrics?: boolean } = {}) {
    if (options.processMetrics) collectDefaultMetrics({ register: this.registry });
    // Every reason from the start at 0, so that rate() and alerts see the series before the
    // first refusal.
    for (const reason of CONNECTION_REFUSALS) this.connectionsRefused.inc({ reason }, 0);
  }

  /** Reports the open gRPC connections, read when /metrics is scraped. */
  #openConnections?: () => number;
  readonly requestsReceived = this.#counter(
    "dapr_sentry_cert_sign_request_received_total",
    "The number of CSRs received.",
  );
  readonly signSuccess = this.#counter(
    "dapr_sentry_cert_sign_success_total",
    "The number of certificates issued successfully.",
  );
  readonly signFailure = this.#counter(
    "dapr_sentry_cert_sign_failure_total",
    "The number of errors occurred when signing the CSR.",
    ["reason"],
  );
  readonly signedOnWorkers = this.#counter(
    "dapr_sentry_cert_sign_worker_total",
    "The number of certificates verified and signed on a signing worker thread.",
  );
  readonly serverCertIssueFailed = this.#counter(
    "dapr_sentry_servercert_issue_failed_total",
    "The number of server TLS certificate issuance failures.",
  );
  readonly issuerCertChanged = this.#counter(
    "dapr_sentry_issuercert_changed_total",
    "The number of issuer cert updates, when issuer cert or key is changed.",
  );
  /**
   * Registered at the first phase change: until then `/metrics` does not name it at all (as
   * Dapr's, whose tests check that a sentry that never rotated shows no such metric).
   */
  readonly rootCertRotation = new Counter({
    name: ROTATION_METRIC,
    help: "The number of root certificate rotation phase changes written by this sentry, by " +
      "phase (distributing, signing, complete).",
    labelNames: ["phase"],
    registers: [],
  });
  readonly configReloads = this.#counter(
    "dapr_sentry_config_reload_total",
    "The number of mTLS configuration changes applied without a restart.",
  );
  readonly configReloadFailures = this.#counter(
    "dapr_sentry_config_reload_failed_total",
    "The number of mTLS configuration changes rejected (the previous settings stayed in force).",
  );
  readonly issuerCertExpiry = new Gauge({
    name: "dapr_sentry_issuercert_expiry_timestamp",
    help: "The unix timestamp, in seconds, when issuer/root cert will expire.",
    registers: [this.registry],
  });
  readonly rootCertExpiry = new Gauge({
    name: "dapr_sentry_rootcert_expiry_timestamp",
    help: "The unix timestamp, in seconds, when the earliest trust anchor will expire.",
    registers: [this.registry],
  });

  readonly connectionsRefused = this.#counter(
    "dapr_sentry_grpc_connections_refused_total",
    "The number of connections to the gRPC port closed by sentry: over --max-connections " +
      "(max_connections) or without TLS handshake and HTTP/2 preface in time (handshake_timeout).",
    ["reason"],
  );
  readonly connectionsOpen = new Gauge({
    name: "dapr_sentry_grpc_connections_open",
    help: "The number of connections open on the gRPC port.",
    registers: [this.registry],
    collect: () => {
      if (this.#openConnections) this.connectionsOpen.set(this.#openConnections());
    },
  });

  #counter(name: string, help: string, labelNames: string[] = []): Counter {
    return new Counter({ name, help, labelNames, registers: [this.registry] });
  }

  /** Records a root rotation phase change written by this sentry. */
  rotationPhase(phase: string): void {
    if (!this.registry.getSingleMetric(ROTATION_METRIC)) {
      this.registry.registerMetric(this.rootCertRotation);
    }
    this.rootCertRotation.inc({ phase });
  }

  /** Records a failed request. */
  failure(reason: FailureReason): void {
    this.signFailure.inc({ reason });
  }

  /** Records a connection to the gRPC port that sentry closed. */
  connectionRefused(reason: ConnectionRefusal): void {
    this.connectionsRefused.inc({ reason });
  }

  /** Makes `dapr_sentry_grpc_connections_open` report `count()` at each scrape. */
  observeOpenConnections(count: () => number): void {
    this.#openConnections = count;
  }

  /** Records the expiry of the bundle in use. */
  setBundleExpiry(issuerNotAfter: Date, rootNotAfter: Date): void {
    this.issuerCertExpiry.set(Math.floor(issuerNotAfter.getTime() / 1000));
    this.rootCertExpiry.set(Math.floor(rootNotAfter.getTime() / 1000));
  }
}
