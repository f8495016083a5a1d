/**
 * PEM (RFC 7468) encoding and decoding of DER blocks.
 *
 * @module
 */
import { Buffer } from "node:buffer";

/** One PEM block: its label (e.g. `CERTIFICATE`) and DER bytes. */
export interface PemBlock {
  label: string;
  der: Buffer;
}

const BLOCK = /-----BEGIN ([A-Z0-9 ]+)-----([\s\S]*?)-----END \1-----/g;

/** All PEM blocks in `text`, in order. Text between blocks is ignored, as OpenSSL does. */
export function decodePem(text: string | Uint8Array): PemBlock[] {
  const source = typeof text === "string" ? text : Buffer.from(text).toString("latin1");
  const blocks: PemBlock[] = [];
  for (const match of source.matchAll(BLOCK)) {
    const body = match[2].split(/\r?\n/).filter((line) => !line.includes(":")).join("");
    blocks.push({ label: match[1], der: Buffer.from(body.replace(/\s+/g, ""), "base64") });
  }
  return blocks;
}

/** Encodes DER bytes as one PEM block with 64-character lines. */
export function encodePem(label: string, der: Uint8Array): string {
  const base64 = Buffer.from(der.buffer, der.byteOffset, der.byteLength).toString("base64");
  let body = "";
  for (let start = 0; start < base64.length; start += 64) {
    body += base64.slice(start, start + 64) + "\n";
  }
  return `-----BEGIN ${label}-----\n${body}-----END ${label}-----\n`;
}

/** Encodes several certificates as concatenated `CERTIFICATE` blocks. */
export function encodeCertificates(ders: readonly Uint8Array[]): string {
  return ders.map((der) => encodePem("CERTIFICATE", der)).join("");
}
