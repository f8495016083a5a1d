/**
 * A generated, validated trust bundle for unit tests: a root and issuer valid for a year from
 * `now` (no skew), in the Dapr profile, for the given trust domain and key algorithm.
 *
 * @module
 */
import { generateBundle, type TrustBundle, validateBundle } from "../../src/ca/bundle.ts";
import type { CaKeyAlgorithm } from "../../src/x509/keys.ts";

/** What may differ between test bundles. */
export interface TestBundleOptions {
  now: Date;
  algorithm?: CaKeyAlgorithm;
  trustDomain?: string;
  namespace?: string;
}

/** Generates a bundle as sentry would and validates it at `now`. */
export function testTrustBundle(options: TestBundleOptions): TrustBundle {
  const { now, algorithm = "ecdsa-p256", trustDomain = "cluster.local" } = options;
  const pem = generateBundle({
    trustDomain,
    namespace: options.namespace ?? "dapr-system",
    algorithm,
    now,
    ttlMs: 365 * 86_400_000,
    skewMs: 0,
  });
  return validateBundle(pem, now);
}
