/**
 * Start-up of the trust bundle: load it from the store and validate it, or, when the store
 * holds nothing at all, generate a root + issuer and store it (create-only, so concurrent
 * starters converge on one CA). With JWT issuing on, a bundle without JWT key material gets a
 * generated key added (compare-and-swap; a concurrent writer's key is adopted), as Dapr
 * generates only the JWT part when the X.509 part exists. A store that is unavailable (Vault
 * sealed, API down) is retried with backoff for a while; it never leads to generating a CA.
 *
 * @module
 */
import {
  type BundlePem,
  generateBundle,
  type GenerateOptions,
  type TrustBundle,
  validateBundle,
} from "../ca/bundle.ts";
import {
  type JwtKeyOptions,
  validateServingBundle,
  withGeneratedJwtKey,
} from "../ca/jwt-bundle.ts";
import { DEFAULT_JWT_SIGNING_ALGORITHM } from "../ca/jwt-keys.ts";
import type { Logger } from "../observability/logger.ts";
import {
  type CredentialStore,
  StoreConflictError,
  StoreError,
  StoreUnavailableError,
} from "../stores/store.ts";
import { Backoff } from "../util/backoff.ts";
import { StartupAbortedError } from "../util/startup-aborted.ts";
import { delay } from "../util/timers.ts";

/** How long start-up waits for an unavailable store, and the longest pause between tries. */
export interface StartupRetry {
  timeoutMs: number;
  maxDelayMs: number;
  /** Waits between tries (default {@link delay}; tests pass one that returns at once). */
  sleep?: (ms: number) => Promise<void>;
  /** The monotonic clock (ms) the timeout is measured on (default `performance.now`). */
  now?: () => number;
  /** Ends the wait (a stop signal during start-up): {@link StartupAbortedError} is thrown. */
  signal?: AbortSignal;
}

/** Start-up waits up to 5 minutes for the store, pausing at most 10 s between tries. */
export const DEFAULT_STARTUP_RETRY: StartupRetry = { timeoutMs: 5 * 60_000, maxDelayMs: 10_000 };

/**
 * Runs `operation`, retrying StoreUnavailableError with doubling delays until the timeout or
 * until `retry.signal` aborts the wait.
 */
async function whileUnavailable<T>(
  operation: () => Promise<T>,
  logger: Logger,
  retry: StartupRetry,
): Promise<T> {
  const { now = () => performance.now(), signal } = retry;
  const sleep = retry.sleep ?? ((ms: number) => delay(ms, signal));
  const deadline = now() + retry.timeoutMs;
  const backoff = new Backoff({ initialMs: 250, maxMs: retry.maxDelayMs });
  const aborted = () => new StartupAbortedError("stopped while waiting for the credential store");
  while (true) {
    try {
      return await operation();
    } catch (error) {
      const pause = backoff.next();
      if (!(error instanceof StoreUnavailableError) || now() + pause > deadline) {
        throw error;
      }
      // Only a wait is ended: a store that answers lets start-up finish, and the signal then
      // stops the running server with its usual drain.
      if (signal?.aborted) throw aborted();
      logger.warn(
        `credential store unavailable, retrying in ${(pause / 1000).toFixed(1)}s: ${error.message}`,
      );
      await sleep(pause);
      if (signal?.aborted) throw aborted();
    }
  }
}

/**
 * Loads or creates the bundle; throws StoreError / BundleError / JwtKeyError with the reason.
 * `jwt` (JWT issuing on) makes sure the bundle has a JWT key and validates it too.
 */
export async function loadOrCreateBundle(
  store: CredentialStore,
  generate: Omit<GenerateOptions, "now">,
  now: () => Date,
  logger: Logger,
  retry: StartupRetry = DEFAULT_STARTUP_RETRY,
  jwt?: JwtKeyOptions,
): Promise<TrustBundle> {
  let stored = await whileUnavailable(() => store.load(), logger, retry);
  let generatedJwt = false;
  let message = `loaded trust bundle from ${store.description}`;
  if (!stored) {
    logger.info(
      `no trust bundle in ${store.description}: generating a new ${generate.algorithm} root and ` +
        `issuer${jwt ? " and a JWT signing key" : ""}`,
    );
    let fresh = generateBundle({ ...generate, now: now() });
    if (jwt) fresh = await withGeneratedJwtKey(fresh, jwt.keyId);
    stored = await whileUnavailable(() => store.create(fresh), logger, retry);
    generatedJwt = stored === fresh && jwt !== undefined;
    message = stored === fresh
      ? `stored the new trust bundle in ${store.description}`
      : `another instance stored a trust bundle in ${store.description} first: using it`;
  }
  if (jwt && !stored.jwt) {
    validateBundle(stored, now(), store.names); // never add a key beside a broken bundle
    const added = await addJwtKey(store, stored, jwt, logger, retry);
    generatedJwt = added.generated;
    stored = added.pem;
  }
  const options = jwt && generatedJwt ? generatedKeyOptions(jwt, logger) : jwt;
  const bundle = await validateServingBundle(stored, now(), store.names, options);
  logger.info(message, { issuer_expiry: bundle.issuerNotAfter.toISOString() });
  if (bundle.jwt && !bundle.jwt.keyIdInJwks) {
    logger.warn(
      `JWT tokens are signed with kid ${bundle.jwt.keyId}, which the JWKS does not name: ` +
        `verifiers that look keys up by kid reject them (set --jwt-key-id)`,
    );
  }
  return bundle;
}

/** Dapr signs with RS256 whatever `--jwt-signing-algorithm` says when it generated the key. */
function generatedKeyOptions(jwt: JwtKeyOptions, logger: Logger): JwtKeyOptions {
  if (jwt.algorithm === DEFAULT_JWT_SIGNING_ALGORITHM) return jwt;
  logger.warn(
    `the generated JWT signing key is RSA 2048: signing with ${DEFAULT_JWT_SIGNING_ALGORITHM}, ` +
      `not ${jwt.algorithm}`,
  );
  return { ...jwt, algorithm: DEFAULT_JWT_SIGNING_ALGORITHM };
}

/**
 * Adds a generated JWT key to the stored bundle (compare-and-swap). When another instance
 * changed the store first, its content is used if it has a JWT key, refused otherwise.
 */
async function addJwtKey(
  store: CredentialStore,
  stored: BundlePem,
  jwt: JwtKeyOptions,
  logger: Logger,
  retry: StartupRetry,
): Promise<{ pem: BundlePem; generated: boolean }> {
  const names = store.jwtNames;
  logger.info(
    `no JWT signing key in ${store.description}: generating one` +
      (names ? ` (${names.key}, ${names.jwks})` : ""),
  );
  const next = await withGeneratedJwtKey(stored, jwt.keyId);
  try {
    return {
      pem: await whileUnavailable(() => store.replace(next, stored), logger, retry),
      generated: true,
    };
  } catch (error) {
    if (!(error instanceof StoreConflictError)) throw error;
  }
  const winner = await whileUnavailable(() => store.load(), logger, retry);
  if (!winner?.jwt) {
    throw new StoreError(
      `${store.description} changed while sentry was adding a JWT signing key: restart sentry`,
    );
  }
  logger.info(`another instance stored a JWT signing key in ${store.description} first: using it`);
  return { pem: winner, generated: false };
}
