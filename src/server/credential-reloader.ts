/**
 * Hot reload of the trust bundle: when the store reports a change, load and validate the new
 * bundle and swap it in atomically (requests already running finish with the old one). A
 * partial, invalid or vanished bundle is logged and ignored: the last good one keeps serving,
 * and the next change is tried again. With JWT issuing on, the JWT key and JWKS are part of the
 * bundle: a changed key is swapped in the same way, a removed one is refused. Nothing is ever
 * written back to the store.
 *
 * @module
 */
import { type BundlePem, sameBundlePem, type TrustBundle } from "../ca/bundle.ts";
import { type JwtKeyOptions, validateServingBundle } from "../ca/jwt-bundle.ts";
import type { Logger } from "../observability/logger.ts";
import type { SentryMetrics } from "../observability/metrics.ts";
import { type CredentialStore, StoreUnavailableError } from "../stores/store.ts";
import type { CaState } from "./ca-state.ts";

/** How long one reload may take before it is given up (a hung filesystem, a stuck store). */
export const RELOAD_TIMEOUT_MS = 30_000;

/** Thrown by a reload that took longer than its timeout. */
class ReloadTimeout extends Error {}

/** `promise`, or a {@link ReloadTimeout} after `ms`. */
function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new ReloadTimeout()), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Watches a store and swaps valid new bundles into the CA state. */
export class CredentialReloader {
  #watch?: { close(): void };
  #running: Promise<void> = Promise.resolve();
  #lastProblem?: string;
  #watchFailure?: string;

  /** Nothing happens until {@link start}. `jwt`: JWT issuing is on, with these key options. */
  constructor(
    readonly store: CredentialStore,
    readonly state: CaState,
    readonly metrics: SentryMetrics,
    readonly logger: Logger,
    readonly now: () => Date,
    readonly jwt?: JwtKeyOptions,
    readonly timeoutMs: number = RELOAD_TIMEOUT_MS,
  ) {}

  /** Starts watching the store. */
  start(): void {
    this.#watch = this.store.watch(
      () => void this.reload(),
      (problem) => this.#watchProblem(problem),
    );
  }

  /** Logs a failing look for changes once (and again when what it says changes), and its end. */
  #watchProblem(problem: string | undefined): void {
    if (problem === this.#watchFailure) return;
    if (problem === undefined) {
      this.logger.info(`looking for trust bundle changes works again: ${this.store.description}`);
    } else {
      this.logger.warn(`${problem}; serving the bundle in force until this is fixed`);
    }
    this.#watchFailure = problem;
  }

  /**
   * Loads the store now and swaps the bundle in if it is new and valid; runs one at a time.
   * `written`: the bundle this process just stored (a rotation step), used without reading it
   * back, so that it serves as soon as the write returns.
   */
  reload(written?: BundlePem): Promise<void> {
    this.#running = this.#running.then(() => this.#reloadOnce(written));
    return this.#running;
  }

  /**
   * Validates `pem` as it would be served (undefined when it signs as the bundle in force
   * does), without swapping anything: with {@link adopt}, a writer puts a bundle in service the
   * moment its write returns.
   */
  prepare(pem: BundlePem): Promise<TrustBundle | undefined> {
    return this.#validated(pem);
  }

  /** Puts a bundle from {@link prepare} in service now, unless one like it already is. */
  adopt(bundle: TrustBundle): void {
    this.#swap(bundle);
  }

  /** One reload, given up after {@link timeoutMs} so that a stuck one never blocks the next. */
  async #reloadOnce(written?: BundlePem): Promise<void> {
    let candidate: TrustBundle | undefined;
    try {
      candidate = await withTimeout(this.#loadCandidate(written), this.timeoutMs);
    } catch (error) {
      this.#problem(
        error instanceof ReloadTimeout
          ? `reading the trust bundle from ${this.store.description} took more than ` +
            `${this.timeoutMs / 1000}s: gave up`
          : error instanceof StoreUnavailableError
          ? `cannot read the trust bundle from ${this.store.description} now: ${
            (error as Error).message
          }`
          : `the changed trust bundle in ${this.store.description} is not usable: ${
            (error as Error).message
          }`,
      );
      return;
    }
    if (candidate) this.#swap(candidate);
  }

  /** The stored bundle, validated, if it differs from the one in use (undefined otherwise). */
  async #loadCandidate(written?: BundlePem): Promise<TrustBundle | undefined> {
    const stored = written ?? await this.store.load();
    if (!stored) {
      this.#problem(`the trust bundle disappeared from ${this.store.description}`);
      return undefined;
    }
    return await this.#validated(stored);
  }

  /** `pem` validated for serving, or undefined when it signs as the bundle in force does. */
  async #validated(pem: BundlePem): Promise<TrustBundle | undefined> {
    if (sameBundlePem(pem, this.state.bundle.pem, { signingOnly: true })) {
      this.#lastProblem = undefined;
      return undefined;
    }
    // The algorithm in force: RS256 when sentry generated the key, as in Dapr.
    const jwt = this.jwt &&
      { ...this.jwt, algorithm: this.state.bundle.jwt?.algorithm ?? this.jwt.algorithm };
    return await validateServingBundle(pem, this.now(), this.store.names, jwt);
  }

  /** Puts `candidate` in service. */
  #swap(candidate: TrustBundle): void {
    this.#lastProblem = undefined;
    const previous = this.state.bundle;
    // A reload that raced a writer's adopt() finds the same bundle already in service.
    if (sameBundlePem(candidate.pem, previous.pem, { signingOnly: true })) return;
    this.state.setBundle(candidate);
    const rootChanged = previous.anchorsPem !== candidate.anchorsPem;
    const issuerChanged = previous.issuerChainPem !== candidate.issuerChainPem ||
      previous.pem.issuerKey !== candidate.pem.issuerKey;
    // Dapr counts issuer changes only (a root rotation adds one, at its switch).
    if (issuerChanged) this.metrics.issuerCertChanged.inc();
    this.metrics.setBundleExpiry(candidate.issuerNotAfter, candidate.rootNotAfter);
    this.logger.info(
      `trust bundle reloaded from ${this.store.description}` +
        (rootChanged
          ? ": the trust anchors changed, sidecars need the new ca.crt"
          : issuerChanged || !this.jwt
          ? ": issuer rotated"
          : ": JWT signing key changed"),
      { issuer_expiry: candidate.issuerNotAfter.toISOString() },
    );
  }

  /** Logs a problem once until it changes (half-written bundles produce several events). */
  #problem(message: string): void {
    if (message === this.#lastProblem) return;
    this.#lastProblem = message;
    this.logger.warn(`${message}; still serving with the current bundle`);
  }

  /** Stops watching. */
  close(): void {
    this.#watch?.close();
  }
}
