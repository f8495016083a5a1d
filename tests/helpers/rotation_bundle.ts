/**
 * Real bundles with a root rotation in progress, for the credential-store tests: a generated
 * bundle and the bundle {@link startRotation} makes of it (new root and issuer kept as the
 * rotation parts).
 *
 * @module
 */
import { type BundlePem, generateBundle } from "../../src/ca/bundle.ts";
import { type RotationSettings, startRotation } from "../../src/ca/root-rotation.ts";

const MINUTE = 60_000;
const HOUR = 60 * MINUTE;

/** Rotation settings for store tests (short windows, fast ECDSA keys). */
export const ROTATION_TEST_SETTINGS: RotationSettings = {
  triggerWindowMs: 720 * HOUR,
  propagationWindowMs: 10 * MINUTE,
  workloadTtlMs: 5 * MINUTE,
  completionMarginMs: MINUTE,
  skewMs: 15 * MINUTE,
  algorithm: "ecdsa-p256",
  rootTtlMs: 365 * 24 * HOUR,
  trustDomain: "example.org",
  namespace: "dapr-system",
};

/**
 * A generated bundle (`before`, with the root key when `keepRootKey`) and the same bundle with
 * a rotation started at `now` (`during`: anchors old + new, rotation parts set; with
 * `keepRootKey`, the rotation keeps the new root's key too).
 */
export async function rotatingBundles(
  options: { keepRootKey?: boolean; now?: Date } = {},
): Promise<{ before: BundlePem; during: BundlePem }> {
  const now = options.now ?? new Date();
  const before = generateBundle({
    trustDomain: "example.org",
    namespace: "dapr-system",
    algorithm: "ecdsa-p256",
    now,
    ttlMs: 2 * HOUR,
    skewMs: 15 * MINUTE,
    keepRootKey: options.keepRootKey,
  });
  const during = await startRotation(before, now, ROTATION_TEST_SETTINGS, "manual");
  return { before, during };
}
