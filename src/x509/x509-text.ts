/**
 * X.509 fields as text: distinguished names (`O=cluster.local, CN=x`, in encoding order, RFC
 * 4514 escaping), subject alternative names and the SPIFFE ID among them, key usages,
 * extended key usages, basic constraints and the names of known extensions. Pure functions
 * over DER (der.ts); used by describe.ts and chain-verification.ts.
 *
 * @module
 */
import { Buffer } from "node:buffer";
import * as der from "./der.ts";

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
export function noAltNames(): SubjectAltNames {
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
export function decodeAuthorityKeyId(value: Uint8Array): Uint8Array | undefined {
  const root = der.expectElement(value, der.Tag.SEQUENCE);
  const keyId = der.children(value, root).find((field) => field.tag === 0x80);
  return keyId ? der.contentOf(value, keyId) : undefined;
}

/** Extension names by OID. */
export const EXTENSION_NAMES: Record<string, string> = {
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
