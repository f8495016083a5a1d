/**
 * Human- and machine-readable descriptions of certificates and certificate signing requests,
 * for `sentry inspect`. Everything here is pure (no I/O): subject and issuer, subject
 * alternative names and the SPIFFE ID, validity and time left relative to a given `now`, key
 * type, key usages, basic constraints, serial and fingerprints. The text forms of names and
 * extensions come from x509-text.ts; chain verification is chain-verification.ts.
 *
 * @module
 */
import { Buffer } from "node:buffer";
import { createHash, createPublicKey, type KeyObject } from "node:crypto";
import { CsrError, decodeCsr } from "./csr.ts";
import * as der from "./der.ts";
import { describeKey, signatureAlgorithmName, verifySignature } from "./keys.ts";
import { isCa, isSelfSigned, type ParsedCertificate, subjectKeyId } from "./parse.ts";
import { encodePem } from "./pem.ts";
import {
  decodeAuthorityKeyId,
  decodeBasicConstraints,
  decodeExtendedKeyUsage,
  decodeGeneralNames,
  decodeKeyUsage,
  EXTENSION_NAMES,
  type ExtensionSummary,
  formatName,
  noAltNames,
  spiffeIdOf,
  type SubjectAltNames,
} from "./x509-text.ts";

// ---------------------------------------------------------------------------------------------
// Formatting helpers

/** Bytes as uppercase hex pairs joined by `:` (as OpenSSL prints fingerprints and key IDs). */
export function colonHex(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0").toUpperCase()).join(":");
}

/** `openssl x509 -fingerprint -<hash>` of DER bytes: `AB:CD:...`. */
export function fingerprint(bytes: Uint8Array, hash: "sha256" | "sha1"): string {
  return colonHex(createHash(hash).update(bytes).digest());
}

/**
 * The serial as `openssl x509 -serial` prints it: uppercase hex, without the leading zero
 * byte DER adds to keep a positive INTEGER positive.
 */
export function formatSerial(serialHex: string): string {
  let hex = serialHex.toUpperCase();
  while (hex.length > 2 && hex.startsWith("00")) hex = hex.slice(2);
  return hex;
}

/**
 * A duration in its two largest units: `23h 59m`, `2d 3h`, `5m 12s`, `42s`, `2d` (a zero
 * second unit is dropped). Negative durations are formatted by magnitude; rounding is down.
 */
export function formatDuration(ms: number): string {
  let seconds = Math.floor(Math.abs(ms) / 1000);
  const units: Array<[string, number]> = [["d", 86_400], ["h", 3_600], ["m", 60], ["s", 1]];
  const parts: string[] = [];
  for (const [unit, size] of units) {
    const count = Math.floor(seconds / size);
    seconds -= count * size;
    if (parts.length > 0) {
      if (count > 0) parts.push(`${count}${unit}`);
      break;
    }
    if (count > 0) parts.push(`${count}${unit}`);
  }
  return parts.length > 0 ? parts.join(" ") : "0s";
}

/** The name of a signature algorithm OID (sentry's own table, then a few more), or the OID. */
export function signatureAlgorithmText(algorithmOid: string): string {
  const more: Record<string, string> = {
    "1.2.840.113549.1.1.4": "md5WithRSAEncryption",
    "1.2.840.113549.1.1.5": "sha1WithRSAEncryption",
    "1.2.840.113549.1.1.10": "rsassaPss",
    "1.2.840.10045.4.1": "ecdsa-with-SHA1",
    "1.3.101.113": "Ed448",
  };
  return signatureAlgorithmName(algorithmOid) ?? more[algorithmOid] ?? algorithmOid;
}

// ---------------------------------------------------------------------------------------------
// Certificates

/** Where `now` stands relative to a validity window. */
export type ValidityStatus = "valid" | "expired" | "not-yet-valid";

/** A validity window relative to `now`. */
export interface ValidityDescription {
  /** ISO 8601 (UTC). */
  notBefore: string;
  /** ISO 8601 (UTC). */
  notAfter: string;
  status: ValidityStatus;
  /** Whole seconds from `now` to NotAfter; negative once expired. */
  secondsLeft: number;
  /** Whole seconds from NotBefore to NotAfter. */
  lifetimeSeconds: number;
}

/** Describes a validity window at time `now`. */
export function describeValidity(
  notBefore: Date,
  notAfter: Date,
  now: Date,
): ValidityDescription {
  const status: ValidityStatus = now < notBefore
    ? "not-yet-valid"
    : now > notAfter
    ? "expired"
    : "valid";
  return {
    notBefore: notBefore.toISOString(),
    notAfter: notAfter.toISOString(),
    status,
    secondsLeft: Math.trunc((notAfter.getTime() - now.getTime()) / 1000),
    lifetimeSeconds: Math.trunc((notAfter.getTime() - notBefore.getTime()) / 1000),
  };
}

/** Everything `sentry inspect` shows about one certificate (JSON-ready, camelCase). */
export interface CertificateDescription {
  /** X.509 version (3 for every modern certificate). */
  version: number;
  /** Subject DN as text; empty string for the empty name (Dapr workload certificates). */
  subject: string;
  /** Issuer DN as text. */
  issuer: string;
  /** Serial as uppercase hex, like `openssl x509 -serial`. */
  serial: string;
  subjectAltNames: SubjectAltNames;
  /** The `spiffe://` URI SAN, or null. */
  spiffeId: string | null;
  validity: ValidityDescription;
  /** describeKey(): `ec-p256`, `ed25519`, `rsa-2048`, ... */
  keyType: string;
  /** Signature algorithm name (or OID). */
  signatureAlgorithm: string;
  /** BasicConstraints cA (false when absent). */
  ca: boolean;
  /** BasicConstraints pathLenConstraint; null when absent or unlimited. */
  pathLength: number | null;
  /** KeyUsage bit names; empty when the extension is absent. */
  keyUsage: string[];
  /** ExtendedKeyUsage names or OIDs; empty when the extension is absent. */
  extendedKeyUsage: string[];
  /** Subject key identifier as colon hex, or null. */
  subjectKeyId: string | null;
  /** Authority key identifier as colon hex, or null. */
  authorityKeyId: string | null;
  /** Same subject and issuer, and the signature verifies with its own key. */
  selfSigned: boolean;
  fingerprints: {
    /** SHA-256 of the DER, colon hex like `openssl x509 -fingerprint -sha256`. */
    sha256: string;
    /** SHA-1 of the DER, colon hex. */
    sha1: string;
  };
  /** SHA-256 of the SubjectPublicKeyInfo (matches the CSR's `publicKeySha256`). */
  publicKeySha256: string;
  extensions: ExtensionSummary[];
}

/** Certificate version from the TBSCertificate (`[0] INTEGER`, absent for v1). */
function versionOf(tbs: Uint8Array): number {
  const [first] = der.children(tbs, der.readElement(tbs));
  if (first?.tag !== 0xa0) return 1;
  const integer = der.readElement(tbs, first.contentStart, first.end);
  return (tbs[integer.end - 1] ?? 0) + 1;
}

/** Describes a parsed certificate at time `now`. Throws {@link der.DerError} on bad extensions. */
export function describeCertificate(cert: ParsedCertificate, now: Date): CertificateDescription {
  const ext = (oid: string) => cert.extensions.get(oid)?.value;
  const sanValue = ext("2.5.29.17");
  const subjectAltNames = sanValue ? decodeGeneralNames(sanValue) : noAltNames();
  const keyUsage = ext("2.5.29.15");
  const eku = ext("2.5.29.37");
  const bc = ext("2.5.29.19");
  const aki = ext("2.5.29.35");
  const ski = subjectKeyId(cert);
  const akiId = aki ? decodeAuthorityKeyId(aki) : undefined;
  return {
    version: versionOf(cert.tbs),
    subject: formatName(cert.subject),
    issuer: formatName(cert.issuer),
    serial: formatSerial(cert.serialHex),
    subjectAltNames,
    spiffeId: spiffeIdOf(subjectAltNames),
    validity: describeValidity(cert.notBefore, cert.notAfter, now),
    keyType: describeKey(cert.publicKey),
    signatureAlgorithm: signatureAlgorithmText(cert.signatureAlgorithm),
    ca: isCa(cert),
    pathLength: bc ? decodeBasicConstraints(bc).pathLength : null,
    keyUsage: keyUsage ? decodeKeyUsage(keyUsage) : [],
    extendedKeyUsage: eku ? decodeExtendedKeyUsage(eku) : [],
    subjectKeyId: ski ? colonHex(ski) : null,
    authorityKeyId: akiId ? colonHex(akiId) : null,
    selfSigned: isSelfSigned(cert),
    fingerprints: { sha256: fingerprint(cert.der, "sha256"), sha1: fingerprint(cert.der, "sha1") },
    publicKeySha256: fingerprint(cert.subjectPublicKeyInfo, "sha256"),
    extensions: [...cert.extensions].map(([oid, { critical }]) => ({
      oid,
      name: EXTENSION_NAMES[oid] ?? oid,
      critical,
    })),
  };
}

// ---------------------------------------------------------------------------------------------
// Certificate signing requests

/** A decoded PKCS#10 request (its signature not yet checked). */
export interface ParsedCsr {
  der: Buffer;
  /** The signed part (CertificationRequestInfo), byte for byte. */
  info: Uint8Array;
  /** Encoded subject Name. */
  subject: Buffer;
  subjectPublicKeyInfo: Buffer;
  publicKey: KeyObject;
  signatureAlgorithm: string;
  signature: Uint8Array;
  /** Extensions from the PKCS#9 extensionRequest attribute, by OID. */
  extensions: Map<string, { critical: boolean; value: Uint8Array }>;
  /** OIDs of all attributes. */
  attributes: string[];
}

const EXTENSION_REQUEST = "1.2.840.113549.1.9.14";

/** Decodes a DER PKCS#10 request; throws {@link der.DerError} when malformed. */
export function parseCsr(bytes: Uint8Array): ParsedCsr {
  const root = der.expectElement(bytes, der.Tag.SEQUENCE);
  if (root.end !== bytes.length) throw new der.DerError("trailing data after the request");
  const [info, algorithm, signature, ...rest] = der.children(bytes, root);
  if (
    info?.tag !== der.Tag.SEQUENCE || algorithm?.tag !== der.Tag.SEQUENCE ||
    signature?.tag !== der.Tag.BIT_STRING || rest.length > 0
  ) {
    throw new der.DerError("malformed certificate signing request");
  }
  const [version, subject, spki, attributes] = der.children(bytes, info);
  if (
    version?.tag !== der.Tag.INTEGER || subject?.tag !== der.Tag.SEQUENCE ||
    spki?.tag !== der.Tag.SEQUENCE
  ) {
    throw new der.DerError("malformed certificationRequestInfo");
  }
  const [algorithmOid] = der.children(bytes, algorithm);
  if (algorithmOid?.tag !== der.Tag.OID) throw new der.DerError("malformed signature algorithm");
  const extensions: ParsedCsr["extensions"] = new Map();
  const attributeOids: string[] = [];
  if (attributes?.tag === 0xa0) {
    for (const attribute of der.children(bytes, attributes)) {
      const [type, values] = der.children(bytes, attribute);
      if (type?.tag !== der.Tag.OID || values?.tag !== der.Tag.SET) {
        throw new der.DerError("malformed request attribute");
      }
      const oid = der.decodeOid(der.contentOf(bytes, type));
      attributeOids.push(oid);
      if (oid !== EXTENSION_REQUEST) continue;
      for (const list of der.children(bytes, values)) {
        for (const extension of der.children(bytes, list)) {
          const parts = der.children(bytes, extension);
          if (parts.length < 2 || parts[0].tag !== der.Tag.OID) {
            throw new der.DerError("malformed requested extension");
          }
          extensions.set(der.decodeOid(der.contentOf(bytes, parts[0])), {
            critical: parts.length === 3 && bytes[parts[1].contentStart] !== 0,
            value: der.contentOf(bytes, parts[parts.length - 1]),
          });
        }
      }
    }
  }
  const spkiBytes = Buffer.from(der.bytesOf(bytes, spki));
  return {
    der: Buffer.from(bytes),
    info: der.bytesOf(bytes, info),
    subject: Buffer.from(der.bytesOf(bytes, subject)),
    subjectPublicKeyInfo: spkiBytes,
    publicKey: createPublicKey({ key: spkiBytes, format: "der", type: "spki" }),
    signatureAlgorithm: der.decodeOid(der.contentOf(bytes, algorithmOid)),
    signature: der.contentOf(bytes, signature).subarray(1),
    extensions,
    attributes: attributeOids,
  };
}

/** Everything `sentry inspect` shows about a CSR (JSON-ready, camelCase). */
export interface CsrDescription {
  /** Subject DN as text (Dapr's clients send an empty one). */
  subject: string;
  keyType: string;
  signatureAlgorithm: string;
  /** The self-signature (proof of possession) verifies with the request's key. */
  signatureValid: boolean;
  /** SANs from the extensionRequest attribute (empty lists without one). */
  subjectAltNames: SubjectAltNames;
  spiffeId: string | null;
  /** Extensions requested through extensionRequest. */
  extensions: ExtensionSummary[];
  /** SHA-256 of the SubjectPublicKeyInfo (matches the issued certificate's `publicKeySha256`). */
  publicKeySha256: string;
  /** Whether sentry would sign it (key type, algorithm, signature), and why not. */
  acceptedBySentry: boolean;
  rejection: string | null;
}

/** Describes a parsed CSR, checking its self-signature and whether sentry would accept it. */
export function describeCsr(csr: ParsedCsr): CsrDescription {
  const san = csr.extensions.get("2.5.29.17");
  const subjectAltNames = san ? decodeGeneralNames(san.value) : noAltNames();
  let rejection: string | null = null;
  try {
    decodeCsr(encodePem("CERTIFICATE REQUEST", csr.der));
  } catch (error) {
    rejection = error instanceof CsrError ? error.message : String(error);
  }
  return {
    subject: formatName(csr.subject),
    keyType: describeKey(csr.publicKey),
    signatureAlgorithm: signatureAlgorithmText(csr.signatureAlgorithm),
    signatureValid: verifySignature(csr.signatureAlgorithm, csr.publicKey, csr.info, csr.signature),
    subjectAltNames,
    spiffeId: spiffeIdOf(subjectAltNames),
    extensions: [...csr.extensions].map(([oid, { critical }]) => ({
      oid,
      name: EXTENSION_NAMES[oid] ?? oid,
      critical,
    })),
    publicKeySha256: fingerprint(csr.subjectPublicKeyInfo, "sha256"),
    acceptedBySentry: rejection === null,
    rejection,
  };
}
