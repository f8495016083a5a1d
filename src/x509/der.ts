/**
 * Minimal ASN.1 DER encoding and decoding: just what X.509 certificates and PKCS#10 requests
 * need. Encoders return `Buffer`s ready to be concatenated; the decoder walks TLVs without
 * copying, so callers can slice out exact byte ranges (for example the signed part of a CSR).
 *
 * @module
 */
import { Buffer } from "node:buffer";

/** ASN.1 universal tags used by the encoders below. */
export const Tag = {
  BOOLEAN: 0x01,
  INTEGER: 0x02,
  BIT_STRING: 0x03,
  OCTET_STRING: 0x04,
  NULL: 0x05,
  OID: 0x06,
  UTF8_STRING: 0x0c,
  PRINTABLE_STRING: 0x13,
  IA5_STRING: 0x16,
  UTC_TIME: 0x17,
  GENERALIZED_TIME: 0x18,
  SEQUENCE: 0x30,
  SET: 0x31,
} as const;

/** A malformed DER structure. */
export class DerError extends Error {
  override name = "DerError";
}

/** Octets of a definite length's encoding: short form under 128, else 0x8n + n octets. */
function lengthSize(length: number): number {
  if (length < 0x80) return 1;
  let octets = 0;
  for (let n = length; n > 0; n = Math.floor(n / 256)) octets++;
  return 1 + octets;
}

/** Writes `length`'s encoding (of `size` octets, from {@link lengthSize}) at `offset`. */
function writeLength(out: Uint8Array, offset: number, length: number, size: number): void {
  if (size === 1) {
    out[offset] = length;
    return;
  }
  out[offset] = 0x80 | (size - 1);
  for (let i = size - 1, n = length; i > 0; i--, n = Math.floor(n / 256)) {
    out[offset + i] = n & 0xff;
  }
}

/**
 * Encodes one tag-length-value with the given contents. The hot path of certificate
 * encoding: one allocation, the contents copied once.
 */
export function tlv(tag: number, ...contents: Uint8Array[]): Buffer {
  let bodyLength = 0;
  for (const content of contents) bodyLength += content.length;
  const size = lengthSize(bodyLength);
  const out = Buffer.allocUnsafe(1 + size + bodyLength);
  out[0] = tag;
  writeLength(out, 1, bodyLength, size);
  let offset = 1 + size;
  for (const content of contents) {
    out.set(content, offset);
    offset += content.length;
  }
  return out;
}

/** SEQUENCE of the given encoded elements. */
export function sequence(...elements: Uint8Array[]): Buffer {
  return tlv(Tag.SEQUENCE, ...elements);
}

/** SET of the given encoded elements (caller keeps DER order; we only use one-element sets). */
export function set(...elements: Uint8Array[]): Buffer {
  return tlv(Tag.SET, ...elements);
}

/** Context-specific constructed tag `[n]` (EXPLICIT wrapping). */
export function explicit(n: number, content: Uint8Array): Buffer {
  return tlv(0xa0 | n, content);
}

/** Context-specific primitive tag `[n]` (IMPLICIT primitive, e.g. GeneralName choices). */
export function implicitPrimitive(n: number, content: Uint8Array): Buffer {
  return tlv(0x80 | n, content);
}

/** INTEGER from unsigned big-endian magnitude bytes (leading zeros trimmed, sign byte added). */
export function unsignedInteger(magnitude: Uint8Array): Buffer {
  let start = 0;
  while (start < magnitude.length - 1 && magnitude[start] === 0) start++;
  const trimmed = magnitude.subarray(start);
  const body = trimmed.length > 0 && (trimmed[0] & 0x80)
    ? Buffer.concat([Buffer.from([0]), trimmed])
    : trimmed.length === 0
    ? Buffer.from([0])
    : trimmed;
  return tlv(Tag.INTEGER, body);
}

/** INTEGER from a small non-negative JavaScript number. */
export function smallInteger(value: number): Buffer {
  const bytes: number[] = [];
  for (let n = value; n > 0; n = Math.floor(n / 256)) bytes.unshift(n & 0xff);
  return unsignedInteger(Uint8Array.from(bytes));
}

/** BOOLEAN. */
export function boolean(value: boolean): Buffer {
  return tlv(Tag.BOOLEAN, Uint8Array.of(value ? 0xff : 0x00));
}

/** NULL. */
export const NULL: Buffer = Buffer.from([Tag.NULL, 0]);

/** OCTET STRING. */
export function octetString(content: Uint8Array): Buffer {
  return tlv(Tag.OCTET_STRING, content);
}

/** BIT STRING with the given number of unused trailing bits. */
export function bitString(content: Uint8Array, unusedBits = 0): Buffer {
  return tlv(Tag.BIT_STRING, Uint8Array.of(unusedBits), content);
}

const oidCache = new Map<string, Buffer>();

/** OBJECT IDENTIFIER from dotted notation; results are cached. */
export function oid(dotted: string): Buffer {
  const cached = oidCache.get(dotted);
  if (cached) return cached;
  const arcs = dotted.split(".").map(Number);
  const bytes: number[] = [arcs[0] * 40 + arcs[1]];
  for (const arc of arcs.slice(2)) {
    const chunk: number[] = [arc & 0x7f];
    for (let n = Math.floor(arc / 128); n > 0; n = Math.floor(n / 128)) {
      chunk.unshift(0x80 | (n & 0x7f));
    }
    bytes.push(...chunk);
  }
  const encoded = tlv(Tag.OID, Uint8Array.from(bytes));
  oidCache.set(dotted, encoded);
  return encoded;
}

/** Decodes the contents of an OBJECT IDENTIFIER into dotted notation. */
export function decodeOid(content: Uint8Array): string {
  if (content.length === 0) throw new DerError("empty object identifier");
  const arcs: number[] = [];
  let value = 0;
  for (let i = 0; i < content.length; i++) {
    value = value * 128 + (content[i] & 0x7f);
    if (!(content[i] & 0x80)) {
      if (arcs.length === 0) {
        const first = value < 80 ? Math.floor(value / 40) : 2;
        arcs.push(first, value - first * 40);
      } else {
        arcs.push(value);
      }
      value = 0;
    }
  }
  return arcs.join(".");
}

/** A string as PrintableString when its characters allow, otherwise UTF8String (like Go). */
export function directoryString(value: string): Buffer {
  const printable = /^[A-Za-z0-9 '()+,\-./:=?]*$/.test(value);
  return tlv(printable ? Tag.PRINTABLE_STRING : Tag.UTF8_STRING, Buffer.from(value, "utf8"));
}

/** IA5String. */
export function ia5String(value: string): Buffer {
  return tlv(Tag.IA5_STRING, Buffer.from(value, "ascii"));
}

/** Writes `value` as `count` decimal digits (ASCII) at `offset`. */
function writeDigits(out: Uint8Array, offset: number, value: number, count: number): void {
  for (let i = count - 1; i >= 0; i--, value = Math.floor(value / 10)) {
    out[offset + i] = 0x30 + (value % 10);
  }
}

/**
 * X.509 Time: UTCTime (YYMMDDHHMMSSZ) through 2049, GeneralizedTime (YYYYMMDDHHMMSSZ) from
 * 2050 (RFC 5280 §4.1.2.5). Fractions of a second are dropped.
 */
export function time(date: Date): Buffer {
  const year = date.getUTCFullYear();
  if (!(year >= 0 && year <= 9999)) throw new RangeError(`no X.509 time for ${date}`);
  const utc = year >= 1950 && year < 2050;
  const yearDigits = utc ? 2 : 4;
  const out = Buffer.allocUnsafe(2 + yearDigits + 11);
  out[0] = utc ? Tag.UTC_TIME : Tag.GENERALIZED_TIME;
  out[1] = yearDigits + 11;
  writeDigits(out, 2, utc ? year % 100 : year, yearDigits);
  let at = 2 + yearDigits;
  for (
    const field of [
      date.getUTCMonth() + 1,
      date.getUTCDate(),
      date.getUTCHours(),
      date.getUTCMinutes(),
      date.getUTCSeconds(),
    ]
  ) {
    writeDigits(out, at, field, 2);
    at += 2;
  }
  out[at] = 0x5a; // "Z"
  return out;
}

/** One decoded TLV: its tag and the byte offsets of the whole element and of its contents. */
export interface Element {
  tag: number;
  /** Offset of the tag byte. */
  start: number;
  /** Offset of the first content byte. */
  contentStart: number;
  /** Offset just past the last content byte. */
  end: number;
}

/**
 * Reads the element starting at `offset`, checking that it fits within `limit`. With `strict`,
 * a length in long form must need it (no long form under 128, no leading zero octet), as DER
 * and Go's parsers require.
 */
export function readElement(
  buf: Uint8Array,
  offset = 0,
  limit = buf.length,
  strict = false,
): Element {
  if (offset + 2 > limit) throw new DerError("truncated element");
  const tag = buf[offset];
  if ((tag & 0x1f) === 0x1f) throw new DerError("multi-byte tags are not supported");
  let length = buf[offset + 1];
  let contentStart = offset + 2;
  if (length & 0x80) {
    const count = length & 0x7f;
    if (count === 0 || count > 4) throw new DerError("unsupported length encoding");
    if (contentStart + count > limit) throw new DerError("truncated length");
    if (strict && buf[contentStart] === 0) throw new DerError("non-minimal length encoding");
    length = 0;
    for (let i = 0; i < count; i++) length = length * 256 + buf[contentStart + i];
    contentStart += count;
    if (strict && length < 0x80) throw new DerError("non-minimal length encoding");
  }
  const end = contentStart + length;
  if (end > limit) throw new DerError("element runs past its container");
  return { tag, start: offset, contentStart, end };
}

/** The child elements of a constructed element (`strict`: see {@link readElement}). */
export function children(buf: Uint8Array, parent: Element, strict = false): Element[] {
  const out: Element[] = [];
  for (let at = parent.contentStart; at < parent.end;) {
    const child = readElement(buf, at, parent.end, strict);
    out.push(child);
    at = child.end;
  }
  return out;
}

/** Reads the element at `offset` and requires the given tag. */
export function expectElement(buf: Uint8Array, tag: number, offset = 0, limit?: number): Element {
  const element = readElement(buf, offset, limit);
  if (element.tag !== tag) {
    throw new DerError(`expected tag 0x${tag.toString(16)}, found 0x${element.tag.toString(16)}`);
  }
  return element;
}

/** The bytes of an element (header included). */
export function bytesOf(buf: Uint8Array, element: Element): Uint8Array {
  return buf.subarray(element.start, element.end);
}

/** The content bytes of an element (header excluded). */
export function contentOf(buf: Uint8Array, element: Element): Uint8Array {
  return buf.subarray(element.contentStart, element.end);
}

/** Decodes a UTCTime or GeneralizedTime element (Zulu forms, as RFC 5280 requires). */
export function decodeTime(buf: Uint8Array, element: Element): Date {
  const text = Buffer.from(contentOf(buf, element)).toString("ascii");
  const match = element.tag === Tag.UTC_TIME
    ? /^(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})?Z$/.exec(text)
    : element.tag === Tag.GENERALIZED_TIME
    ? /^(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(?:\.\d+)?Z$/.exec(text)
    : null;
  if (!match) throw new DerError(`unsupported time value ${JSON.stringify(text)}`);
  let year = Number(match[1]);
  if (element.tag === Tag.UTC_TIME) year += year < 50 ? 2000 : 1900;
  const [month, day, hour, minute, second] = match.slice(2).map((v) => Number(v ?? 0));
  // Not Date.UTC: it reads years 0-99 as 1900-1999.
  const date = new Date(0);
  date.setUTCFullYear(year, month - 1, day);
  date.setUTCHours(hour, minute, second, 0);
  return date;
}

/** How deep {@link checkStrictDer} descends before it gives up on a structure. */
const MAX_DEPTH = 32;

/**
 * Checks that `buf` is exactly one DER element whose constructed parts are all strictly
 * encoded: minimal lengths, no bytes after the last child, INTEGERs without redundant leading
 * octets, BIT STRINGs with an unused-bits octet below 8. Primitive contents other than those
 * are not interpreted. Throws {@link DerError} naming the first fault.
 */
export function checkStrictDer(buf: Uint8Array): void {
  const root = readElement(buf, 0, buf.length, true);
  if (root.end !== buf.length) throw new DerError("trailing data");
  checkStrictElement(buf, root, 0);
}

function checkStrictElement(buf: Uint8Array, element: Element, depth: number): void {
  if (depth > MAX_DEPTH) throw new DerError("structure nested too deeply");
  if (element.tag & 0x20) {
    for (const child of children(buf, element, true)) checkStrictElement(buf, child, depth + 1);
    return;
  }
  const content = contentOf(buf, element);
  if (element.tag === Tag.INTEGER) checkMinimalInteger(content);
  if (element.tag === Tag.BIT_STRING && (content.length === 0 || content[0] > 7)) {
    throw new DerError("malformed BIT STRING");
  }
}

/** Throws unless `content` is a minimally encoded (two's complement) INTEGER. */
export function checkMinimalInteger(content: Uint8Array): void {
  if (content.length === 0) throw new DerError("empty INTEGER");
  if (
    content.length > 1 &&
    ((content[0] === 0 && !(content[1] & 0x80)) || (content[0] === 0xff && (content[1] & 0x80)))
  ) {
    throw new DerError("non-minimal INTEGER encoding");
  }
}
