/**
 * The trust bundle: trust anchors (`ca.crt`), the issuer chain (`issuer.crt`) and the issuer
 * key (`issuer.key`). This module validates a bundle as Dapr does, and more strictly (docs/compatibility.md#trust-bundle-validation),
 * with a message naming the failed check, and generates a fresh root + issuer.
 *
 * @module
 */
import type { KeyObject } from "node:crypto";
import type { DerError } from "../x509/der.ts";
import {
  type CaKeyAlgorithm,
  generateCaKey,
  keyIdentifier,
  loadPrivateKey,
  privateKeyToPem,
  SigningKey,
  spkiOf,
} from "../x509/keys.ts";
import {
  hasKeyUsage,
  isCa,
  isSelfSigned,
  isSignedBy,
  parseCertificate,
  type ParsedCertificate,
  subjectKeyId,
} from "../x509/parse.ts";
import {
  decodePem,
  encodeCertificates,
  PEM_CERTIFICATE,
  PEM_PRIVATE_KEY,
  pemProblem,
} from "../x509/pem.ts";
import { createIssuerCertificate, createRootCertificate } from "./profiles.ts";
import { SpiffeId } from "./spiffe.ts";
import { type IssuerIdentity, KeyUsage } from "../x509/certificate.ts";
import type { JwtSigningKey } from "./jwt-keys.ts";

/** The three PEM texts of a bundle, as stored (plus the root key when an operator keeps it). */
export interface BundlePem {
  /** Trust anchors: one or more self-signed CA certificates. */
  caCrt: string;
  /** Issuer certificate, then any intermediates up to (not including) the root. */
  issuerCrt: string;
  /** Issuer private key. */
  issuerKey: string;
  /** Root private key, only when the operator asked to keep it. */
  caKey?: string;
  /** The JWT signing key and its JWKS, when the store holds them (both or neither). */
  jwt?: JwtKeyPem;
  /** A root rotation in progress (see root-rotation.ts); all its parts or none are stored. */
  rotation?: RotationPem;
}

/** The stored texts of a root rotation in progress (self-hosted: files beside the bundle). */
export interface RotationPem {
  /** `rotation-state.json`: phase and times. */
  stateJson: string;
  /** `rotation-ca.crt`: the new root. */
  caCrt: string;
  /** `rotation-issuer.crt`: the new issuer, signed by the new root. */
  issuerCrt: string;
  /** `rotation-issuer.key`: its key. */
  issuerKey: string;
  /** `rotation-ca.key`: the new root's key, only when the operator keeps root keys. */
  caKey?: string;
}

/** True when two bundles hold the same rotation texts (or neither holds any). */
export function sameRotationPem(a: RotationPem | undefined, b: RotationPem | undefined): boolean {
  return (a?.stateJson ?? "") === (b?.stateJson ?? "") && (a?.caCrt ?? "") === (b?.caCrt ?? "") &&
    (a?.issuerCrt ?? "") === (b?.issuerCrt ?? "") &&
    (a?.issuerKey ?? "") === (b?.issuerKey ?? "") && (a?.caKey ?? "") === (b?.caKey ?? "");
}

/** The stored texts of the JWT-SVID signing key (`jwt.key`) and its key set (`jwks.json`). */
export interface JwtKeyPem {
  keyPem: string;
  jwksJson: string;
}

/** True when two bundles hold the same JWT texts (or neither holds any). */
export function sameJwtPem(a: JwtKeyPem | undefined, b: JwtKeyPem | undefined): boolean {
  return (a?.keyPem ?? "") === (b?.keyPem ?? "") && (a?.jwksJson ?? "") === (b?.jwksJson ?? "");
}

/**
 * True when two bundles hold the same texts, JWT key material included. With `signingOnly`, the
 * root key and the rotation parts are not compared (they take no part in signing, so a change
 * of them alone is no reason to reload).
 */
export function sameBundlePem(
  a: BundlePem,
  b: BundlePem,
  options: { signingOnly?: boolean } = {},
): boolean {
  return a.caCrt === b.caCrt && a.issuerCrt === b.issuerCrt && a.issuerKey === b.issuerKey &&
    sameJwtPem(a.jwt, b.jwt) &&
    (options.signingOnly ||
      ((a.caKey ?? "") === (b.caKey ?? "") && sameRotationPem(a.rotation, b.rotation)));
}

/** File names used in messages about a bundle (they follow the `--issuer-*-filename` flags). */
export interface BundleNames {
  caCrt: string;
  issuerCrt: string;
  issuerKey: string;
}

/** The default Dapr file names. */
export const DEFAULT_BUNDLE_NAMES: BundleNames = {
  caCrt: "ca.crt",
  issuerCrt: "issuer.crt",
  issuerKey: "issuer.key",
};

/** A bundle failed a check; the message names the file and the check. */
export class BundleError extends Error {
  override name = "BundleError";
}

/** A validated bundle, ready to sign with. Immutable. */
export interface TrustBundle {
  readonly pem: BundlePem;
  readonly anchors: readonly ParsedCertificate[];
  /** Issuer first, then intermediates; never a self-signed certificate. */
  readonly issuerChain: readonly ParsedCertificate[];
  /** PEM of {@link issuerChain}, appended to every workload certificate. */
  readonly issuerChainPem: string;
  /** PEM of all anchors, returned as the response's trust chain. */
  readonly anchorsPem: string;
  /** Signing identity of the issuer. */
  readonly issuer: IssuerIdentity;
  readonly issuerNotBefore: Date;
  readonly issuerNotAfter: Date;
  /** The earliest NotAfter among the trust anchors. */
  readonly rootNotAfter: Date;
  /** The JWT-SVID signing key, when JWT issuing is on (see jwt-bundle.ts). */
  readonly jwt?: JwtSigningKey;
}

/** The parenthesised detail of a {@link pemProblem} ("(found a PRIVATE KEY block)"), spaced. */
function detailOf(problem: string | undefined): string {
  const detail = problem?.match(/\(.*\)$/)?.[0];
  return detail ? ` ${detail}` : "";
}

function parseCertificates(pem: string, file: string): ParsedCertificate[] {
  const blocks = decodePem(pem).filter((block) => block.label === "CERTIFICATE");
  if (blocks.length === 0) {
    throw new BundleError(
      `${file} contains no PEM CERTIFICATE block${detailOf(pemProblem(pem, PEM_CERTIFICATE))}`,
    );
  }
  return blocks.map((block, index) => {
    try {
      return parseCertificate(block.der);
    } catch (error) {
      throw new BundleError(
        `${file}: certificate #${index + 1} cannot be parsed: ${(error as DerError).message}`,
      );
    }
  });
}

function loadIssuerKey(pem: string, file: string): KeyObject {
  const block = decodePem(pem)[0];
  const accepted = ["PRIVATE KEY", "EC PRIVATE KEY", "RSA PRIVATE KEY"];
  if (!block || !accepted.includes(block.label)) {
    throw new BundleError(
      `${file} must hold a PEM "PRIVATE KEY", "EC PRIVATE KEY" or "RSA PRIVATE KEY" block` +
        detailOf(pemProblem(pem, PEM_PRIVATE_KEY)),
    );
  }
  try {
    return loadPrivateKey(pem);
  } catch (error) {
    throw new BundleError(`${file}: private key cannot be parsed: ${(error as Error).message}`, {
      cause: error,
    });
  }
}

function checkValidAt(cert: ParsedCertificate, what: string, now: Date): void {
  if (now < cert.notBefore) {
    throw new BundleError(`${what} is not valid yet (NotBefore ${cert.notBefore.toISOString()})`);
  }
  if (now > cert.notAfter) {
    throw new BundleError(`${what} has expired (NotAfter ${cert.notAfter.toISOString()})`);
  }
}

/**
 * Validates a bundle at time `now` and prepares it for signing. Checks, in order: every
 * anchor is a self-signed CA; the issuer chain links verify (a trailing self-signed root is
 * dropped); the issuer is a CA allowed to sign certificates and is not a root itself; the key
 * matches the issuer certificate; the chain reaches an anchor; every certificate on the path
 * is valid at `now`. Certificates after the first one an anchor signed are a bridge to an older
 * root (see root-rotation.ts): linked and CA, but not required to be valid; expired ones are not
 * served.
 */
export function validateBundle(
  pem: BundlePem,
  now: Date,
  names: BundleNames = DEFAULT_BUNDLE_NAMES,
): TrustBundle {
  const anchors = parseCertificates(pem.caCrt, names.caCrt);
  anchors.forEach((anchor, index) => {
    const what = `${names.caCrt}: certificate #${index + 1}`;
    if (!isSelfSigned(anchor)) throw new BundleError(`${what} is not a self-signed root`);
    if (!isCa(anchor)) {
      throw new BundleError(`${what} is not a CA (BasicConstraints CA:TRUE missing)`);
    }
  });

  const chain = parseCertificates(pem.issuerCrt, names.issuerCrt);
  if (chain.length > 1 && isSelfSigned(chain[chain.length - 1])) chain.pop();
  const issuerCert = chain[0];
  if (isSelfSigned(issuerCert)) {
    throw new BundleError(
      `${names.issuerCrt} holds a self-signed root, not an issuer: the issuer must be an ` +
        `intermediate signed by a certificate in ${names.caCrt}`,
    );
  }
  for (let i = 0; i + 1 < chain.length; i++) {
    if (!isSignedBy(chain[i], chain[i + 1])) {
      throw new BundleError(
        `${names.issuerCrt}: certificate #${i + 1} is not signed by certificate #${
          i + 2
        } (broken chain)`,
      );
    }
  }
  chain.forEach((cert, index) => {
    const what = `${names.issuerCrt}: certificate #${index + 1}`;
    if (!isCa(cert)) {
      throw new BundleError(`${what} is not a CA (BasicConstraints CA:TRUE missing)`);
    }
    if (hasKeyUsage(cert, KeyUsage.keyCertSign) === false) {
      throw new BundleError(`${what} may not sign certificates (KeyUsage lacks keyCertSign)`);
    }
  });

  const key = loadIssuerKey(pem.issuerKey, names.issuerKey);
  if (!spkiOf(key).equals(issuerCert.subjectPublicKeyInfo)) {
    throw new BundleError(
      `${names.issuerKey} does not match the certificate in ${names.issuerCrt} (different public key)`,
    );
  }

  // The shortest prefix of the chain that reaches an anchor is the path; certificates after it
  // are a bridge to an older root (root rotation), served while valid and never required.
  let anchor: ParsedCertificate | undefined;
  let pathLength = 0;
  while (!anchor && pathLength < chain.length) {
    const cert = chain[pathLength++];
    anchor = anchors.find((candidate) => isSignedBy(cert, candidate));
  }
  if (!anchor) {
    throw new BundleError(
      `${names.issuerCrt} does not chain to any trust anchor in ${names.caCrt}`,
    );
  }
  chain.slice(0, pathLength).forEach((cert, index) =>
    checkValidAt(cert, `${names.issuerCrt}: certificate #${index + 1}`, now)
  );
  checkValidAt(anchor, `${names.caCrt}: the root of the issuer`, now);
  const served = chain.filter((cert, index) => index < pathLength || cert.notAfter > now);

  let signingKey: SigningKey;
  try {
    signingKey = new SigningKey(key);
  } catch (error) {
    throw new BundleError(`${names.issuerKey}: ${(error as Error).message}`, { cause: error });
  }
  return {
    pem,
    anchors,
    issuerChain: served,
    issuerChainPem: encodeCertificates(served.map((cert) => cert.der)),
    anchorsPem: encodeCertificates(anchors.map((cert) => cert.der)),
    issuer: {
      key: signingKey,
      subject: issuerCert.subject,
      keyId: subjectKeyId(issuerCert) ?? keyIdentifier(issuerCert.subjectPublicKeyInfo),
    },
    issuerNotBefore: issuerCert.notBefore,
    issuerNotAfter: issuerCert.notAfter,
    rootNotAfter: new Date(Math.min(...anchors.map((cert) => cert.notAfter.getTime()))),
  };
}

/** When the parts of a bundle expire, read without validating anything else. */
export interface BundleLifetimes {
  /** The earliest NotAfter among the trust anchors. */
  rootNotAfter: Date;
  issuerNotBefore: Date;
  issuerNotAfter: Date;
}

/** Reads the validity of the anchors and the issuer (works on expired bundles too). */
export function bundleLifetimes(
  pem: BundlePem,
  names: BundleNames = DEFAULT_BUNDLE_NAMES,
): BundleLifetimes {
  const anchors = parseCertificates(pem.caCrt, names.caCrt);
  const [issuer] = parseCertificates(pem.issuerCrt, names.issuerCrt);
  return {
    rootNotAfter: new Date(Math.min(...anchors.map((cert) => cert.notAfter.getTime()))),
    issuerNotBefore: issuer.notBefore,
    issuerNotAfter: issuer.notAfter,
  };
}

/** What a freshly generated bundle looks like. */
export interface GenerateOptions {
  trustDomain: string;
  /** Namespace of sentry, part of the issuer's subject. */
  namespace: string;
  algorithm: CaKeyAlgorithm;
  now: Date;
  /** Lifetime of the root (and of the issuer unless `issuerTtlMs` is given), in milliseconds. */
  ttlMs: number;
  /** Lifetime of the issuer, in milliseconds; never beyond the root's NotAfter. */
  issuerTtlMs?: number;
  /** Back-dating of NotBefore, in milliseconds. */
  skewMs: number;
  /** Also return the root key (for stores that keep it). */
  keepRootKey?: boolean;
}

/** A root certificate with its signing key. */
export interface RootCa {
  certificate: ParsedCertificate;
  key: SigningKey;
}

/** Generates a self-signed root `O=<trust domain>` (Dapr's root profile). */
export function generateRoot(
  options: Pick<GenerateOptions, "trustDomain" | "algorithm" | "now" | "ttlMs" | "skewMs">,
): RootCa {
  const key = new SigningKey(generateCaKey(options.algorithm));
  const der = createRootCertificate(options.trustDomain, key, {
    notBefore: new Date(options.now.getTime() - options.skewMs),
    notAfter: new Date(options.now.getTime() + options.ttlMs),
  });
  return { certificate: parseCertificate(der), key };
}

/** Loads a root from the anchors in `certsPem` and a key, picking the anchor the key belongs to. */
export function rootFromPem(
  certsPem: string,
  keyPem: string,
  names = { cert: "ca.crt", key: "ca.key" },
): RootCa {
  const key = loadIssuerKey(keyPem, names.key);
  const spki = spkiOf(key);
  const certificate = parseCertificates(certsPem, names.cert)
    .find((candidate) => candidate.subjectPublicKeyInfo.equals(spki));
  if (!certificate) {
    throw new BundleError(`${names.key} does not belong to any certificate in ${names.cert}`);
  }
  return { certificate, key: new SigningKey(key) };
}

/**
 * Issues a new issuer (Dapr's issuer profile) under `root`: a fresh key of `algorithm`,
 * valid for `ttlMs` but never beyond the root's NotAfter. Returns its PEMs.
 */
export function issueIssuer(
  root: RootCa,
  options: Pick<GenerateOptions, "trustDomain" | "namespace" | "algorithm" | "now" | "skewMs"> & {
    ttlMs: number;
  },
): { issuerCrt: string; issuerKey: string } {
  const issuerKey = generateCaKey(options.algorithm);
  const sentryId = SpiffeId.forWorkload(options.trustDomain, options.namespace, "dapr-sentry");
  const notAfter = Math.min(
    options.now.getTime() + options.ttlMs,
    root.certificate.notAfter.getTime(),
  );
  const issuerCert = createIssuerCertificate(sentryId, spkiOf(issuerKey), {
    key: root.key,
    subject: root.certificate.subject,
    keyId: subjectKeyId(root.certificate) ?? keyIdentifier(root.certificate.subjectPublicKeyInfo),
  }, { notBefore: new Date(options.now.getTime() - options.skewMs), notAfter: new Date(notAfter) });
  return { issuerCrt: encodeCertificates([issuerCert]), issuerKey: privateKeyToPem(issuerKey) };
}

/** Generates a root and an issuer (Dapr's profiles) and returns their PEMs. */
export function generateBundle(options: GenerateOptions): BundlePem {
  const root = generateRoot(options);
  const issuer = issueIssuer(root, { ...options, ttlMs: options.issuerTtlMs ?? options.ttlMs });
  return {
    caCrt: encodeCertificates([root.certificate.der]),
    ...issuer,
    ...(options.keepRootKey ? { caKey: privateKeyToPem(root.key.privateKey) } : {}),
  };
}
