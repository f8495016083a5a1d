/**
 * Start-up of the trust bundle: load it from the store and validate it, or, when the store
 * holds nothing at all, generate a root + issuer and store it (create-only, so concurrent
 * starters converge on one CA).
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
import type { CredentialStore } from "../../stores/store.ts";

/** Loads or creates the bundle; throws StoreError / BundleError with the reason. */
export async function loadOrCreateBundle(
  store: CredentialStore,
  generate: Omit<GenerateOptions, "now">,
  now: () => Date,
  logger: Logger,
): Promise<TrustBundle> {
  const stored = await store.load();
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
  const created = await store.create(generateBundle({ ...generate, now: now() }));
  const bundle = validateBundle(created, now(), store.names);
  logger.info(`stored the new trust bundle in ${store.description}`, {
    issuer_expiry: bundle.issuerNotAfter.toISOString(),
  });
  return bundle;
}
