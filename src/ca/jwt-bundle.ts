/**
 * The trust bundle as a server signs with it: the X.509 bundle validated by bundle.ts plus,
 * when JWT-SVID issuing is on (`--jwt-enabled`), the JWT signing key and its JWKS stored beside
 * it, checked as Dapr checks them (jwt-keys.ts). Also adds freshly generated JWT key material
 * to a bundle that has none (Dapr generates only the JWT part when the X.509 part exists).
 *
 * @module
 */
import {
  type BundleNames,
  type BundlePem,
  DEFAULT_BUNDLE_NAMES,
  type TrustBundle,
  validateBundle,
} from "./bundle.ts";
import {
  DEFAULT_JWT_NAMES,
  generateJwtKeyMaterial,
  JwtKeyError,
  type JwtNames,
  prepareJwtSigningKey,
} from "./jwt-keys.ts";
import { parseJwtKeyChain } from "./jwt-rotation.ts";

/** How the stored JWT key is loaded (`--jwt-signing-algorithm`, `--jwt-key-id`, file names). */
export interface JwtKeyOptions {
  /** The JWS algorithm to sign with (Dapr's default RS256). */
  algorithm: string;
  /** The `kid` to sign with, when configured; else the key's thumbprint. */
  keyId?: string;
  /** The names of the two parts in the store, for messages. */
  names?: JwtNames;
}

/**
 * Validates a stored bundle for serving: the X.509 part as {@link validateBundle} does, and,
 * when `jwt` is given (JWT issuing on), the JWT part too: it must be stored, its key must parse,
 * its JWKS must hold the key (under the configured kid) and the algorithm must suit the key.
 * Without `jwt`, stored JWT material is ignored.
 */
export async function validateServingBundle(
  pem: BundlePem,
  now: Date,
  names: BundleNames = DEFAULT_BUNDLE_NAMES,
  jwt?: JwtKeyOptions,
): Promise<TrustBundle> {
  const bundle = validateBundle(pem, now, names);
  if (!jwt) return bundle;
  const jwtNames = jwt.names ?? DEFAULT_JWT_NAMES;
  if (!pem.jwt) {
    throw new JwtKeyError(
      `JWT issuing is enabled but the store holds no ${jwtNames.key} and ${jwtNames.jwks}`,
    );
  }
  const chain = parseJwtKeyChain(pem.jwt.keyPem, jwtNames.key);
  const prepare = (keyPem: string, keyId: string | undefined) =>
    prepareJwtSigningKey({
      keyPem,
      jwksJson: pem.jwt!.jwksJson,
      algorithm: jwt.algorithm,
      keyId,
      names: jwtNames,
    });
  // A configured kid names the operator's (or Dapr's) key; keys rotated in by sentry carry
  // their activation time and are named by their thumbprint, as `sentry renew --jwt` wrote them.
  const current = await prepare(chain.current.pem, chain.current.notBefore ? undefined : jwt.keyId);
  if (!chain.next) return { ...bundle, jwt: current };
  let next;
  try {
    next = await prepare(chain.next.pem, undefined);
  } catch (error) {
    throw new JwtKeyError(
      `the next JWT signing key in ${jwtNames.key} cannot be used: ${(error as Error).message}` +
        ` (it must be published in ${jwtNames.jwks} before it signs)`,
      { cause: error },
    );
  }
  return { ...bundle, jwt: { ...current, next: { key: next, notBefore: chain.next.notBefore } } };
}

/**
 * `pem` with a freshly generated JWT key and JWKS (Dapr's RSA 2048 / RS256 key; the kid is the
 * configured one, else the thumbprint).
 */
export async function withGeneratedJwtKey(pem: BundlePem, keyId?: string): Promise<BundlePem> {
  const generated = await generateJwtKeyMaterial({ keyId });
  return { ...pem, jwt: { keyPem: generated.keyPem, jwksJson: generated.jwksJson } };
}

/** `pem` without its JWT part (what is published when JWT issuing is off). */
export function withoutJwt(pem: BundlePem): BundlePem {
  if (!pem.jwt) return pem;
  const { jwt: _jwt, ...rest } = pem;
  return rest;
}
