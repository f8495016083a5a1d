/**
 * X.509 v3 certificate encoding: names, the extensions sentry issues, and the signed
 * certificate itself. Profiles (which extensions a root, issuer or workload gets) live in
 * profiles.ts; this module only knows how to write them down in DER.
 *
 * @module
 */
import { Buffer } from "node:buffer";
import { randomFillSync } from "node:crypto";
import * as der from "./der.ts";
import type { SigningKey } from "./keys.ts";

/** When a certificate starts and stops being valid. */
export interface Validity {
  notBefore: Date;
  notAfter: Date;
}

/** The signer's side of an issued certificate: its key and its certificate's exact names. */
export interface IssuerIdentity {
  key: SigningKey;
  /** The signer certificate's encoded subject (becomes the issued certificate's issuer). */
  subject: Uint8Array;
  /** The signer's key identifier (becomes the AuthorityKeyIdentifier). */
  keyId: Uint8Array;
}

/** One extension, already encoded. */
export interface Extension {
  oid: string;
  critical: boolean;
  /** DER of the extension value (what goes inside the OCTET STRING). */
  value: Uint8Array;
}

/** KeyUsage bits (RFC 5280 §4.2.1.3) by name. */
export const KeyUsage = {
  digitalSignature: 0,
  keyEncipherment: 2,
  keyCertSign: 5,
  cRLSign: 6,
} as const;

/** Extended key usage OIDs. */
export const ExtKeyUsage = {
  serverAuth: "1.3.6.1.5.5.7.3.1",
  clientAuth: "1.3.6.1.5.5.7.3.2",
} as const;

/** Encodes an X.501 Name from attribute pairs (`O`, `CN`); an empty list is the empty name. */
export function encodeName(attributes: ReadonlyArray<[type: "O" | "CN", value: string]>): Buffer {
  const types = { O: "2.5.4.10", CN: "2.5.4.3" };
  return der.sequence(
    ...attributes.map(([type, value]) =>
      der.set(der.sequence(der.oid(types[type]), der.directoryString(value)))
    ),
  );
}

/** The empty Name (a workload certificate's subject). */
export const EMPTY_NAME: Buffer = encodeName([]);

/** BasicConstraints: `cA` and an optional path length limit. */
export function basicConstraints(ca: boolean, pathLength?: number): Extension {
  const fields = ca ? [der.boolean(true)] : [];
  if (ca && pathLength !== undefined) fields.push(der.smallInteger(pathLength));
  return { oid: "2.5.29.19", critical: true, value: der.sequence(...fields) };
}

/** KeyUsage (always critical, as Dapr and Go mark it). */
export function keyUsage(...bits: number[]): Extension {
  const highest = Math.max(...bits);
  const bytes = new Uint8Array(Math.floor(highest / 8) + 1);
  for (const bit of bits) bytes[bit >> 3] |= 0x80 >> (bit & 7);
  const unused = 7 - (highest % 8);
  return { oid: "2.5.29.15", critical: true, value: der.bitString(bytes, unused) };
}

/** ExtendedKeyUsage. */
export function extendedKeyUsage(...oids: string[]): Extension {
  return { oid: "2.5.29.37", critical: false, value: der.sequence(...oids.map(der.oid)) };
}

/** Subject alternative names by kind. */
export interface AltNames {
  uris?: readonly string[];
  dnsNames?: readonly string[];
  /** IPv4 or IPv6 addresses in text form. */
  ips?: readonly string[];
  emails?: readonly string[];
}

/** The bytes of an IPv4 or IPv6 address; throws on anything else. */
export function ipAddressBytes(text: string): Uint8Array {
  const v4 = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(text);
  if (v4) {
    const parts = v4.slice(1).map(Number);
    if (parts.every((part) => part <= 255)) return Uint8Array.from(parts);
  } else if (/^[0-9a-fA-F:]+$/.test(text) && text.includes(":")) {
    const [head, tail, extra] = text.split("::");
    const groups = (part: string | undefined) => part ? part.split(":") : [];
    const left = groups(head);
    const right = groups(tail);
    const missing = 8 - left.length - right.length;
    const all = tail === undefined ? left : [...left, ...Array(missing).fill("0"), ...right];
    if (
      extra === undefined && (tail === undefined ? left.length === 8 : missing >= 1) &&
      all.every((group) => /^[0-9a-fA-F]{1,4}$/.test(group))
    ) {
      return Uint8Array.from(all.flatMap((group) => {
        const value = parseInt(group, 16);
        return [value >> 8, value & 0xff];
      }));
    }
  }
  throw new Error(`${JSON.stringify(text)} is not an IPv4 or IPv6 address`);
}

/** SubjectAltName; critical when the subject is empty (RFC 5280 §4.2.1.6). */
export function subjectAltName(names: AltNames, critical: boolean): Extension {
  const general = [
    ...(names.emails ?? []).map((e) => der.implicitPrimitive(1, Buffer.from(e, "ascii"))),
    ...(names.dnsNames ?? []).map((n) => der.implicitPrimitive(2, Buffer.from(n, "ascii"))),
    ...(names.uris ?? []).map((u) => der.implicitPrimitive(6, Buffer.from(u, "utf8"))),
    ...(names.ips ?? []).map((ip) => der.implicitPrimitive(7, ipAddressBytes(ip))),
  ];
  return { oid: "2.5.29.17", critical, value: der.sequence(...general) };
}

/** SubjectKeyIdentifier. */
export function subjectKeyIdentifier(keyId: Uint8Array): Extension {
  return { oid: "2.5.29.14", critical: false, value: der.octetString(keyId) };
}

/** AuthorityKeyIdentifier with the keyIdentifier field only. */
export function authorityKeyIdentifier(keyId: Uint8Array): Extension {
  return {
    oid: "2.5.29.35",
    critical: false,
    value: der.sequence(der.implicitPrimitive(0, keyId)),
  };
}

/** The DER of one Extension (OID, critical flag when set, OCTET STRING value). */
export function encodeExtension(extension: Extension): Buffer {
  const fields = [der.oid(extension.oid)];
  if (extension.critical) fields.push(der.boolean(true));
  fields.push(der.octetString(extension.value));
  return der.sequence(...fields);
}

// Serials come from a pool filled 256 at a time: one call into the CSPRNG costs as much as
// copying a few kilobytes, and a CA may issue thousands of serials a second.
const SERIAL_BYTES = 16;
const serialPool = Buffer.alloc(SERIAL_BYTES * 256);
let serialPoolOffset = serialPool.length;

/** A fresh random positive 128-bit serial number, as Dapr issues. */
export function randomSerial(): Buffer {
  if (serialPoolOffset === serialPool.length) {
    randomFillSync(serialPool);
    serialPoolOffset = 0;
  }
  const serial = Buffer.from(
    serialPool.subarray(serialPoolOffset, serialPoolOffset + SERIAL_BYTES),
  );
  serialPoolOffset += SERIAL_BYTES;
  serial[0] &= 0x7f;
  if (serial[0] === 0) serial[0] = 0x01; // keep it 16 bytes long and positive
  return serial;
}

/** Everything that goes into one certificate except the signature. */
export interface CertificateTemplate {
  serial: Uint8Array;
  /** Encoded issuer Name (the signer's subject). */
  issuer: Uint8Array;
  /** Encoded subject Name. */
  subject: Uint8Array;
  notBefore: Date;
  notAfter: Date;
  /** DER SubjectPublicKeyInfo of the certified key. */
  subjectPublicKeyInfo: Uint8Array;
  extensions: readonly Extension[];
}

/** Encodes the TBSCertificate for `template` as signed by `signer`. */
export function encodeTbsCertificate(template: CertificateTemplate, signer: SigningKey): Buffer {
  return der.sequence(
    der.explicit(0, der.smallInteger(2)),
    der.unsignedInteger(template.serial),
    signer.algorithmIdentifier,
    template.issuer,
    der.sequence(der.time(template.notBefore), der.time(template.notAfter)),
    template.subject,
    template.subjectPublicKeyInfo,
    der.explicit(3, der.sequence(...template.extensions.map(encodeExtension))),
  );
}

/** The signed Certificate: `tbs`, the signer's algorithm and `signature` (RFC 5280 §4.1). */
export function assembleCertificate(
  tbs: Uint8Array,
  signer: SigningKey,
  signature: Uint8Array,
): Buffer {
  return der.sequence(tbs, signer.algorithmIdentifier, der.bitString(signature));
}

/** Builds and signs a certificate; returns its DER. */
export function signCertificate(template: CertificateTemplate, signer: SigningKey): Buffer {
  const tbs = encodeTbsCertificate(template, signer);
  return assembleCertificate(tbs, signer, signer.sign(tbs));
}
