/**
 * Key types a workload (or `sentry request`, acting like daprd) can generate for its own
 * certificate: Ed25519 (daprd's default since 1.18), ECDSA P-256/P-384 and RSA. Every type
 * listed here is one sentry accepts in a CSR.
 *
 * @module
 */
import { generateKeyPair, type KeyObject } from "node:crypto";

/** The workload key types, default first. */
export const KEY_TYPES = ["ed25519", "ec-p256", "ec-p384", "rsa-2048", "rsa-4096"] as const;

/** One of {@link KEY_TYPES}. */
export type KeyType = typeof KEY_TYPES[number];

/** The key type daprd uses by default. */
export const DEFAULT_KEY_TYPE: KeyType = "ed25519";

/** True when `name` is one of {@link KEY_TYPES}. */
export function isKeyType(name: string): name is KeyType {
  return (KEY_TYPES as readonly string[]).includes(name);
}

/**
 * Generates a private key of the given type. Asynchronous because RSA-4096 takes a noticeable
 * time, which should not block the event loop.
 */
export function generateKey(type: KeyType): Promise<KeyObject> {
  return new Promise((resolve, reject) => {
    const done = (error: Error | null, _publicKey: KeyObject, privateKey: KeyObject) => {
      if (error) reject(error);
      else resolve(privateKey);
    };
    switch (type) {
      case "ed25519":
        return generateKeyPair("ed25519", {}, done);
      case "ec-p256":
        return generateKeyPair("ec", { namedCurve: "P-256" }, done);
      case "ec-p384":
        return generateKeyPair("ec", { namedCurve: "P-384" }, done);
      case "rsa-2048":
        return generateKeyPair("rsa", { modulusLength: 2048 }, done);
      case "rsa-4096":
        return generateKeyPair("rsa", { modulusLength: 4096 }, done);
      default:
        reject(new Error(`unknown key type ${JSON.stringify(type)}: use ${KEY_TYPES.join(", ")}`));
    }
  });
}
