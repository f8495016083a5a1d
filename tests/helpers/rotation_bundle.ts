/**
 * Real bundles for the root rotation tests: one about to expire, and one with a rotation in
 * progress ({@link startRotation} of it: new root and issuer kept as the rotation parts), with
 * the rotation settings those tests share.
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
 * A Dapr-profile bundle (trust domain example.org) whose root and issuer expire two hours after
 * `now`: inside the default 720 h trigger window at once. NotBefore back-dated by `skewMs`
 * (default 15 min); the root key is kept when asked.
 */
export function expiringBundle(
  options: { now?: Date; keepRootKey?: boolean; skewMs?: number } = {},
): BundlePem {
  return generateBundle({
    trustDomain: "example.org",
    namespace: "dapr-system",
    algorithm: "ecdsa-p256",
    now: options.now ?? new Date(),
    ttlMs: 2 * HOUR,
    skewMs: options.skewMs ?? 15 * MINUTE,
    keepRootKey: options.keepRootKey,
  });
}

/**
 * A generated bundle (`before`, with the root key when `keepRootKey`) and the same bundle with
 * a rotation started at `now` (`during`: anchors old + new, rotation parts set; with
 * `keepRootKey`, the rotation keeps the new root's key too).
 */
export async function rotatingBundles(
  options: { keepRootKey?: boolean; now?: Date } = {},
): Promise<{ before: BundlePem; during: BundlePem }> {
  const now = options.now ?? new Date();
  const before = expiringBundle({ now, keepRootKey: options.keepRootKey });
  const during = await startRotation(before, now, ROTATION_TEST_SETTINGS, "manual");
  return { before, during };
}
