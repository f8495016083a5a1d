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

function encodeLength(length: number): Buffer {
  if (length < 0x80) return Buffer.from([length]);
  const bytes: number[] = [];
  for (let n = length; n > 0; n = Math.floor(n / 256)) bytes.unshift(n & 0xff);
  return Buffer.from([0x80 | bytes.length, ...bytes]);
}

/** Encodes one tag-length-value with the given contents. */
export function tlv(tag: number, ...contents: Uint8Array[]): Buffer {
  const body = contents.length === 1 ? contents[0] : Buffer.concat(contents);
  return Buffer.concat([Buffer.from([tag]), encodeLength(body.length), body]);
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

/** X.509 Time: UTCTime through 2049, GeneralizedTime from 2050 (RFC 5280 §4.1.2.5). */
export function time(date: Date): Buffer {
  const iso = date.toISOString(); // YYYY-MM-DDTHH:MM:SS.sssZ
  const year = date.getUTCFullYear();
  const digits = iso.slice(0, 19).replace(/[-T:]/g, ""); // YYYYMMDDHHMMSS
  return year >= 1950 && year < 2050
    ? tlv(Tag.UTC_TIME, Buffer.from(`${digits.slice(2)}Z`, "ascii"))
    : tlv(Tag.GENERALIZED_TIME, Buffer.from(`${digits}Z`, "ascii"));
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
  return new Date(Date.UTC(year, month - 1, day, hour, minute, second));
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
