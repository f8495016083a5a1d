/**
 * The signer: turns a verified public key and a SPIFFE ID into a workload certificate chain
 * under the current trust bundle. Beyond Dapr, the certificate never outlives its issuer, and
 * an issuer outside its validity window refuses to sign.
 *
 * @module
 */
import type { TrustBundle } from "./bundle.ts";
import { assembleCertificate } from "../x509/certificate.ts";
import { encodePem } from "../x509/pem.ts";
import { encodeWorkloadTbs } from "./workload-tbs.ts";
import type { SpiffeId } from "./spiffe.ts";

/** What signing needs from a trust bundle (a whole {@link TrustBundle} has it). */
export type SigningBundle = Pick<
  TrustBundle,
  "issuer" | "issuerNotBefore" | "issuerNotAfter" | "issuerChainPem"
>;

/** Lifetime settings for workload certificates (from the Configuration). */
export interface WorkloadTiming {
  /** Requested lifetime, milliseconds. */
  ttlMs: number;
  /** NotBefore back-dating, milliseconds. */
  skewMs: number;
}

/** The issuer cannot sign right now (expired or not yet valid). */
export class SigningError extends Error {
  override name = "SigningError";
}

function wholeSeconds(ms: number): number {
  return Math.floor(ms / 1000) * 1000;
}

/** A signed workload certificate. */
export interface IssuedCertificate {
  /** Leaf PEM followed by the issuer chain PEM. */
  chainPem: string;
  /** DER of the leaf alone. */
  leafDer: Uint8Array;
  notBefore: Date;
  notAfter: Date;
}

/** What an issuer hands back across threads: the chain (leaf first) and the leaf's NotAfter. */
export interface IssuedChain {
  /** The chain's PEM text, UTF-8, in an ArrayBuffer of its own (so it can be transferred). */
  chain: Uint8Array;
  notAfter: Date;
}

const utf8 = new TextEncoder();

/** `issued` as an {@link IssuedChain}: the bytes a response carries, encoded once. */
export function issuedChain(issued: IssuedCertificate): IssuedChain {
  return { chain: utf8.encode(issued.chainPem), notAfter: issued.notAfter };
}

/** A workload certificate's TBSCertificate and validity, waiting for its signature. */
interface UnsignedWorkload {
  tbs: Uint8Array;
  notBefore: Date;
  notAfter: Date;
}

function prepareWorkload(
  bundle: SigningBundle,
  id: SpiffeId,
  spki: Uint8Array,
  timing: WorkloadTiming,
  now: Date,
  dnsNames: readonly string[] = [],
): UnsignedWorkload {
  if (now > bundle.issuerNotAfter) {
    throw new SigningError(
      `the issuer certificate expired at ${bundle.issuerNotAfter.toISOString()}; ` +
        `rotate the issuer before more certificates can be signed`,
    );
  }
  if (now < bundle.issuerNotBefore) {
    throw new SigningError(
      `the issuer certificate is not valid until ${bundle.issuerNotBefore.toISOString()}`,
    );
  }
  // X.509 times have whole seconds: round here so that valid_until equals the leaf's NotAfter.
  const notBefore = new Date(
    wholeSeconds(Math.max(now.getTime() - timing.skewMs, bundle.issuerNotBefore.getTime())),
  );
  const notAfter = new Date(
    wholeSeconds(Math.min(now.getTime() + timing.ttlMs, bundle.issuerNotAfter.getTime())),
  );
  const tbs = encodeWorkloadTbs(id, spki, bundle.issuer, { notBefore, notAfter }, dnsNames);
  return { tbs, notBefore, notAfter };
}

function finishWorkload(
  bundle: SigningBundle,
  unsigned: UnsignedWorkload,
  signature: Uint8Array,
): IssuedCertificate {
  const leafDer = assembleCertificate(unsigned.tbs, bundle.issuer.key, signature);
  return {
    chainPem: encodePem("CERTIFICATE", leafDer) + bundle.issuerChainPem,
    leafDer,
    notBefore: unsigned.notBefore,
    notAfter: unsigned.notAfter,
  };
}

/**
 * Issues a workload certificate for `id` and the public key `spki` (DER SubjectPublicKeyInfo)
 * at time `now`. NotAfter is `now + ttl`, clamped to the issuer's NotAfter.
 */
export function issueWorkloadCertificate(
  bundle: SigningBundle,
  id: SpiffeId,
  spki: Uint8Array,
  timing: WorkloadTiming,
  now: Date,
  dnsNames: readonly string[] = [],
): IssuedCertificate {
  const unsigned = prepareWorkload(bundle, id, spki, timing, now, dnsNames);
  return finishWorkload(bundle, unsigned, bundle.issuer.key.sign(unsigned.tbs));
}

/**
 * The same as {@link issueWorkloadCertificate}, with the signature computed on node:crypto's
 * thread pool: what the server uses, so that the event loop keeps serving other requests.
 */
export async function issueWorkloadCertificateAsync(
  ...args: Parameters<typeof issueWorkloadCertificate>
): Promise<IssuedCertificate> {
  const bundle = args[0];
  const unsigned = prepareWorkload(...args);
  return finishWorkload(bundle, unsigned, await bundle.issuer.key.signAsync(unsigned.tbs));
}
