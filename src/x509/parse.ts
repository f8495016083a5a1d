/**
 * Decoding of X.509 certificates into the fields sentry checks (names, validity, key,
 * extensions) and the byte ranges it reuses verbatim (subject, SubjectPublicKeyInfo).
 * Signature checks use node:crypto through keys.ts.
 *
 * @module
 */
import { Buffer } from "node:buffer";
import { createPublicKey, type KeyObject } from "node:crypto";
import * as der from "./der.ts";
import { verifySignature } from "./keys.ts";

/** One extension as found in a certificate. */
export interface ParsedExtension {
  critical: boolean;
  /** DER of the extension value (inside the OCTET STRING). */
  value: Uint8Array;
}

/** A decoded certificate. */
export interface ParsedCertificate {
  der: Buffer;
  /** The signed part, byte for byte. */
  tbs: Uint8Array;
  signatureAlgorithm: string;
  signature: Uint8Array;
  serialHex: string;
  /** Encoded issuer and subject Names, byte for byte. */
  issuer: Buffer;
  subject: Buffer;
  notBefore: Date;
  notAfter: Date;
  subjectPublicKeyInfo: Buffer;
  publicKey: KeyObject;
  extensions: Map<string, ParsedExtension>;
}

/** Decodes a DER certificate; throws {@link der.DerError} on malformed input. */
export function parseCertificate(bytes: Uint8Array): ParsedCertificate {
  const root = der.expectElement(bytes, der.Tag.SEQUENCE);
  const [tbs, algorithm, signature] = der.children(bytes, root);
  if (!tbs || !algorithm || signature?.tag !== der.Tag.BIT_STRING) {
    throw new der.DerError("malformed certificate");
  }
  const fields = der.children(bytes, tbs);
  const at = fields[0]?.tag === 0xa0 ? 1 : 0;
  const [serial, , issuer, validity, subject, spki] = fields.slice(at, at + 6);
  if (!spki || validity.tag !== der.Tag.SEQUENCE) throw new der.DerError("malformed certificate");
  const [notBefore, notAfter] = der.children(bytes, validity);
  const extensions = new Map<string, ParsedExtension>();
  const wrapper = fields.slice(at + 6).find((field) => field.tag === 0xa3);
  if (wrapper) {
    const [list] = der.children(bytes, wrapper);
    for (const extension of der.children(bytes, list)) {
      const parts = der.children(bytes, extension);
      const critical = parts.length === 3 && bytes[parts[1].contentStart] !== 0;
      extensions.set(der.decodeOid(der.contentOf(bytes, parts[0])), {
        critical,
        value: der.contentOf(bytes, parts[parts.length - 1]),
      });
    }
  }
  const [algorithmOid] = der.children(bytes, algorithm);
  const spkiBytes = Buffer.from(der.bytesOf(bytes, spki));
  let publicKey: KeyObject;
  try {
    publicKey = createPublicKey({ key: spkiBytes, format: "der", type: "spki" });
  } catch (error) {
    throw new der.DerError("its public key is damaged or of an unsupported type", { cause: error });
  }
  const parsed: ParsedCertificate = {
    der: Buffer.from(bytes),
    tbs: der.bytesOf(bytes, tbs),
    signatureAlgorithm: der.decodeOid(der.contentOf(bytes, algorithmOid)),
    signature: der.contentOf(bytes, signature).subarray(1),
    serialHex: Buffer.from(der.contentOf(bytes, serial)).toString("hex"),
    issuer: Buffer.from(der.bytesOf(bytes, issuer)),
    subject: Buffer.from(der.bytesOf(bytes, subject)),
    notBefore: der.decodeTime(bytes, notBefore),
    notAfter: der.decodeTime(bytes, notAfter),
    subjectPublicKeyInfo: spkiBytes,
    publicKey,
    extensions,
  };
  // Decode the extensions sentry relies on now, so that a malformed one fails parsing
  // (with the caller's file name) instead of surfacing later in a check.
  isCa(parsed);
  hasKeyUsage(parsed, 0);
  subjectKeyId(parsed);
  return parsed;
}

/** True when `cert` carries a signature made by `signer`'s key. */
export function isSignedBy(cert: ParsedCertificate, signer: ParsedCertificate): boolean {
  return verifySignature(cert.signatureAlgorithm, signer.publicKey, cert.tbs, cert.signature);
}

/** BasicConstraints cA flag (false when the extension is absent). */
export function isCa(cert: ParsedCertificate): boolean {
  const extension = cert.extensions.get("2.5.29.19");
  if (!extension) return false;
  const value = extension.value;
  const sequence = der.expectElement(value, der.Tag.SEQUENCE);
  const [first] = der.children(value, sequence);
  return first?.tag === der.Tag.BOOLEAN && value[first.contentStart] !== 0;
}

/** KeyUsage bit `bit` is set; undefined when the certificate has no KeyUsage extension. */
export function hasKeyUsage(cert: ParsedCertificate, bit: number): boolean | undefined {
  const extension = cert.extensions.get("2.5.29.15");
  if (!extension) return undefined;
  const bits = der.contentOf(
    extension.value,
    der.expectElement(extension.value, der.Tag.BIT_STRING),
  )
    .subarray(1);
  return (bits[bit >> 3] ?? 0) & (0x80 >> (bit & 7)) ? true : false;
}

/** The SubjectKeyIdentifier value, if the certificate has one. */
export function subjectKeyId(cert: ParsedCertificate): Uint8Array | undefined {
  const extension = cert.extensions.get("2.5.29.14");
  if (!extension) return undefined;
  return der.contentOf(extension.value, der.expectElement(extension.value, der.Tag.OCTET_STRING));
}

/** True when subject and issuer are the same name and the certificate verifies with its own key. */
export function isSelfSigned(cert: ParsedCertificate): boolean {
  return cert.subject.equals(cert.issuer) && isSignedBy(cert, cert);
}

/** The first value of attribute `oid` (e.g. 2.5.4.10 for O) in an encoded Name, as text. */
export function nameAttribute(name: Uint8Array, oid: string): string | undefined {
  for (const rdn of der.children(name, der.expectElement(name, der.Tag.SEQUENCE))) {
    for (const attribute of der.children(name, rdn)) {
      const [type, value] = der.children(name, attribute);
      if (type && value && der.decodeOid(der.contentOf(name, type)) === oid) {
        return Buffer.from(der.contentOf(name, value)).toString("utf8");
      }
    }
  }
  return undefined;
}
