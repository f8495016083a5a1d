/**
 * Dapr's three certificate profiles (root, issuer, workload; compat spec §3) and sentry's own
 * serving certificate. Each function turns the facts of one certificate into a signed DER
 * certificate; nothing here reads clocks, files or flags.
 *
 * @module
 */
import type { Buffer } from "node:buffer";
import {
  authorityKeyIdentifier,
  basicConstraints,
  encodeName,
  extendedKeyUsage,
  ExtKeyUsage,
  KeyUsage,
  keyUsage,
  randomSerial,
  signCertificate,
  subjectAltName,
  subjectKeyIdentifier,
} from "./certificate.ts";
import { keyIdentifier, type SigningKey } from "./keys.ts";
import type { SpiffeId } from "./spiffe.ts";

/** When a certificate starts and stops being valid. */
export interface Validity {
  notBefore: Date;
  notAfter: Date;
}

/** A self-signed root: `O=<trust domain>`, CA without path length limit. */
export function createRootCertificate(
  trustDomain: string,
  rootKey: SigningKey,
  validity: Validity,
): Buffer {
  const name = encodeName([["O", trustDomain]]);
  return signCertificate({
    serial: randomSerial(),
    issuer: name,
    subject: name,
    ...validity,
    subjectPublicKeyInfo: rootKey.spki,
    extensions: [
      keyUsage(KeyUsage.digitalSignature, KeyUsage.keyCertSign),
      basicConstraints(true),
      subjectKeyIdentifier(keyIdentifier(rootKey.spki)),
    ],
  }, rootKey);
}

/** The signer's side of an issued certificate: its key and its certificate's exact names. */
export interface IssuerIdentity {
  key: SigningKey;
  /** The signer certificate's encoded subject (becomes the issued certificate's issuer). */
  subject: Uint8Array;
  /** The signer's key identifier (becomes the AuthorityKeyIdentifier). */
  keyId: Uint8Array;
}

/** An intermediate: `O=spiffe://<td>/ns/<namespace>/dapr-sentry`, signed by the root. */
export function createIssuerCertificate(
  sentryId: SpiffeId,
  issuerSpki: Uint8Array,
  root: IssuerIdentity,
  validity: Validity,
): Buffer {
  return signCertificate({
    serial: randomSerial(),
    issuer: root.subject,
    subject: encodeName([["O", sentryId.toString()]]),
    ...validity,
    subjectPublicKeyInfo: issuerSpki,
    extensions: [
      keyUsage(KeyUsage.digitalSignature, KeyUsage.keyCertSign, KeyUsage.cRLSign),
      basicConstraints(true),
      subjectKeyIdentifier(keyIdentifier(issuerSpki)),
      authorityKeyIdentifier(root.keyId),
    ],
  }, root.key);
}

const EMPTY_NAME = encodeName([]);

/**
 * A workload certificate: empty subject, one critical URI SAN with the SPIFFE ID (plus DNS
 * names only for sentry's own serving certificate), critical KeyUsage digitalSignature,
 * EKU serverAuth + clientAuth, no BasicConstraints, AKI = issuer's key id.
 */
export function createWorkloadCertificate(
  id: SpiffeId,
  workloadSpki: Uint8Array,
  issuer: IssuerIdentity,
  validity: Validity,
  dnsNames: readonly string[] = [],
): Buffer {
  return signCertificate({
    serial: randomSerial(),
    issuer: issuer.subject,
    subject: EMPTY_NAME,
    ...validity,
    subjectPublicKeyInfo: workloadSpki,
    extensions: [
      keyUsage(KeyUsage.digitalSignature),
      extendedKeyUsage(ExtKeyUsage.serverAuth, ExtKeyUsage.clientAuth),
      subjectAltName({ uris: [id.toString()], dnsNames }, true),
      authorityKeyIdentifier(issuer.keyId),
    ],
  }, issuer.key);
}
