/**
 * Human- and machine-readable descriptions of certificates, chains and certificate signing
 * requests, for `sentry inspect`. Everything here is pure (no I/O): distinguished names as
 * text (`O=cluster.local, CN=x`, in encoding order, RFC 4514 escaping), subject alternative
 * names, the SPIFFE ID, validity and time left relative to a given `now`, key type, key
 * usages, basic constraints, serial, fingerprints, and verification of a chain against trust
 * anchors that says which link failed.
 *
 * Names and extensions are decoded from the DER with der.ts; signatures are checked with
 * keys.ts (node:crypto), so only the algorithms sentry accepts verify.
 *
 * @module
 */
import { Buffer } from "node:buffer";
import { createHash, createPublicKey, type KeyObject } from "node:crypto";
import { CsrError, decodeCsr } from "./csr.ts";
import * as der from "./der.ts";
import { describeKey, signatureAlgorithmName, verifySignature } from "./keys.ts";
import { isCa, isSelfSigned, isSignedBy, type ParsedCertificate, subjectKeyId } from "./parse.ts";
import { encodePem } from "./pem.ts";

// ---------------------------------------------------------------------------------------------
// Names

/** Short names of the X.501 attribute types we know (as OpenSSL prints them). */
const ATTRIBUTE_NAMES: Record<string, string> = {
  "2.5.4.3": "CN",
  "2.5.4.4": "SN",
  "2.5.4.5": "serialNumber",
  "2.5.4.6": "C",
  "2.5.4.7": "L",
  "2.5.4.8": "ST",
  "2.5.4.9": "street",
  "2.5.4.10": "O",
  "2.5.4.11": "OU",
  "2.5.4.12": "title",
  "2.5.4.17": "postalCode",
  "2.5.4.42": "GN",
  "2.5.4.46": "dnQualifier",
  "1.2.840.113549.1.9.1": "emailAddress",
  "0.9.2342.19200300.100.1.1": "UID",
  "0.9.2342.19200300.100.1.25": "DC",
};

/** One attribute of a distinguished name. */
export interface NameAttribute {
  /** Short name (`CN`, `O`, ...) or the dotted OID when unknown. */
  type: string;
  /** Dotted OID of the attribute type. */
  oid: string;
  /** The value as text (`#` and hex DER when it is not a string type). */
  value: string;
}

/** Decodes an ASN.1 string element (UTF8, Printable, IA5, BMP, ...); undefined for other types. */
function decodeString(buf: Uint8Array, element: der.Element): string | undefined {
  const content = Buffer.from(der.contentOf(buf, element));
  switch (element.tag) {
    case 0x0c: // UTF8String
      return content.toString("utf8");
    case 0x12: // NumericString
    case 0x13: // PrintableString
    case 0x16: // IA5String
    case 0x1a: // VisibleString
      return content.toString("latin1");
    case 0x14: // TeletexString (treated as Latin-1, as most software does)
      return content.toString("latin1");
    case 0x1e: { // BMPString: UTF-16BE
      const swapped = Buffer.from(content);
      if (swapped.length % 2 === 0) swapped.swap16();
      return swapped.toString("utf16le");
    }
    case 0x1c: { // UniversalString: UTF-32BE
      let text = "";
      for (let i = 0; i + 4 <= content.length; i += 4) {
        text += String.fromCodePoint(content.readUInt32BE(i));
      }
      return text;
    }
    default:
      return undefined;
  }
}

/**
 * Decodes an encoded X.501 Name into its relative distinguished names (each a list of
 * attributes, usually one), in encoding order. Throws {@link der.DerError} when malformed.
 */
export function decodeName(name: Uint8Array): NameAttribute[][] {
  const root = der.expectElement(name, der.Tag.SEQUENCE);
  return der.children(name, root).map((rdn) => {
    if (rdn.tag !== der.Tag.SET) throw new der.DerError("malformed name: RDN is not a SET");
    return der.children(name, rdn).map((pair) => {
      const [type, value] = der.children(name, pair);
      if (pair.tag !== der.Tag.SEQUENCE || type?.tag !== der.Tag.OID || !value) {
        throw new der.DerError("malformed name attribute");
      }
      const oid = der.decodeOid(der.contentOf(name, type));
      const text = decodeString(name, value) ??
        `#${Buffer.from(der.bytesOf(name, value)).toString("hex").toUpperCase()}`;
      return { type: ATTRIBUTE_NAMES[oid] ?? oid, oid, value: text };
    });
  });
}

/** Escapes an attribute value as RFC 4514 asks (`\,`, `\+`, leading `#`, ...). */
function escapeValue(value: string): string {
  if (value.startsWith("#") && /^#[0-9A-F]+$/.test(value)) return value; // hex dump, verbatim
  let out = value.replace(/[\\",+;<>]/g, (c) => `\\${c}`)
    // deno-lint-ignore no-control-regex
    .replace(/[\x00-\x1f\x7f]/g, (c) => `\\${c.charCodeAt(0).toString(16).padStart(2, "0")}`);
  if (out.startsWith("#") || out.startsWith(" ")) out = `\\${out}`;
  if (out.endsWith(" ") && out.length > 1) out = `${out.slice(0, -1)}\\ `;
  return out;
}

/**
 * A Name as one line of text in encoding order: `O=cluster.local, CN=x` (attributes of a
 * multi-valued RDN joined by `+`). The empty name is the empty string.
 */
export function formatName(name: Uint8Array): string {
  return decodeName(name)
    .map((rdn) => rdn.map((a) => `${a.type}=${escapeValue(a.value)}`).join("+"))
    .join(", ");
}

// ---------------------------------------------------------------------------------------------
// Extensions

/** Subject alternative names by kind. */
export interface SubjectAltNames {
  /** dNSName entries. */
  dns: string[];
  /** uniformResourceIdentifier entries (SPIFFE IDs among them). */
  uris: string[];
  /** iPAddress entries: dotted IPv4 or RFC 5952 IPv6 (`2001:db8::1`). */
  ips: string[];
  /** rfc822Name entries. */
  emails: string[];
  /** Other kinds, described: `DirName:<name>`, `RID:<oid>`, `othername:<oid>`. */
  other: string[];
}

/** An empty {@link SubjectAltNames}. */
function noAltNames(): SubjectAltNames {
  return { dns: [], uris: [], ips: [], emails: [], other: [] };
}

/** Formats a 4- or 16-byte address; anything else as hex. */
export function formatIp(bytes: Uint8Array): string {
  if (bytes.length === 4) return Array.from(bytes).join(".");
  if (bytes.length !== 16) return `#${Buffer.from(bytes).toString("hex")}`;
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(bytes[i] * 256 + bytes[i + 1]);
  // RFC 5952: compress the longest run (length >= 2) of zero groups, the first one on ties.
  let bestStart = -1, bestLength = 0;
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLength && j - i >= 2) [bestStart, bestLength] = [i, j - i];
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestStart === -1) return hex.join(":");
  return `${hex.slice(0, bestStart).join(":")}::${hex.slice(bestStart + bestLength).join(":")}`;
}

/** Decodes a GeneralNames SEQUENCE (SubjectAltName extension value). */
export function decodeGeneralNames(value: Uint8Array): SubjectAltNames {
  const names = noAltNames();
  const root = der.expectElement(value, der.Tag.SEQUENCE);
  for (const name of der.children(value, root)) {
    const content = der.contentOf(value, name);
    const ascii = () => Buffer.from(content).toString("utf8");
    switch (name.tag) {
      case 0x81:
        names.emails.push(ascii());
        break;
      case 0x82:
        names.dns.push(ascii());
        break;
      case 0x86:
        names.uris.push(ascii());
        break;
      case 0x87:
        names.ips.push(formatIp(content));
        break;
      case 0xa4: {
        const inner = der.readElement(value, name.contentStart, name.end);
        names.other.push(`DirName:${formatName(der.bytesOf(value, inner))}`);
        break;
      }
      case 0x88:
        names.other.push(`RID:${der.decodeOid(content)}`);
        break;
      case 0xa0: {
        const [type] = der.children(value, name);
        const oid = type?.tag === der.Tag.OID ? der.decodeOid(der.contentOf(value, type)) : "?";
        names.other.push(`othername:${oid}`);
        break;
      }
      default:
        names.other.push(`[${name.tag & 0x1f}]:${Buffer.from(content).toString("hex")}`);
    }
  }
  return names;
}

/** The SPIFFE ID among the URI SANs (the first `spiffe://` one), or null. */
export function spiffeIdOf(names: SubjectAltNames): string | null {
  return names.uris.find((uri) => uri.startsWith("spiffe://")) ?? null;
}

/** KeyUsage bit names, by bit number (RFC 5280 §4.2.1.3). */
export const KEY_USAGE_NAMES: readonly string[] = [
  "digitalSignature",
  "nonRepudiation",
  "keyEncipherment",
  "dataEncipherment",
  "keyAgreement",
  "keyCertSign",
  "cRLSign",
  "encipherOnly",
  "decipherOnly",
];

/** Names of the KeyUsage bits set in a KeyUsage extension value. */
export function decodeKeyUsage(value: Uint8Array): string[] {
  const bits = der.contentOf(value, der.expectElement(value, der.Tag.BIT_STRING)).subarray(1);
  const names: string[] = [];
  for (let bit = 0; bit < bits.length * 8; bit++) {
    if (bits[bit >> 3] & (0x80 >> (bit & 7))) names.push(KEY_USAGE_NAMES[bit] ?? `bit${bit}`);
  }
  return names;
}

/** Extended key usage names by OID. */
const EKU_NAMES: Record<string, string> = {
  "2.5.29.37.0": "anyExtendedKeyUsage",
  "1.3.6.1.5.5.7.3.1": "serverAuth",
  "1.3.6.1.5.5.7.3.2": "clientAuth",
  "1.3.6.1.5.5.7.3.3": "codeSigning",
  "1.3.6.1.5.5.7.3.4": "emailProtection",
  "1.3.6.1.5.5.7.3.5": "ipsecEndSystem",
  "1.3.6.1.5.5.7.3.6": "ipsecTunnel",
  "1.3.6.1.5.5.7.3.7": "ipsecUser",
  "1.3.6.1.5.5.7.3.8": "timeStamping",
  "1.3.6.1.5.5.7.3.9": "OCSPSigning",
  "1.3.6.1.5.5.7.3.17": "ipsecIKE",
};

/** Names (or dotted OIDs when unknown) of an ExtendedKeyUsage extension value. */
export function decodeExtendedKeyUsage(value: Uint8Array): string[] {
  const root = der.expectElement(value, der.Tag.SEQUENCE);
  return der.children(value, root).map((element) => {
    const oid = der.decodeOid(der.contentOf(value, element));
    return EKU_NAMES[oid] ?? oid;
  });
}

/** BasicConstraints: cA and the optional path length limit. */
export interface BasicConstraints {
  ca: boolean;
  /** Null when the extension sets no limit. */
  pathLength: number | null;
}

/** Decodes a BasicConstraints extension value. */
export function decodeBasicConstraints(value: Uint8Array): BasicConstraints {
  const root = der.expectElement(value, der.Tag.SEQUENCE);
  let ca = false;
  let pathLength: number | null = null;
  for (const field of der.children(value, root)) {
    if (field.tag === der.Tag.BOOLEAN) ca = value[field.contentStart] !== 0;
    if (field.tag === der.Tag.INTEGER) {
      pathLength = 0;
      for (const byte of der.contentOf(value, field)) pathLength = pathLength * 256 + byte;
    }
  }
  return { ca, pathLength };
}

/** The keyIdentifier of an AuthorityKeyIdentifier extension value, if present. */
function decodeAuthorityKeyId(value: Uint8Array): Uint8Array | undefined {
  const root = der.expectElement(value, der.Tag.SEQUENCE);
  const keyId = der.children(value, root).find((field) => field.tag === 0x80);
  return keyId ? der.contentOf(value, keyId) : undefined;
}

/** Extension names by OID. */
const EXTENSION_NAMES: Record<string, string> = {
  "2.5.29.14": "subjectKeyIdentifier",
  "2.5.29.15": "keyUsage",
  "2.5.29.17": "subjectAltName",
  "2.5.29.18": "issuerAltName",
  "2.5.29.19": "basicConstraints",
  "2.5.29.30": "nameConstraints",
  "2.5.29.31": "cRLDistributionPoints",
  "2.5.29.32": "certificatePolicies",
  "2.5.29.35": "authorityKeyIdentifier",
  "2.5.29.36": "policyConstraints",
  "2.5.29.37": "extKeyUsage",
  "2.5.29.54": "inhibitAnyPolicy",
  "1.3.6.1.5.5.7.1.1": "authorityInfoAccess",
  "1.3.6.1.4.1.11129.2.4.2": "ctPrecertificateScts",
};

/** One extension, as listed in a description. */
export interface ExtensionSummary {
  /** Dotted OID. */
  oid: string;
  /** Short name, or the OID when unknown. */
  name: string;
  critical: boolean;
}

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

/** `certificate #2 (CN=x)`, or the SPIFFE ID when the subject is empty. */
function label(cert: ParsedCertificate, index: number): string {
  let name = formatName(cert.subject);
  if (name === "") {
    const san = cert.extensions.get("2.5.29.17");
    name = (san && spiffeIdOf(decodeGeneralNames(san.value))) || "empty subject";
  }
  return `certificate #${index + 1} (${name})`;
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

// ---------------------------------------------------------------------------------------------
// Chains

/** The outcome of {@link verifyChain} (JSON-ready). */
export interface ChainVerification {
  verified: boolean;
  /** Number of self-signed certificates among the anchors given. */
  anchors: number;
  /** The subject of the anchor the chain ends at, when one was found. */
  anchor?: string;
  /** Why the chain does not verify, naming the certificate or link at fault. */
  error?: string;
  /** Index (0 = leaf) of the certificate at fault; absent when an anchor is at fault. */
  failedIndex?: number;
}

function signedBy(cert: ParsedCertificate, signer: ParsedCertificate): boolean {
  return cert.issuer.equals(signer.subject) && isSignedBy(cert, signer);
}

/** Why `cert` is not signed by `signer` (names differ, unsupported algorithm, bad signature). */
function whyNotSigned(cert: ParsedCertificate, signer: ParsedCertificate): string {
  if (!cert.issuer.equals(signer.subject)) {
    return `its issuer is "${formatName(cert.issuer)}", not "${formatName(signer.subject)}"`;
  }
  if (!signatureAlgorithmName(cert.signatureAlgorithm)) {
    return `unsupported signature algorithm ${signatureAlgorithmText(cert.signatureAlgorithm)}`;
  }
  return "the signature does not verify";
}

function validityProblem(cert: ParsedCertificate, now: Date): string | undefined {
  if (now < cert.notBefore) return `is not valid before ${cert.notBefore.toISOString()}`;
  if (now > cert.notAfter) return `expired at ${cert.notAfter.toISOString()}`;
  return undefined;
}

/**
 * Verifies `chain` (leaf first, then intermediates, optionally ending with an anchor) against
 * `anchors` at time `now`. Checks, in order: some anchor is self-signed; each certificate is
 * signed by the next, which is a CA allowed to sign certificates; the last one is, or is
 * signed by, a self-signed anchor (a CA itself); path length limits hold; every certificate
 * on the path, anchor included, is valid at `now`. The first failure is reported.
 */
export function verifyChain(
  chain: readonly ParsedCertificate[],
  anchors: readonly ParsedCertificate[],
  now: Date,
): ChainVerification {
  const roots = anchors.filter(isSelfSigned);
  const result = (error?: string, failedIndex?: number, anchor?: ParsedCertificate) => {
    const out: ChainVerification = { verified: error === undefined, anchors: roots.length };
    if (anchor) out.anchor = formatName(anchor.subject);
    if (error !== undefined) out.error = error;
    if (failedIndex !== undefined) out.failedIndex = failedIndex;
    return out;
  };
  if (chain.length === 0) return result("there is no certificate to verify");
  if (roots.length === 0) {
    return result(`none of the ${anchors.length} anchors is a self-signed certificate`);
  }

  const mayIssue = (signer: ParsedCertificate, what: string): string | undefined => {
    if (!isCa(signer)) return `${what} is not a CA (BasicConstraints CA:TRUE missing)`;
    const usage = signer.extensions.get("2.5.29.15");
    if (usage && !decodeKeyUsage(usage.value).includes("keyCertSign")) {
      return `${what} may not sign certificates (KeyUsage lacks keyCertSign)`;
    }
    return undefined;
  };

  for (let i = 0; i + 1 < chain.length; i++) {
    if (!signedBy(chain[i], chain[i + 1])) {
      return result(
        `${label(chain[i], i)} is not signed by ${label(chain[i + 1], i + 1)}: ${
          whyNotSigned(chain[i], chain[i + 1])
        }`,
        i,
      );
    }
    const problem = mayIssue(chain[i + 1], label(chain[i + 1], i + 1));
    if (problem) return result(problem, i + 1);
  }

  const lastIndex = chain.length - 1;
  const last = chain[lastIndex];
  let anchor: ParsedCertificate | undefined;
  // The path: chain certificates, then the anchor unless the chain already ends with it.
  let path: ParsedCertificate[];
  if (isSelfSigned(last)) {
    anchor = roots.find((root) => root.der.equals(last.der));
    if (!anchor) {
      return result(
        `${label(last, lastIndex)} is self-signed and not among the ${roots.length} anchors`,
        lastIndex,
      );
    }
    path = [...chain];
  } else {
    anchor = roots.find((root) => signedBy(last, root));
    if (!anchor) {
      const hint = roots.length === 1 ? `: ${whyNotSigned(last, roots[0])}` : "";
      return result(
        `${label(last, lastIndex)} is not signed by any of the ${roots.length} anchors` +
          (roots.length === 1 ? hint : ` (its issuer is "${formatName(last.issuer)}")`),
        lastIndex,
      );
    }
    const problem = mayIssue(anchor, `the anchor "${formatName(anchor.subject)}"`);
    if (problem) return result(problem, undefined, anchor);
    path = [...chain, anchor];
  }

  // pathLenConstraint: how many non-self-issued intermediates may follow a CA (RFC 5280 6.1.4).
  for (let j = 1; j < path.length; j++) {
    const bc = path[j].extensions.get("2.5.29.19");
    const limit = bc ? decodeBasicConstraints(bc.value).pathLength : null;
    const below = path.slice(1, j).filter((cert) => !cert.subject.equals(cert.issuer)).length;
    if (limit !== null && below > limit) {
      const what = j < chain.length
        ? label(path[j], j)
        : `the anchor "${formatName(path[j].subject)}"`;
      return result(
        `${what} allows ${limit} intermediate(s) below it (pathlen), the chain has ${below}`,
        j < chain.length ? j : undefined,
        anchor,
      );
    }
  }

  for (let i = 0; i < chain.length; i++) {
    const problem = validityProblem(chain[i], now);
    if (problem) return result(`${label(chain[i], i)} ${problem}`, i, anchor);
  }
  if (path.length > chain.length) {
    const problem = validityProblem(anchor, now);
    if (problem) {
      return result(`the anchor "${formatName(anchor.subject)}" ${problem}`, undefined, anchor);
    }
  }
  return result(undefined, undefined, anchor);
}
