/**
 * One running sentry: wires the settings source, the credential store, the CA state, the gRPC
 * server, the health and metrics endpoints, and the reloaders that keep settings and
 * credentials current without a restart. With JWT issuing on, the JWT signing key is loaded
 * (or generated) with the trust bundle and reloaded with it; with OIDC on too, the OIDC
 * discovery server serves the key set in force. The command line
 * (src/cli/serve.ts) only turns flags into {@link SentryServerOptions}.
 *
 * @module
 */
import { createServer } from "node:net";
import process from "node:process";
import type { CaKeyAlgorithm } from "../x509/keys.ts";
import type { MtlsSettings } from "../config/configuration.ts";
import type { SettingsSource } from "../config/settings-source.ts";
import { selectValidators, type ValidatorContext } from "../identity/select.ts";
import { type ValidatorSet, WireValidator } from "../identity/validator.ts";
import type { Logger } from "../observability/logger.ts";
import { SentryMetrics } from "../observability/metrics.ts";
import type { CredentialStore } from "../stores/store.ts";
import { type JwtKeyOptions, withoutJwt } from "../ca/jwt-bundle.ts";
import type { JwtIssuing } from "./ca-service.ts";
import { CaState } from "./ca-state.ts";
import { CredentialReloader } from "./credential-reloader.ts";
import { DEFAULT_STARTUP_RETRY, loadOrCreateBundle } from "./credentials.ts";
import { ExpiryMonitor } from "./expiry-monitor.ts";
import { type ConnectionLimits, SentryGrpcServer } from "./grpc-server.ts";
import { IdentityRateLimiter } from "./identity-rate-limit.ts";
import { MAX_CRASHES_IN_A_ROW, SigningPool } from "./signing-pool.ts";
import {
  SERVING_THREAD_BUNDLE,
  SIGNING_WORKER_BUNDLE,
  type WorkerScript,
  workerScript,
} from "./worker-script.ts";
import { type HttpEndpoint, startHealthServer, startMetricsServer } from "./http-endpoints.ts";
import { type OidcServer, startOidcServer } from "./oidc-server.ts";
import {
  RootRotationDriver,
  type RotationOptions,
  type RotationStatus,
} from "./root-rotation-driver.ts";

/** An address and port to listen on. */
export interface Listen {
  address: string;
  port: number;
}

/** JWT-SVID issuing (`--jwt-enabled` and the `--jwt-*` flags). */
export interface JwtServeOptions extends JwtKeyOptions, JwtIssuing {}

/** The OIDC discovery server (`--oidc-enabled` and the `--oidc-*` flags, as Dapr's). */
export interface OidcServeOptions {
  /** `--oidc-server-listen-address` (default localhost) and `--oidc-server-listen-port` (9080). */
  listen: Listen;
  /** `--oidc-server-tls-enabled` (default true): then both files are set. */
  tlsEnabled: boolean;
  tlsCertFile?: string;
  tlsKeyFile?: string;
  /** `--oidc-jwks-uri`: the JWKS URI to advertise instead of the server's own. */
  jwksUri?: string;
  /** `--oidc-path-prefix`: prepended to the endpoints' paths. */
  pathPrefix?: string;
  /** `--oidc-allowed-hosts`: Host headers served (empty: any). */
  allowedHosts: string[];
}

/** Everything a sentry server needs. */
export interface SentryServerOptions {
  /** Ends start-up's wait for an unavailable store (a stop signal): start throws StartupAbortedError. */
  startupSignal?: AbortSignal;
  trustDomain: string;
  namespace: string;
  /** The cluster domain of the scheduler's DNS names (default: the trust domain, as Dapr). */
  clusterDomain?: string;
  store: CredentialStore;
  settingsSource: SettingsSource;
  /** Key algorithm of a generated root and issuer. */
  keyAlgorithm: CaKeyAlgorithm;
  grpc: Listen;
  /** Limits on the gRPC port's connections (defaults: see connection-guard.ts). */
  connections?: ConnectionLimits;
  health: Listen;
  /** Omitted when metrics are disabled. */
  metrics?: Listen;
  logger: Logger;
  now: () => Date;
  /** Most SignCertificate calls handled at once (more get RESOURCE_EXHAUSTED). */
  maxConcurrentRequests: number;
  /** Worker threads that sign requests arriving in batches (0: sign on the main thread). */
  signingWorkers: number;
  /** Threads that serve the gRPC port beside the main thread (0: none; serving-threads.ts). */
  servingThreads?: number;
  /** Most signing requests a minute for one identity (0: no limit). */
  identityRateLimit: number;
  /** Kubernetes mode: makes the KUBERNETES token validator (always on, the default). */
  createKubernetesValidator?: ValidatorContext["createKubernetesValidator"];
  /** Set when JWT-SVIDs are issued with every certificate. */
  jwt?: JwtServeOptions;
  /** Set when the OIDC discovery server is asked for. */
  oidc?: OidcServeOptions;
  /**
   * The `--rotation-*` flags: root rotation is driven (started only when `enabled`, finished
   * and pruned always). Omitted: no rotation driver at all.
   */
  rotation?: RotationOptions;
}

function validatorContext(options: SentryServerOptions): ValidatorContext {
  return {
    sentryTrustDomain: options.trustDomain,
    sentryNamespace: options.namespace,
    logger: options.logger,
    now: options.now,
    createKubernetesValidator: options.createKubernetesValidator,
  };
}

const YEAR_MS = 365 * 86_400_000;

/** The signing worker pool, when asked for and when this runtime can run the workers. */
function startSigningPool(workers: number, logger: Logger): SigningPool | undefined {
  if (workers <= 0) {
    logger.info("signing on the main thread (--signing-workers 0)");
    return undefined;
  }
  const script = workerScript(SIGNING_WORKER_BUNDLE);
  if (!script) {
    logger.info("signing on the main thread: this runtime cannot start signing workers");
    return undefined;
  }
  const threads = workers === 1 ? "1 worker thread" : `${workers} worker threads`;
  logger.info(`signing requests that arrive together on ${threads}`);
  return new SigningPool(workers, script, (why) =>
    logger.error(
      `signing workers failed ${MAX_CRASHES_IN_A_ROW} times in a row (last: ${why}): ` +
        "signing on the main thread from now on",
    ));
}

/** The serving threads to start, when asked for and when this runtime can start them. */
function servingThreadsPlan(
  count: number,
  logger: Logger,
): { count: number; script: WorkerScript } | undefined {
  if (count <= 0) return undefined;
  const script = workerScript(SERVING_THREAD_BUNDLE);
  if (!script || !canReusePort()) {
    logger.warn(
      "--serving-threads ignored: this runtime cannot start serving threads (they need Node.js " +
        "22.12 or later, for SO_REUSEPORT); the main thread serves the gRPC port alone",
    );
    return undefined;
  }
  return { count, script };
}

/** Whether `net.Server.listen` takes `reusePort` here (Node.js 22.12+, 23.1+). */
function canReusePort(version = process.versions.node): boolean {
  const [major, minor] = version.split(".").map(Number);
  return major > 23 || (major === 23 && minor >= 1) || (major === 22 && minor >= 12);
}

/** The validators in force, as logged: `kubernetes (default), jwks`. */
function describeValidators(set: ValidatorSet): string {
  const names = [...set.enabled.keys()].sort((a, b) => a - b).map((wire) => {
    const name = Object.entries(WireValidator).find(([, value]) => value === wire)?.[0] ??
      String(wire);
    return wire === set.defaultWire ? `${name.toLowerCase()} (default)` : name.toLowerCase();
  });
  return names.join(", ") + (set.defaultWire === WireValidator.UNKNOWN ? " (none by default)" : "");
}

function describeSettings(settings: MtlsSettings, validators: ValidatorSet): string {
  return `workloadCertTTL=${settings.workloadCertTtlMs / 1000}s, ` +
    `allowedClockSkew=${settings.allowedClockSkewMs / 1000}s, ` +
    `token validators: ${describeValidators(validators)}`;
}

/** The HTTP listeners: health always, metrics unless turned off. */
interface HttpEndpoints {
  health: HttpEndpoint;
  metrics?: HttpEndpoint;
}

async function closeEndpoints(endpoints: Partial<HttpEndpoints>): Promise<void> {
  await Promise.all([endpoints.health?.close(), endpoints.metrics?.close()]);
}

function closeValidators(set: ValidatorSet): void {
  for (const validator of set.enabled.values()) validator.close?.();
}

/**
 * Fails (as a bind would) when `port` on `address` is taken: listens once and closes. Port 0
 * (any free port) is not checked.
 */
function checkPortFree(address: string, port: number): Promise<void> {
  if (port === 0) return Promise.resolve();
  const shown = `${address.includes(":") ? `[${address}]` : address}:${port}`;
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once(
      "error",
      (error) => reject(new Error(`cannot listen on ${shown}: ${error.message}`)),
    );
    probe.listen({ host: address, port, exclusive: true }, () => probe.close(() => resolve()));
  });
}

/** A started server; {@link stop} it once. */
export class SentryServer {
  readonly metrics: SentryMetrics;
  readonly state: CaState;
  readonly #options: SentryServerOptions;
  readonly #grpc: SentryGrpcServer;
  readonly #endpoints: HttpEndpoints;
  #settingsWatch?: { close(): void };
  /** Counts settings snapshots received, so that only the newest is applied. */
  #settingsGeneration = 0;
  readonly #credentials: CredentialReloader;
  readonly #expiry: ExpiryMonitor;
  readonly #rotation?: RootRotationDriver;
  readonly #signingPool?: SigningPool;
  #serving = false;
  /** The OIDC discovery server once it listens (it waits for its TLS files first). */
  #oidc?: OidcServer;
  /** True while an OIDC server is asked for but not listening yet (readiness waits, as Dapr's). */
  #oidcPending = false;
  /** Aborts the OIDC server's wait for its TLS files on stop. */
  readonly #oidcAbort = new AbortController();
  #failed?: (error: Error) => void;
  /**
   * Settles with the error that stops this server from doing its job after start-up (the OIDC
   * server cannot start: Dapr's sentry exits then); never settles otherwise.
   */
  readonly failure: Promise<Error> = new Promise((resolve) => this.#failed = resolve);

  private constructor(
    options: SentryServerOptions,
    metrics: SentryMetrics,
    state: CaState,
    grpc: SentryGrpcServer,
    endpoints: HttpEndpoints,
    signingPool: SigningPool | undefined,
  ) {
    this.#options = options;
    this.#signingPool = signingPool;
    this.metrics = metrics;
    this.state = state;
    this.#grpc = grpc;
    this.#endpoints = endpoints;
    this.#credentials = new CredentialReloader(
      options.store,
      state,
      metrics,
      options.logger,
      options.now,
      options.jwt,
    );
    this.#rotation = options.rotation && this.#rotationDriver(options.rotation);
    const rotation = this.#rotation;
    this.#expiry = new ExpiryMonitor(state, options.logger, options.now, {
      rotationOutlook: rotation && (() => rotation.outlook()),
    });
  }

  #rotationDriver(rotation: RotationOptions): RootRotationDriver {
    const options = this.#options;
    return new RootRotationDriver({
      ...rotation,
      store: options.store,
      settings: () => this.state.settings,
      bundle: () => this.state.bundle.pem,
      metrics: this.metrics,
      logger: options.logger,
      now: options.now,
      algorithm: options.keyAlgorithm,
      rootTtlMs: YEAR_MS,
      trustDomain: options.trustDomain,
      namespace: options.namespace,
      jwtTtlMs: options.jwt?.ttlMs,
      serving: this.#credentials,
    });
  }

  /** What the root rotation driver's last check found (undefined: no driver). */
  rotationStatus(): RotationStatus | undefined {
    return this.#rotation?.status();
  }

  /**
   * Loads settings and credentials (generating a CA into an empty store), starts every
   * listener and the reloaders. Throws with the reason when anything cannot start; nothing
   * is left listening then.
   */
  static async start(options: SentryServerOptions): Promise<SentryServer> {
    const { logger, now } = options;
    const context = validatorContext(options);
    const metrics = new SentryMetrics({ processMetrics: options.metrics !== undefined });
    // The HTTP listeners come first: /healthz answers (503) while settings and credentials
    // wait for their source (an API server that is down), and a busy port fails before anything
    // is generated or stored.
    const endpoints: Partial<HttpEndpoints> = {};
    const started: { server?: SentryServer } = {};
    let settings: MtlsSettings;
    let validators: ValidatorSet;
    try {
      endpoints.health = await startHealthServer(
        options.health.address,
        options.health.port,
        () => started.server?.healthy() ?? false,
      );
      if (options.metrics) {
        endpoints.metrics = await startMetricsServer(
          options.metrics.address,
          options.metrics.port,
          metrics.registry,
        );
      }
      // The gRPC port is bound only with the serving certificate, which needs the bundle:
      // check that the port is free before a bundle can be generated (another process may
      // still take it before the bind below; then start-up fails as before, after the bundle
      // was stored).
      await checkPortFree(options.grpc.address, options.grpc.port);
      settings = await options.settingsSource.load();
      validators = await selectValidators(settings, context);
    } catch (error) {
      await closeEndpoints(endpoints);
      options.store.close?.();
      throw error;
    }
    logger.info(
      `settings from ${options.settingsSource.description}: ${
        describeSettings(settings, validators)
      }`,
    );
    let state: CaState;
    try {
      const bundle = await loadOrCreateBundle(
        options.store,
        {
          trustDomain: options.trustDomain,
          namespace: options.namespace,
          algorithm: options.keyAlgorithm,
          ttlMs: YEAR_MS,
          skewMs: settings.allowedClockSkewMs,
        },
        now,
        logger,
        { ...DEFAULT_STARTUP_RETRY, signal: options.startupSignal },
        options.jwt,
      );
      state = new CaState(bundle, settings, validators);
    } catch (error) {
      await closeEndpoints(endpoints);
      closeValidators(validators);
      options.store.close?.();
      throw error;
    }
    metrics.setBundleExpiry(state.bundle.issuerNotAfter, state.bundle.rootNotAfter);

    const signingPool = startSigningPool(options.signingWorkers, logger);
    const grpc = new SentryGrpcServer({
      listenAddress: options.grpc.address,
      port: options.grpc.port,
      trustDomain: options.trustDomain,
      namespace: options.namespace,
      clusterDomain: options.clusterDomain,
      state,
      metrics,
      logger,
      now,
      maxConcurrentRequests: options.maxConcurrentRequests,
      signingPool,
      rateLimiter: options.identityRateLimit > 0
        ? new IdentityRateLimiter(options.identityRateLimit)
        : undefined,
      jwt: options.jwt && { ttlMs: options.jwt.ttlMs, issuer: options.jwt.issuer },
      servingThreads: servingThreadsPlan(options.servingThreads ?? 0, logger),
      ...options.connections,
    });
    try {
      await grpc.start();
    } catch (error) {
      grpc.forceShutdown();
      await closeEndpoints(endpoints);
      await signingPool?.close();
      closeValidators(validators);
      options.store.close?.();
      throw error;
    }
    const server = new SentryServer(
      options,
      metrics,
      state,
      grpc,
      endpoints as HttpEndpoints,
      signingPool,
    );
    started.server = server;
    await server.#publish();
    server.#startReloading();
    server.#startOidc();
    server.#serving = true;
    return server;
  }

  /**
   * Starts the OIDC discovery server when asked for, as Dapr does: only with JWT issuing on
   * too (else it logs that the server is disabled). It starts in the background, since it
   * waits for its TLS files; readiness waits for it to listen, and a failure to start ends
   * the server ({@link failure}). The key set follows the bundle in force.
   */
  #startOidc(): void {
    const { oidc, jwt, logger } = this.#options;
    if (!oidc) return;
    const signing = this.state.bundle.jwt;
    if (!jwt || !signing) {
      logger.warn("--oidc-enabled without --jwt-enabled: OIDC HTTP server is disabled");
      return;
    }
    this.#oidcPending = true;
    logger.info(`Starting OIDC HTTP server on port ${oidc.listen.port}`);
    startOidcServer({
      listenAddress: oidc.listen.address,
      port: oidc.listen.port,
      tlsEnabled: oidc.tlsEnabled,
      tlsCertFile: oidc.tlsCertFile,
      tlsKeyFile: oidc.tlsKeyFile,
      jwks: signing.jwksJson,
      signingAlgorithm: signing.algorithm,
      jwtIssuer: jwt.issuer,
      jwksUri: oidc.jwksUri,
      pathPrefix: oidc.pathPrefix,
      allowedHosts: oidc.allowedHosts,
      logger,
      signal: this.#oidcAbort.signal,
    }).then((server) => {
      this.#oidcPending = false;
      if (this.#oidcAbort.signal.aborted) return void server.close();
      this.#oidc = server;
      // A bundle swapped in while the server was starting.
      server.setJwks(this.state.bundle.jwt?.jwksJson);
    }, (error: Error) => {
      if (this.#oidcAbort.signal.aborted) return;
      this.#options.logger.error(`cannot start the OIDC HTTP server: ${error.message}`);
      this.#failed?.(new Error(`error running the OIDC HTTP server: ${error.message}`));
    });
  }

  /** Port the OIDC discovery server listens on (0 while it is not listening). */
  get oidcPort(): number {
    return this.#oidc?.port ?? 0;
  }

  /** Ports actually bound: gRPC, health, metrics (0 when disabled). */
  get ports(): { grpc: number; health: number; metrics: number } {
    return {
      grpc: this.#grpc.port,
      health: this.#endpoints.health.port,
      metrics: this.#endpoints.metrics?.port ?? 0,
    };
  }

  /** Ready to sign: serving, and the issuer is within its validity window. */
  healthy(): boolean {
    const now = this.#options.now();
    const bundle = this.state.bundle;
    return this.#serving && !this.#oidcPending && now >= bundle.issuerNotBefore &&
      now <= bundle.issuerNotAfter;
  }

  /**
   * Publishes the bundle's derived copies (trust-anchor ConfigMap, with the JWKS only while JWT
   * issuing is on); failures are logged.
   */
  async #publish(): Promise<void> {
    const pem = this.state.bundle.pem;
    try {
      await this.#options.store.publish?.(this.#options.jwt ? pem : withoutJwt(pem));
    } catch (error) {
      this.#options.logger.error(`cannot publish the trust anchors: ${(error as Error).message}`);
    }
  }

  #startReloading(): void {
    const { settingsSource, logger } = this.#options;
    this.#settingsWatch = settingsSource.watch({
      onUpdate: (settings) => void this.#applySettings(settings),
      onError: (error) => this.#settingsRejected(error),
    });
    this.#credentials.start();
    this.state.onBundle((bundle) => {
      this.#expiry.check();
      this.#oidc?.setJwks(bundle.jwt?.jwksJson);
      void this.#publish();
    });
    this.#rotation?.start(); // first: its outlook (and any warning about it) comes before
    this.#expiry.start();
    logger.debug("watching configuration and credentials for changes");
  }

  async #applySettings(settings: MtlsSettings): Promise<void> {
    // Building validators may wait on the network (a JWKS URL): a snapshot that arrives later
    // must win even when an earlier one finishes building after it.
    const generation = ++this.#settingsGeneration;
    let validators: ValidatorSet;
    try {
      validators = await selectValidators(settings, validatorContext(this.#options));
    } catch (error) {
      if (generation === this.#settingsGeneration) this.#settingsRejected(error as Error);
      return;
    }
    if (generation !== this.#settingsGeneration) {
      closeValidators(validators); // overtaken by a newer snapshot
      return;
    }
    const previous = this.state.validators;
    this.state.setSettings(settings, validators);
    closeValidators(previous);
    this.metrics.configReloads.inc();
    this.#options.logger.info(
      `configuration reloaded from ${this.#options.settingsSource.description}: ${
        describeSettings(settings, validators)
      }`,
    );
  }

  #settingsRejected(error: Error): void {
    this.metrics.configReloadFailures.inc();
    this.#options.logger.error(
      `configuration not reloaded: ${error.message}; the previous settings stay in force`,
    );
  }

  /** Re-reads settings and credentials now (SIGHUP). */
  async reload(): Promise<void> {
    this.#options.logger.info("reload requested");
    await Promise.all([this.#options.settingsSource.reload(), this.#credentials.reload()]);
  }

  /** Stops listening; waits up to `graceMs` for in-flight calls. Resolves to true if all finished. */
  async stop(graceMs: number): Promise<boolean> {
    this.#serving = false;
    this.#settingsWatch?.close();
    this.#options.settingsSource.close();
    this.#credentials.close();
    this.#expiry.close();
    const rotation = this.#rotation?.close();
    this.#oidcAbort.abort();
    const oidc = this.#oidc?.close();
    const graceful = await this.#grpc.shutdown(graceMs);
    await oidc;
    await rotation;
    await this.#signingPool?.close();
    await closeEndpoints(this.#endpoints);
    closeValidators(this.state.validators);
    this.#options.store.close?.();
    return graceful;
  }

  /** Closes everything at once. */
  forceStop(): void {
    this.#grpc.forceShutdown();
  }
}
