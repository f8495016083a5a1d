/**
 * Sentry's own TLS identity: a workload certificate for
 * `spiffe://<trust-domain>/ns/<namespace>/dapr-sentry`, issued in-process from the current
 * bundle, with DNS names so that ordinary gRPC clients can verify it by hostname.
 *
 * @module
 */
import { generateKeyPairSync } from "node:crypto";
import type { TrustBundle } from "../ca/bundle.ts";
import { privateKeyToPem, spkiOf } from "../x509/keys.ts";
import { issueWorkloadCertificate } from "../ca/signer.ts";
import { SpiffeId } from "../ca/spiffe.ts";

/** Key and certificate chain for the TLS server. */
export interface ServingIdentity {
  keyPem: string;
  /** Leaf followed by the issuer chain. */
  chainPem: string;
  /** When it was issued (NotBefore is earlier: it is back-dated by the clock skew). */
  issuedAt: Date;
  notAfter: Date;
}

/** DNS names on the serving certificate, besides the SPIFFE ID. */
export function servingDnsNames(namespace: string): string[] {
  return [
    "localhost",
    "dapr-sentry",
    `dapr-sentry.${namespace}.svc`,
    `dapr-sentry.${namespace}.svc.cluster.local`,
  ];
}

/** Issues a fresh serving identity (a new Ed25519 key, as Dapr v1.18 uses) from `bundle`. */
export function issueServingIdentity(
  bundle: TrustBundle,
  trustDomain: string,
  namespace: string,
  ttlMs: number,
  skewMs: number,
  now: Date,
): ServingIdentity {
  const key = generateKeyPairSync("ed25519").privateKey;
  const id = SpiffeId.forWorkload(trustDomain, namespace, "dapr-sentry");
  const issued = issueWorkloadCertificate(
    bundle,
    id,
    spkiOf(key),
    { ttlMs, skewMs },
    now,
    servingDnsNames(namespace),
  );
  return {
    keyPem: privateKeyToPem(key),
    chainPem: issued.chainPem,
    issuedAt: now,
    notAfter: issued.notAfter,
  };
}

/**
 * When to renew: half-way between issuance and NotAfter (as Dapr does). The back-dated
 * NotBefore is not used, so that a short TTL with a long skew does not renew constantly.
 */
export function renewalDelayMs(identity: ServingIdentity, now: Date): number {
  const half = identity.issuedAt.getTime() +
    (identity.notAfter.getTime() - identity.issuedAt.getTime()) / 2;
  return Math.max(1000, half - now.getTime());
}
