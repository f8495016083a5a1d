/**
 * `sentry` / `sentry serve`: the CA server with Dapr's flags and defaults (docs/compatibility.md#command-line).
 * Reads the configuration, loads or creates the trust bundle, then serves gRPC, health and
 * metrics until SIGTERM/SIGINT, when it finishes in-flight calls and exits 0.
 *
 * @module
 */
import { readFileSync } from "node:fs";
import { networkInterfaces } from "node:os";
import process from "node:process";
import { CA_KEY_ALGORITHMS, type CaKeyAlgorithm } from "../x509/keys.ts";
import { clusterDomainFromResolvConf } from "../ca/control-plane.ts";
import { validateTrustDomain } from "../ca/spiffe.ts";
import { DEFAULT_CONFIGURATION_NAMES, KubeSettingsSource } from "../config/kube-settings-source.ts";
import { StartupAbortedError } from "../util/startup-aborted.ts";
import { DefaultSettingsSource, FileSettingsSource } from "../config/settings-source.ts";
import { KubernetesValidator } from "../identity/kubernetes.ts";
import { fileLogSink, Logger, type LogSink, parseLogLevel } from "../observability/logger.ts";
import { SentryServer, type SentryServerOptions } from "../server/sentry-server.ts";
import type { ConnectionLimits } from "../server/grpc-server.ts";
import {
  DEFAULT_IDLE_TIMEOUT_MS,
  DEFAULT_PREFACE_TIMEOUT_MS,
  defaultMaxConnections,
} from "../server/connection-guard.ts";
import { defaultSigningWorkers } from "../server/cpu-count.ts";
import { capYoungGeneration } from "../server/young-generation.ts";
import { formatDuration } from "../util/duration.ts";
import { ROTATION_DEFAULTS } from "../ca/root-rotation.ts";
import type { RotationOptions } from "../server/root-rotation-driver.ts";
import { runtimeDescription, VERSION } from "../util/version.ts";
import { openStore, STORE_FLAGS } from "./store-flags.ts";
import {
  durationFlag,
  type FlagSpec,
  formatFlagHelp,
  type ParsedFlags,
  parseFlags,
  UsageError,
} from "./flags.ts";
import { flagValues } from "./command.ts";
import { JWT_FLAGS, jwtOptionsFromFlags, OIDC_FLAGS, oidcOptionsFromFlags } from "./jwt-flags.ts";

/** `--rotation-*`: automatic root CA rotation (Dapr's development branch, PR dapr/dapr#9797). */
export const ROTATION_FLAGS: readonly FlagSpec[] = [
  {
    name: "rotation-enabled",
    type: "bool",
    default: false,
    help: "Rotate the root CA automatically before it expires (a rotation in progress, e.g. " +
      "from 'sentry rotate start', always finishes)",
  },
  {
    name: "rotation-trigger-window",
    type: "string",
    default: formatDuration(ROTATION_DEFAULTS.triggerWindowMs),
    help: "Start a root rotation this long before the root (or, without a root key, the " +
      "issuer) expires (Go duration)",
  },
  {
    name: "rotation-propagation-window",
    type: "string",
    default: formatDuration(ROTATION_DEFAULTS.propagationWindowMs),
    help: "How long old + new trust anchors are served before signing switches to the new " +
      "issuer; raised to the workload certificate TTL when shorter (Go duration)",
  },
  {
    name: "rotation-check-interval",
    type: "string",
    default: formatDuration(ROTATION_DEFAULTS.checkIntervalMs),
    help: "How often the store is checked for a rotation step that is due (Go duration)",
  },
];

/** The server's flags: Dapr's, with Dapr's defaults, plus `--store` and `--key-algorithm`. */
export const SERVE_FLAGS: readonly FlagSpec[] = [
  ...STORE_FLAGS,
  {
    name: "config",
    type: "string",
    default: "daprsystem",
    help:
      "Path to a Dapr Configuration file (self-hosted) with spec.mtls settings; built-in defaults apply when not given",
  },
  {
    name: "trust-domain",
    type: "string",
    default: "localhost",
    help: "Trust domain of the control plane (sentry's own SPIFFE ID)",
  },
  { name: "port", type: "int", default: 50001, help: "gRPC port of the CA service" },
  {
    name: "listen-address",
    type: "string",
    default: "",
    help: "Address for the gRPC server (all interfaces when empty)",
  },
  { name: "healthz-port", type: "int", default: 8080, help: "Port for /healthz" },
  {
    name: "healthz-listen-address",
    type: "string",
    default: "",
    help: "Address for the health server (all interfaces when empty)",
  },
  { name: "enable-metrics", type: "bool", default: true, help: "Serve Prometheus metrics" },
  { name: "metrics-port", type: "int", default: 9090, help: "Port for /metrics" },
  {
    name: "metrics-listen-address",
    type: "string",
    default: "",
    help: "Address for the metrics server (all interfaces when empty)",
  },
  {
    name: "mode",
    type: "string",
    default: "standalone",
    choices: ["standalone", "kubernetes"],
    help: "Runtime mode",
  },

  {
    name: "log-level",
    type: "string",
    default: "info",
    help: "Log level: debug, info, warn, error or fatal (any letter case)",
  },
  {
    name: "log-file",
    type: "string",
    default: "",
    help: "Append logs to this file (created 0644) instead of stdout",
  },
  { name: "log-as-json", type: "bool", default: false, help: "Log one JSON object per line" },
  {
    name: "key-algorithm",
    type: "string",
    default: "ecdsa-p256",
    choices: CA_KEY_ALGORITHMS,
    help: "Key algorithm of a generated root and issuer: ecdsa-p256 or ed25519",
  },
  {
    name: "max-concurrent-requests",
    type: "int",
    default: 1024,
    help: "Most signing requests handled at once; more are told to retry (RESOURCE_EXHAUSTED)",
  },
  {
    name: "signing-workers",
    type: "int",
    default: () => defaultSigningWorkers(),
    help: "Worker threads that verify and sign requests arriving together (0: main thread only; " +
      "default: the CPUs this process may use, container quota included, minus one; 1 or 2)",
  },
  {
    name: "serving-threads",
    type: "int",
    default: 0,
    help: "Threads that also serve the gRPC port (TLS and HTTP/2; the port is shared with " +
      "SO_REUSEPORT) and hand each call to the main thread; for machines with 4 or more CPUs, " +
      "where TLS and HTTP/2 on one thread become the limit (0: the main thread serves alone)",
  },
  {
    name: "identity-rate-limit",
    type: "int",
    default: 0,
    help: "Most signing requests a minute for one workload identity (SPIFFE ID), in bursts of " +
      "up to that many; more are told to retry (RESOURCE_EXHAUSTED). 0: no limit",
  },
  {
    name: "max-connections",
    type: "int",
    default: () => defaultMaxConnections(),
    help: "Most connections open at once on the gRPC port; more are closed as soon as they are " +
      "accepted (default: 4096, or the open-files limit less 256 when that is lower)",
  },
  {
    name: "handshake-timeout",
    type: "string",
    default: formatDuration(DEFAULT_PREFACE_TIMEOUT_MS),
    help: "Time a new gRPC connection has to finish its TLS handshake and send the HTTP/2 " +
      "preface, else it is closed (Go duration)",
  },
  {
    name: "connection-idle-timeout",
    type: "string",
    default: formatDuration(DEFAULT_IDLE_TIMEOUT_MS),
    help: "Time a gRPC connection with no call in progress stays open before GOAWAY and close " +
      "(Go duration; 0: no limit)",
  },
  ...ROTATION_FLAGS,
  ...JWT_FLAGS,
  ...OIDC_FLAGS,
  { name: "help", type: "bool", default: false, help: "Show this help" },
];

/** One line for `sentry --help`. */
export const SERVE_SUMMARY = "run the CA server (the default when no command is given)";

/** The server's environment and flags, for help texts. */
export function serveFlagsHelp(): string {
  return `Environment:
  NAMESPACE   namespace of sentry, part of its SPIFFE ID (default "default")

Server flags (one or two dashes; -flag=value or -flag value):
${formatFlagHelp(SERVE_FLAGS)}
`;
}

/** The usage text of `sentry serve`. */
export function serveHelp(): string {
  return `sentry ${VERSION}: a certificate authority for Dapr's mutual TLS

Usage:
  sentry [serve] [flags]
  sentry --version

${serveFlagsHelp()}`;
}

/** How long a stop waits for in-flight requests before closing their connections. */
const SHUTDOWN_GRACE_MS = 10_000;

/**
 * The address to bind for a `--*listen-address` value. Empty means every address, as in Dapr:
 * `::` (IPv6 and, dual-stack, IPv4) where the host has IPv6, else `0.0.0.0`.
 */
function listenAddress(value: string): string {
  if (value !== "") return value;
  const hasIpv6 = Object.values(networkInterfaces()).some((addresses) =>
    (addresses ?? []).some((address) => address.family === "IPv6")
  );
  return hasIpv6 ? "::" : "0.0.0.0";
}

/**
 * The gRPC connection limits that `--max-connections`, `--handshake-timeout` and
 * `--connection-idle-timeout` ask for; a {@link UsageError} naming the flag for a bad value.
 */
export function connectionLimitsFromFlags(parsed: ParsedFlags): Required<ConnectionLimits> {
  const flags = flagValues(parsed);
  const maxConnections = flags.int("max-connections");
  if (!(maxConnections >= 1)) {
    throw new UsageError(`--max-connections must be 1 or more, got ${maxConnections}`);
  }
  return {
    maxConnections,
    prefaceTimeoutMs: durationFlag("handshake-timeout", flags.string("handshake-timeout")),
    idleTimeoutMs: durationFlag(
      "connection-idle-timeout",
      flags.string("connection-idle-timeout"),
      {
        allowZero: true,
      },
    ),
  };
}

/**
 * The root rotation settings that the `--rotation-*` flags ask for; a {@link UsageError} naming
 * the flag for a duration that is not positive, even with rotation off (as Dapr).
 */
export function rotationOptionsFromFlags(parsed: ParsedFlags): RotationOptions {
  const flags = flagValues(parsed);
  const duration = (name: string) => durationFlag(name, flags.string(name));
  return {
    enabled: flags.bool("rotation-enabled"),
    triggerWindowMs: duration("rotation-trigger-window"),
    propagationWindowMs: duration("rotation-propagation-window"),
    checkIntervalMs: duration("rotation-check-interval"),
  };
}

/** Process hooks, replaceable in tests. */
export interface ServeEnvironment {
  env: Record<string, string | undefined>;
  now: () => Date;
  stdout: (text: string) => void;
  stderr: (text: string) => void;
}

/** Runs the server until a stop signal; resolves to the process exit code. */
export async function runServe(argv: readonly string[], io: ServeEnvironment): Promise<number> {
  let parsed;
  try {
    parsed = parseFlags(SERVE_FLAGS, argv);
    if (parsed.positionals.length > 0) {
      throw new UsageError(`unexpected argument ${JSON.stringify(parsed.positionals[0])}`);
    }
  } catch (error) {
    io.stderr(`sentry: ${(error as Error).message}\nRun 'sentry --help' for usage.\n`);
    return 2;
  }
  const flags = flagValues(parsed);
  if (flags.bool("help")) {
    io.stdout(serveHelp());
    return 0;
  }
  const level = parseLogLevel(flags.string("log-level"));
  if (!level) {
    io.stderr(
      `sentry: --log-level ${JSON.stringify(flags.string("log-level"))}: ` +
        `expected debug, info, warn, error or fatal\nRun 'sentry --help' for usage.\n`,
    );
    return 2;
  }
  let sink: LogSink & { close?(): void } = (line) => io.stdout(line + "\n");
  if (flags.string("log-file")) {
    try {
      sink = fileLogSink(flags.string("log-file"));
    } catch (error) {
      io.stderr(`sentry: cannot open --log-file: ${(error as Error).message}\n`);
      return 1;
    }
  }
  capYoungGeneration();

  const logger = new Logger({
    level,
    json: flags.bool("log-as-json"),
    scope: "dapr.sentry",
    version: VERSION,
    sink,
  });
  const trustDomain = flags.string("trust-domain");

  // --store k8s implies Kubernetes mode unless --mode says otherwise.
  const mode = flags.given("mode")
    ? flags.string("mode")
    : flags.string("store") === "k8s"
    ? "kubernetes"
    : flags.string("mode");
  // Listen for stop signals before anything starts: one that arrives while sentry is still
  // starting (after /healthz already answers) stops it as soon as it is up, instead of
  // killing it with the signal's default action.
  const stopSignal = listenForStopSignals(() => {
    logger.warn("second stop signal: exiting now");
    process.exit(1);
  });
  let server: SentryServer;
  let startedUp = false;
  try {
    validateTrustDomain(trustDomain);
    if (!((flags.int("max-concurrent-requests")) > 0)) {
      throw new UsageError("--max-concurrent-requests must be positive");
    }
    if (!((flags.int("serving-threads")) >= 0)) {
      throw new UsageError("--serving-threads must be 0 or more");
    }
    if (!((flags.int("signing-workers")) >= 0)) {
      throw new UsageError("--signing-workers must be 0 or more");
    }
    if (!((flags.int("identity-rate-limit")) >= 0)) {
      throw new UsageError("--identity-rate-limit must be 0 or more");
    }
    const connections = connectionLimitsFromFlags(parsed);
    const rotation = rotationOptionsFromFlags(parsed);
    const jwt = jwtOptionsFromFlags(parsed);
    const oidc = oidcOptionsFromFlags(parsed);
    const { store, namespace, kube } = await openStore(
      parsed,
      io.env,
      logger,
      mode === "kubernetes",
    );
    const configName = flags.string("config");
    const settingsSource = parsed.given.has("config") && configName === ""
      ? new DefaultSettingsSource()
      : mode === "kubernetes"
      ? new KubeSettingsSource(
        kube!,
        namespace,
        parsed.given.has("config") ? [configName] : DEFAULT_CONFIGURATION_NAMES,
        logger,
      )
      : parsed.given.has("config")
      ? new FileSettingsSource(configName, io.env)
      : new DefaultSettingsSource();
    // A stop signal while start-up waits (for the Kubernetes API, for the store) ends the wait.
    const startup = new AbortController();
    void stopSignal.received.then(() => {
      if (startedUp) return;
      settingsSource.close();
      startup.abort();
    });
    const serverOptions: SentryServerOptions = {
      trustDomain,
      namespace,
      clusterDomain: mode === "kubernetes" ? clusterDomain(trustDomain, logger) : undefined,
      store,
      settingsSource,
      createKubernetesValidator: mode === "kubernetes"
        ? () =>
          new KubernetesValidator({
            client: kube!,
            sentryNamespace: namespace,
            sentryTrustDomain: trustDomain,
            logger,
            now: io.now,
          })
        : undefined,
      keyAlgorithm: flags.string("key-algorithm") as CaKeyAlgorithm,
      maxConcurrentRequests: flags.int("max-concurrent-requests"),
      signingWorkers: flags.int("signing-workers"),
      servingThreads: flags.int("serving-threads"),
      identityRateLimit: flags.int("identity-rate-limit"),
      grpc: {
        address: listenAddress(flags.string("listen-address")),
        port: flags.int("port"),
      },
      health: {
        address: listenAddress(flags.string("healthz-listen-address")),
        port: flags.int("healthz-port"),
      },
      metrics: flags.bool("enable-metrics")
        ? {
          address: listenAddress(flags.string("metrics-listen-address")),
          port: flags.int("metrics-port"),
        }
        : undefined,
      connections,
      jwt,
      oidc,
      rotation,
      logger,
      now: io.now,
      startupSignal: startup.signal,
    };
    server = await SentryServer.start(serverOptions);
    startedUp = true;
  } catch (error) {
    stopSignal.dispose();
    if (error instanceof StartupAbortedError && stopSignal.first) {
      logger.info(`received ${stopSignal.first} while starting: sentry stopped`);
      return 0;
    }
    logger.log("fatal", `sentry cannot start: ${(error as Error).message}`);
    return error instanceof UsageError ? 2 : 1;
  }
  const ports = server.ports;
  logger.info(
    `sentry ${VERSION} (${runtimeDescription()}) serving the CA on port ${ports.grpc}, ` +
      `trust domain ${trustDomain}, health on port ${ports.health}` +
      (ports.metrics ? `, metrics on port ${ports.metrics}` : ""),
  );

  const onHangup = () => void server.reload();
  process.on("SIGHUP", onHangup);
  const ended = await Promise.race([
    stopSignal.received.then((signal) => ({ signal })),
    server.failure.then((error) => ({ error })),
  ]);
  process.off("SIGHUP", onHangup);
  if ("error" in ended) {
    // As Dapr's sentry, which exits when one of its servers fails.
    logger.log("fatal", `sentry stopped: ${ended.error.message}`);
    await server.stop(SHUTDOWN_GRACE_MS);
    stopSignal.dispose();
    return 1;
  }
  logger.info(`received ${ended.signal}: finishing in-flight requests`);
  if (!await server.stop(SHUTDOWN_GRACE_MS)) {
    logger.warn(
      `in-flight requests did not finish within ${
        SHUTDOWN_GRACE_MS / 1000
      }s: closed their connections`,
    );
  }
  stopSignal.dispose();
  logger.info("sentry stopped");
  return 0;
}

/** The first SIGTERM/SIGINT, once it comes; `dispose` removes the handlers. */
interface StopSignals {
  received: Promise<string>;
  /** The first signal, once it came. */
  readonly first?: string;
  dispose(): void;
}

/**
 * A SIGINT this soon after the first is the same Ctrl-C: `npx`/`npm` and `deno task` forward the
 * terminal's SIGINT to sentry, which the terminal also sent it (its process group).
 */
export const SAME_CTRL_C_MS = 1000;

/**
 * Handles SIGTERM/SIGINT from now on: the first resolves `received`; a second calls `onSecond`,
 * except a SIGINT within {@link SAME_CTRL_C_MS} of a first SIGINT (one Ctrl-C delivered twice).
 */
function listenForStopSignals(onSecond: () => void): StopSignals {
  let first: string | undefined;
  let firstAt = 0;
  let resolve: (signal: string) => void;
  const promise = new Promise<string>((done) => resolve = done);
  const handler = (signal: NodeJS.Signals) => {
    if (first !== undefined) {
      if (
        signal === "SIGINT" && first === "SIGINT" && performance.now() - firstAt < SAME_CTRL_C_MS
      ) {
        return;
      }
      onSecond();
      return;
    }
    first = signal;
    firstAt = performance.now();
    resolve(signal);
  };
  process.on("SIGTERM", handler);
  process.on("SIGINT", handler);
  return {
    received: promise,
    get first() {
      return first;
    },
    dispose() {
      process.off("SIGTERM", handler);
      process.off("SIGINT", handler);
    },
  };
}

/**
 * The cluster domain in a pod: from the `search` list Kubernetes writes into /etc/resolv.conf;
 * else, as Dapr falls back, the trust domain (logged).
 */
function clusterDomain(trustDomain: string, logger: Logger): string {
  let found: string | undefined;
  try {
    found = clusterDomainFromResolvConf(readFileSync("/etc/resolv.conf", "utf8"));
  } catch {
    // no resolv.conf: the fallback below
  }
  if (found) return found;
  logger.warn(
    `cannot read the Kubernetes cluster domain from /etc/resolv.conf: the scheduler's DNS names ` +
      `use the trust domain ${JSON.stringify(trustDomain)} instead`,
  );
  return trustDomain;
}
