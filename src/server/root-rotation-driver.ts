/**
 * Drives automatic root CA rotation in a running server: every check interval (and once right
 * after start) it loads the store, asks {@link planRotation} what is due, and writes the next
 * bundle with the store's compare-and-swap, so that among several replicas exactly one write
 * of each step wins and the others follow through their store watch. Before signing switches
 * it waits for the trust bundle it publishes to carry the new root, and before the old root
 * leaves the anchors for every copy of it (`store.lagging`, Kubernetes namespaces). After its own write it reloads at once,
 * so this replica serves the new bundle without waiting for the watch.
 *
 * With `--rotation-enabled` off it still runs, with `{automatic: false}`: a rotation started by
 * `sentry rotate start` finishes, and expired bridge certificates are pruned, but nothing
 * starts on its own. Failures never stop the server: a conflict (another replica wrote first)
 * is re-planned at the next check, an unreachable store is retried, anything else is logged.
 *
 * @module
 */
import { type BundlePem, sameBundlePem } from "../ca/bundle.ts";
import {
  completionTime,
  issuerRenewalAt,
  planRotation,
  rotationDueAt,
  rotationOf,
  type RotationPhase,
  type RotationSettings,
  type RotationStep,
  switchTime,
} from "../ca/root-rotation.ts";
import type { MtlsSettings } from "../config/configuration.ts";
import type { CredentialReloader } from "./credential-reloader.ts";
import type { Logger } from "../observability/logger.ts";
import type { RotationMetricPhase, SentryMetrics } from "../observability/metrics.ts";
import {
  type CredentialStore,
  StoreConflictError,
  StoreUnavailableError,
} from "../stores/store.ts";
import { formatDuration } from "../util/duration.ts";
import { setSafeTimeout } from "../util/timers.ts";
import type { CaKeyAlgorithm } from "../x509/keys.ts";

/** The rotation flags (`--rotation-*`), as the server takes them. */
export interface RotationOptions {
  /** `--rotation-enabled`: start rotations on their own (else only finish one in progress). */
  enabled: boolean;
  /** `--rotation-trigger-window`: start this long before the root (or issuer) expires. */
  triggerWindowMs: number;
  /** `--rotation-propagation-window`: combined anchors served this long before the switch. */
  propagationWindowMs: number;
  /** `--rotation-check-interval`: how often the store is checked. */
  checkIntervalMs: number;
}

/** Everything the driver needs. */
export interface RootRotationDriverOptions extends RotationOptions {
  store: CredentialStore;
  /** The mTLS settings in force (hot-reloaded): workload certificate TTL and clock skew. */
  settings: () => MtlsSettings;
  /** The bundle in force, for {@link RootRotationDriver.outlook} (no store access). */
  bundle: () => BundlePem;
  metrics: SentryMetrics;
  logger: Logger;
  now: () => Date;
  /** Key algorithm of the new root and issuer (`--key-algorithm`). */
  algorithm: CaKeyAlgorithm;
  /** Lifetime of the new root and issuer (as a generated CA's). */
  rootTtlMs: number;
  trustDomain: string;
  namespace: string;
  /** JWT-SVID lifetime when JWT issuing is on (old JWT keys leave the JWKS after it). */
  jwtTtlMs?: number;
  /** Puts the bundles it writes in service (the credential reloader). */
  serving: Pick<CredentialReloader, "prepare" | "adopt" | "reload">;
}

/** What the last check found. */
export interface RotationStatus {
  /** The phase of the rotation in progress (undefined: none). */
  phase?: RotationPhase;
  /** What the driver waits for, in words. */
  waitingFor?: string;
  /** When the next step is due, when known. */
  nextAt?: Date;
  /** When the last check ran. */
  checkedAt?: Date;
}

/** A step that writes a bundle. */
type WriteStep = Exclude<RotationStep, { kind: "none" }>;

/** A store that can tell which copies of the trust bundle lack a root (Kubernetes). */
type LaggingStore = CredentialStore & {
  lagging?(newRootPem: string, options?: { ownNamespaceOnly?: boolean }): Promise<string[]>;
};

/** The metric label of each step that changes the phase. */
const PHASE_OF_STEP: Partial<Record<RotationStep["kind"], RotationMetricPhase>> = {
  start: "distributing",
  switch: "signing",
  complete: "complete",
};

/** The verb of a step that waits for lagging trust-bundle copies. */
const WAITING_VERB: Partial<Record<RotationStep["kind"], string>> = {
  switch: "switching",
  complete: "completing",
};

const at = (date: Date) => date.toISOString();

/** Checks the store every interval and writes the rotation step that is due. */
export class RootRotationDriver {
  readonly #options: RootRotationDriverOptions;
  #timer?: ReturnType<typeof setTimeout>;
  #running?: Promise<void>;
  #closed = false;
  #status: RotationStatus = {};
  /** The last problem logged (a repeated one is not logged again until it changes). */
  #lastProblem?: string;
  /** The lagging set last warned about ("" when none). */
  #lastLagging = "";
  /** The workload TTL last warned about for raising the propagation window. */
  #raisedFor?: number;

  /** Nothing happens until {@link start} or {@link check}. */
  constructor(options: RootRotationDriverOptions) {
    this.#options = options;
  }

  /** Logs whether rotation is on, checks now, then every check interval. */
  start(): void {
    const { enabled, triggerWindowMs, propagationWindowMs, checkIntervalMs, logger } =
      this.#options;
    logger.info(
      enabled
        ? `Automatic root CA rotation is enabled: trigger window ${
          formatDuration(triggerWindowMs)
        }, propagation window ${formatDuration(propagationWindowMs)}, check interval ${
          formatDuration(checkIntervalMs)
        }`
        : "Automatic root CA rotation is disabled; enable with --rotation-enabled",
    );
    this.#tick();
  }

  #tick(): void {
    if (this.#closed) return;
    void this.check().finally(() => {
      if (this.#closed) return;
      this.#timer = setSafeTimeout(() => this.#tick(), this.#options.checkIntervalMs);
    });
  }

  /** What the last check found. */
  status(): RotationStatus {
    return { ...this.#status };
  }

  /**
   * Runs one check (after a running one finishes): plans and writes the step that is due.
   * Never rejects; problems are logged.
   */
  check(): Promise<void> {
    const previous = this.#running ?? Promise.resolve();
    const running = previous.then(() => this.#closed ? undefined : this.#checkOnce());
    this.#running = running;
    return running;
  }

  /** The settings for {@link planRotation}, from the flags and the mTLS settings in force. */
  rotationSettings(): RotationSettings {
    const options = this.#options;
    const mtls = options.settings();
    return {
      triggerWindowMs: options.triggerWindowMs,
      propagationWindowMs: this.#propagationWindow(mtls.workloadCertTtlMs),
      workloadTtlMs: mtls.workloadCertTtlMs,
      completionMarginMs: options.checkIntervalMs,
      skewMs: mtls.allowedClockSkewMs,
      algorithm: options.algorithm,
      rootTtlMs: options.rootTtlMs,
      trustDomain: options.trustDomain,
      namespace: options.namespace,
      ...(options.jwtTtlMs !== undefined ? { jwtTtlMs: options.jwtTtlMs } : {}),
    };
  }

  /** The propagation window, raised to the workload TTL (warned once per TTL) when shorter. */
  #propagationWindow(workloadTtlMs: number): number {
    const asked = this.#options.propagationWindowMs;
    if (asked >= workloadTtlMs) return asked;
    if (this.#raisedFor !== workloadTtlMs) {
      this.#raisedFor = workloadTtlMs;
      this.#options.logger.warn(
        `--rotation-propagation-window ${formatDuration(asked)} is shorter than the workload ` +
          `certificate TTL ${formatDuration(workloadTtlMs)}: using ${
            formatDuration(workloadTtlMs)
          }, so that every sidecar renews once with the new trust anchors before signing switches`,
      );
    }
    return workloadTtlMs;
  }

  async #checkOnce(): Promise<void> {
    const { store, logger } = this.#options;
    const now = this.#options.now();
    try {
      const current = await store.load();
      if (!current) {
        this.#status = { checkedAt: now, waitingFor: "a trust bundle in the store" };
        this.#problem("warn", `root rotation: no trust bundle in ${store.description}`);
        return;
      }
      const step = await planRotation(current, now, this.rotationSettings(), {
        automatic: this.#options.enabled,
      });
      const phase = rotationOf(current)?.phase;
      if (step.kind === "none") {
        this.#status = { phase, waitingFor: step.waitingFor, nextAt: step.nextAt, checkedAt: now };
        this.#lastProblem = undefined;
        return;
      }
      if (await this.#waitingForCopies(current, step, phase, now)) return;
      // Validated before the write, served the moment the write returns (Dapr's tests read the
      // state file and ask for a certificate at once).
      const ready = await this.#options.serving.prepare(step.next);
      const stored = await store.replace(step.next, current);
      if (ready && sameBundlePem(stored, step.next)) this.#options.serving.adopt(ready);
      else await this.#options.serving.reload(stored);
      this.#lastProblem = undefined;
      this.#status = await this.#statusOf(step.next, now);
      this.#written(step);
    } catch (error) {
      const message = (error as Error).message;
      if (error instanceof StoreConflictError) {
        logger.debug(
          `root rotation: ${store.description} changed since it was read (another replica): ` +
            `planning again at the next check`,
        );
      } else if (error instanceof StoreUnavailableError) {
        this.#problem(
          "warn",
          `root rotation: cannot reach ${store.description}: ${message}; ` +
            `retrying at the next check`,
        );
      } else {
        this.#problem(
          "error",
          `root rotation check failed: ${message}; still serving, ` +
            `retrying at the next check`,
        );
      }
    }
  }

  /**
   * Before a switch or a completion: true (and one warning per distinct set) while copies of
   * the trust bundle in other namespaces lack the new root.
   */
  async #waitingForCopies(
    current: BundlePem,
    step: WriteStep,
    phase: RotationPhase | undefined,
    now: Date,
  ): Promise<boolean> {
    const verb = WAITING_VERB[step.kind];
    const lagging = (this.#options.store as LaggingStore).lagging;
    if (!verb || !lagging || !current.rotation) return false;
    // Before the switch, sentry's own published anchors must carry the new root (copies
    // elsewhere need not: the bridge keeps old-anchored sidecars working); before the old root
    // leaves, every copy must (Dapr's rule).
    const namespaces = await lagging.call(this.#options.store, current.rotation.caCrt, {
      ownNamespaceOnly: step.kind === "switch",
    });
    if (namespaces.length === 0) {
      this.#lastLagging = "";
      return false;
    }
    const names = [...namespaces].sort().join(", ");
    const waitingFor = `the trust bundle in namespaces ${names} to carry the new root`;
    this.#status = { phase, waitingFor, checkedAt: now };
    const key = `${verb}:${names}`;
    if (key !== this.#lastLagging) {
      this.#lastLagging = key;
      this.#options.logger.warn(`root rotation: waiting for ${waitingFor} before ${verb}`);
    }
    return true;
  }

  /**
   * The status after writing `next`: while a rotation is in progress, what its next step waits
   * for, as planned (those plans make no keys); else nothing known until the next check.
   */
  async #statusOf(next: BundlePem, now: Date): Promise<RotationStatus> {
    const phase = rotationOf(next)?.phase;
    if (!phase) return { checkedAt: now };
    try {
      const step = await planRotation(next, now, this.rotationSettings());
      if (step.kind === "none") {
        return { phase, waitingFor: step.waitingFor, nextAt: step.nextAt, checkedAt: now };
      }
    } catch {
      // the next check plans again and logs what is wrong
    }
    return { phase, checkedAt: now };
  }

  /** Logs a written step (with when the next one is due), counts a phase change. */
  #written(step: WriteStep): void {
    const metricPhase = PHASE_OF_STEP[step.kind];
    const fields: Record<string, string> = { step: step.kind };
    if (metricPhase) fields.phase = metricPhase;
    const { phase, nextAt } = this.#status;
    if (nextAt && phase) {
      fields[phase === "distributing" ? "switch_at" : "complete_at"] = at(nextAt);
    }
    this.#options.logger.info(step.message, fields);
    if (metricPhase) this.#options.metrics.rotationPhase(metricPhase);
  }

  /** Logs `message` unless it is the same as the last problem logged. */
  #problem(level: "warn" | "error", message: string): void {
    if (message === this.#lastProblem) return;
    this.#lastProblem = message;
    this.#options.logger[level](message);
  }

  /**
   * What happens next to the bundle in force, in words, without reading the store: the phase
   * of a rotation in progress and when it moves on, when an automatic rotation (or issuer
   * renewal) is due, or undefined when rotation is off and none is in progress.
   */
  outlook(): string | undefined {
    const pem = this.#options.bundle();
    const settings = this.rotationSettings();
    const now = this.#options.now();
    const when = (date: Date) => date <= now ? "at the next check" : `at ${at(date)}`;
    try {
      const state = rotationOf(pem);
      // The last check's plan is exact (it knows when the old CA expires); before it, the rule.
      const planned = state && this.#status.phase === state.phase ? this.#status.nextAt : undefined;
      if (state?.phase === "distributing") {
        return `root rotation in progress: distributing, signing switches to the new issuer ${
          when(planned ?? switchTime(state, settings))
        }`;
      }
      if (state?.phase === "signing") {
        return `root rotation in progress: signing, the old root leaves the trust anchors ${
          when(planned ?? completionTime(state, settings))
        }`;
      }
      if (!this.#options.enabled) return undefined;
      const dueAt = rotationDueAt(pem, settings);
      const renewAt = issuerRenewalAt(pem);
      if (renewAt && renewAt < dueAt) return `automatic issuer renewal ${when(renewAt)}`;
      return `automatic root rotation starts ${when(dueAt)}`;
    } catch {
      return undefined; // a bundle the core cannot read: the check logs why
    }
  }

  /** Stops the checks; resolves once a running check has finished. */
  async close(): Promise<void> {
    this.#closed = true;
    clearTimeout(this.#timer);
    await this.#running;
  }
}
