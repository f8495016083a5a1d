/**
 * Start-up of the trust bundle: load it from the store and validate it, or, when the store
 * holds nothing at all, generate a root + issuer and store it (create-only, so concurrent
 * starters converge on one CA). A store that is unavailable (Vault sealed, API down) is
 * retried with backoff for a while; it never leads to generating a CA.
 *
 * @module
 */
import {
  generateBundle,
  type GenerateOptions,
  type TrustBundle,
  validateBundle,
} from "../ca/bundle.ts";
import type { Logger } from "../observability/logger.ts";
import { type CredentialStore, StoreUnavailableError } from "../stores/store.ts";
import { Backoff } from "../util/backoff.ts";
import { delay } from "../util/timers.ts";

/** How long start-up waits for an unavailable store, and the longest pause between tries. */
export interface StartupRetry {
  timeoutMs: number;
  maxDelayMs: number;
  /** Waits between tries (default {@link delay}; tests pass one that returns at once). */
  sleep?: (ms: number) => Promise<void>;
  /** The monotonic clock (ms) the timeout is measured on (default `performance.now`). */
  now?: () => number;
}

const DEFAULT_RETRY: StartupRetry = { timeoutMs: 5 * 60_000, maxDelayMs: 10_000 };

/** Runs `operation`, retrying StoreUnavailableError with doubling delays until the timeout. */
async function whileUnavailable<T>(
  operation: () => Promise<T>,
  logger: Logger,
  retry: StartupRetry,
): Promise<T> {
  const { sleep = delay, now = () => performance.now() } = retry;
  const deadline = now() + retry.timeoutMs;
  const backoff = new Backoff({ initialMs: 250, maxMs: retry.maxDelayMs });
  while (true) {
    try {
      return await operation();
    } catch (error) {
      const pause = backoff.next();
      if (!(error instanceof StoreUnavailableError) || now() + pause > deadline) {
        throw error;
      }
      logger.warn(
        `credential store unavailable, retrying in ${(pause / 1000).toFixed(1)}s: ${error.message}`,
      );
      await sleep(pause);
    }
  }
}

/** Loads or creates the bundle; throws StoreError / BundleError with the reason. */
export async function loadOrCreateBundle(
  store: CredentialStore,
  generate: Omit<GenerateOptions, "now">,
  now: () => Date,
  logger: Logger,
  retry: StartupRetry = DEFAULT_RETRY,
): Promise<TrustBundle> {
  const stored = await whileUnavailable(() => store.load(), logger, retry);
  if (stored) {
    const bundle = validateBundle(stored, now(), store.names);
    logger.info(`loaded trust bundle from ${store.description}`, {
      issuer_expiry: bundle.issuerNotAfter.toISOString(),
    });
    return bundle;
  }
  logger.info(
    `no trust bundle in ${store.description}: generating a new ${generate.algorithm} root and issuer`,
  );
  const fresh = generateBundle({ ...generate, now: now() });
  const created = await whileUnavailable(() => store.create(fresh), logger, retry);
  const bundle = validateBundle(created, now(), store.names);
  logger.info(
    created === fresh
      ? `stored the new trust bundle in ${store.description}`
      : `another instance stored a trust bundle in ${store.description} first: using it`,
    { issuer_expiry: bundle.issuerNotAfter.toISOString() },
  );
  return bundle;
}
