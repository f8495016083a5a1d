/**
 * Dapr's three certificate profiles (root, issuer, workload; docs/compatibility.md#certificate-profiles) and sentry's own
 * serving certificate. Each function turns the facts of one certificate into a signed DER
 * certificate; nothing here reads clocks, files or flags.
 *
 * @module
 */
import type { Buffer } from "node:buffer";
import {
  type AltNames,
  assembleCertificate,
  authorityKeyIdentifier,
  basicConstraints,
  EMPTY_NAME,
  encodeName,
  extendedKeyUsage,
  type IssuerIdentity,
  KeyUsage,
  keyUsage,
  randomSerial,
  signCertificate,
  subjectAltName,
  subjectKeyIdentifier,
  type Validity,
} from "../x509/certificate.ts";
import { keyIdentifier, type SigningKey } from "../x509/keys.ts";
import { SpiffeId } from "./spiffe.ts";
import { nameAttribute } from "../x509/parse.ts";
import { encodeWorkloadTbs } from "./workload-tbs.ts";

/** What distinguishes one CA certificate from another. */
export interface CaCertificateOptions {
  /** Encoded subject Name. */
  subject: Uint8Array;
  /** The certified key; for a self-signed root, the signer's own. */
  subjectPublicKeyInfo: Uint8Array;
  /** The signer; omitted for a self-signed root (signed by `selfKey`). */
  issuer?: IssuerIdentity;
  /** The root's own key, when `issuer` is omitted. */
  selfKey?: SigningKey;
  validity: Validity;
  keyUsages: number[];
  pathLength?: number;
}

/** A CA certificate: critical KeyUsage, critical BasicConstraints CA, SKI, and AKI when issued. */
export function createCaCertificate(options: CaCertificateOptions): Buffer {
  const signer = options.issuer?.key ?? options.selfKey;
  if (!signer) throw new Error("a CA certificate needs an issuer or its own key");
  return signCertificate({
    serial: randomSerial(),
    issuer: options.issuer?.subject ?? options.subject,
    subject: options.subject,
    ...options.validity,
    subjectPublicKeyInfo: options.subjectPublicKeyInfo,
    extensions: [
      keyUsage(...options.keyUsages),
      basicConstraints(true, options.pathLength),
      subjectKeyIdentifier(keyIdentifier(options.subjectPublicKeyInfo)),
      ...(options.issuer ? [authorityKeyIdentifier(options.issuer.keyId)] : []),
    ],
  }, signer);
}

/** KeyUsage of a root in Dapr's profile. */
export const ROOT_KEY_USAGES: readonly number[] = [KeyUsage.digitalSignature, KeyUsage.keyCertSign];

/** KeyUsage of an issuer (intermediate) in Dapr's profile. */
export const ISSUER_KEY_USAGES: readonly number[] = [
  KeyUsage.digitalSignature,
  KeyUsage.keyCertSign,
  KeyUsage.cRLSign,
];

/** A self-signed root: `O=<trust domain>`, CA without path length limit (Dapr's profile). */
export function createRootCertificate(
  trustDomain: string,
  rootKey: SigningKey,
  validity: Validity,
): Buffer {
  return createCaCertificate({
    subject: encodeName([["O", trustDomain]]),
    subjectPublicKeyInfo: rootKey.spki,
    selfKey: rootKey,
    validity,
    keyUsages: [...ROOT_KEY_USAGES],
  });
}

/** An intermediate: `O=spiffe://<td>/ns/<namespace>/dapr-sentry`, signed by the root (Dapr's profile). */
export function createIssuerCertificate(
  sentryId: SpiffeId,
  issuerSpki: Uint8Array,
  root: IssuerIdentity,
  validity: Validity,
): Buffer {
  return createCaCertificate({
    subject: encodeName([["O", sentryId.toString()]]),
    subjectPublicKeyInfo: issuerSpki,
    issuer: root,
    validity,
    keyUsages: [...ISSUER_KEY_USAGES],
  });
}

/** What distinguishes one end-entity certificate from another. */
export interface LeafCertificateOptions {
  /** Encoded subject Name (empty: the SAN extension becomes critical). */
  subject?: Uint8Array;
  subjectPublicKeyInfo: Uint8Array;
  issuer: IssuerIdentity;
  validity: Validity;
  names: AltNames;
  extendedKeyUsages: string[];
  keyUsages: number[];
}

/** An end-entity certificate: no BasicConstraints, critical KeyUsage, EKU, SANs, AKI. */
export function createLeafCertificate(options: LeafCertificateOptions): Buffer {
  const subject = options.subject ?? EMPTY_NAME;
  const emptySubject = subject.length === EMPTY_NAME.length;
  return signCertificate({
    serial: randomSerial(),
    issuer: options.issuer.subject,
    subject,
    ...options.validity,
    subjectPublicKeyInfo: options.subjectPublicKeyInfo,
    extensions: [
      keyUsage(...options.keyUsages),
      ...(options.extendedKeyUsages.length > 0
        ? [extendedKeyUsage(...options.extendedKeyUsages)]
        : []),
      subjectAltName(options.names, emptySubject),
      authorityKeyIdentifier(options.issuer.keyId),
    ],
  }, options.issuer.key);
}

/** A signed workload certificate (see {@link encodeWorkloadTbs} for the profile). */
export function createWorkloadCertificate(
  id: SpiffeId,
  workloadSpki: Uint8Array,
  issuer: IssuerIdentity,
  validity: Validity,
  dnsNames: readonly string[] = [],
): Buffer {
  const tbs = encodeWorkloadTbs(id, workloadSpki, issuer, validity, dnsNames);
  return assembleCertificate(tbs, issuer.key, issuer.key.sign(tbs));
}

/**
 * Reads back what a Dapr-profile CA certificate says about its trust domain: the issuer
 * profile's `O=spiffe://<td>/ns/<namespace>/dapr-sentry`, or the root profile's `O=<td>`.
 */
export function daprIdentityOf(subject: Uint8Array): { trustDomain?: string; namespace?: string } {
  const organization = nameAttribute(subject, "2.5.4.10") ?? "";
  try {
    const id = SpiffeId.parse(organization);
    const match = /^\/ns\/([^/]+)\/dapr-sentry$/.exec(id.path);
    return { trustDomain: id.trustDomain, namespace: match?.[1] };
  } catch {
    return /^[a-z0-9._-]+$/.test(organization) ? { trustDomain: organization } : {};
  }
}
