/**
 * JWT-SVIDs as Dapr's sentry (v1.16+) issues them beside each workload certificate: the header
 * `{alg, kid, typ: "JWT"}` and the claims `aud` (always an array), `exp` (now + TTL), `iat`
 * (now), `iss` (only when configured), `jti` (16 random bytes, hex), `nbf` (now minus the
 * allowed clock skew), `sub` (the workload's SPIFFE ID) and `use: "sig"`, in that order, times
 * in whole seconds. The response's `jwt` carries every audience (the trust domain first, then
 * the requested ones); `per_audience_jwts` one token per audience. Signed by jose.
 *
 * @module
 */
import { CompactSign } from "jose";
import type { JwtSigningKey } from "./jwt-keys.ts";
import { SpiffeId } from "./spiffe.ts";

/** A token request that cannot be signed; the message names the missing part. */
export class JwtSvidError extends Error {
  override name = "JwtSvidError";
}

/** Whose token, for whom. */
export interface JwtSvidRequest {
  trustDomain: string;
  namespace: string;
  appId: string;
  /** The `aud` claim, in order; at least one. */
  audiences: readonly string[];
}

/** How tokens are issued (Dapr's `--jwt-ttl`, `--jwt-issuer` and `allowedClockSkew`). */
export interface JwtSvidOptions {
  /** Token lifetime (Dapr's default 24 h). */
  ttlMs: number;
  /** How far `nbf` lies before `iat` (Dapr's allowedClockSkew, default 15 min). */
  allowedClockSkewMs: number;
  /** The `iss` claim; omitted when undefined (an empty string is written, as Dapr does). */
  issuer?: string;
  /** The issuing time (default: now). */
  now?: Date;
}

/** The claims of a JWT-SVID, in the order they are written. */
export interface JwtSvidClaims {
  aud: string[];
  exp: number;
  iat: number;
  iss?: string;
  jti: string;
  nbf: number;
  sub: string;
  use: "sig";
}

/** The audiences Dapr puts in a response's `jwt`: the trust domain, then the requested ones. */
export function daprJwtAudiences(trustDomain: string, requested: readonly string[]): string[] {
  return [trustDomain, ...requested];
}

/** A random JWT ID: 16 bytes (128 bits) in hex, as Dapr makes it. */
function randomJwtId(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0")).join("");
}

/** Throws unless the request names a trust domain, namespace, app ID and an audience. */
function checkRequest(request: JwtSvidRequest): void {
  if (request.trustDomain === "") throw new JwtSvidError("trust domain cannot be empty");
  if (request.audiences.length === 0) throw new JwtSvidError("audience cannot be empty");
  if (request.namespace === "") throw new JwtSvidError("namespace cannot be empty");
  if (request.appId === "") throw new JwtSvidError("app ID cannot be empty");
}

/**
 * The claims of a token, computed as Dapr computes them (`iat` now, `nbf` now minus the clock
 * skew, `exp` now plus the TTL, each truncated to whole seconds). When the key has a `notAfter`
 * (Dapr's keys never do), `exp` is brought forward to it so that no token outlives its key.
 */
export function jwtSvidClaims(
  key: Pick<JwtSigningKey, "notAfter">,
  request: JwtSvidRequest,
  options: JwtSvidOptions,
): JwtSvidClaims {
  checkRequest(request);
  const sub = SpiffeId.forWorkload(request.trustDomain, request.namespace, request.appId);
  const now = (options.now ?? new Date()).getTime();
  const expMs = Math.min(now + options.ttlMs, key.notAfter?.getTime() ?? Infinity);
  if (expMs <= now) {
    throw new JwtSvidError(
      `the JWT signing key is no longer valid (not after ${key.notAfter?.toISOString()})`,
    );
  }
  const seconds = (ms: number) => Math.floor(ms / 1000);
  return {
    aud: [...request.audiences],
    exp: seconds(expMs),
    iat: seconds(now),
    ...(options.issuer === undefined ? {} : { iss: options.issuer }),
    jti: randomJwtId(),
    nbf: seconds(now - options.allowedClockSkewMs),
    sub: sub.toString(),
    use: "sig",
  };
}

/** Signs claims with the key: a compact JWS with the header `{alg, kid, typ: "JWT"}`. */
function signClaims(key: JwtSigningKey, claims: JwtSvidClaims): Promise<string> {
  return new CompactSign(new TextEncoder().encode(JSON.stringify(claims)))
    .setProtectedHeader({ alg: key.algorithm, kid: key.keyId, typ: "JWT" })
    .sign(key.privateKey);
}

/** Signs one JWT-SVID for the workload `spiffe://<td>/ns/<namespace>/<appId>`, for all audiences. */
export function signJwtSvid(
  key: JwtSigningKey,
  request: JwtSvidRequest,
  options: JwtSvidOptions,
): Promise<string> {
  return signClaims(key, jwtSvidClaims(key, request, options));
}

/**
 * Signs one token per audience (the response's `per_audience_jwts`), each with `aud` holding
 * that audience alone. A repeated audience gets one entry, as in Dapr's map.
 */
export async function signPerAudienceJwtSvids(
  key: JwtSigningKey,
  request: JwtSvidRequest,
  options: JwtSvidOptions,
): Promise<Map<string, string>> {
  checkRequest(request);
  const audiences = [...new Set(request.audiences)];
  const tokens = await Promise.all(
    audiences.map((audience) => signJwtSvid(key, { ...request, audiences: [audience] }, options)),
  );
  return new Map(audiences.map((audience, index) => [audience, tokens[index]]));
}
