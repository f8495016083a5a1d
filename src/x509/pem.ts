/**
 * PEM (RFC 7468) encoding and decoding of DER blocks, and {@link pemProblem}: why a text is
 * not the PEM a command expects, in words an operator understands (the block found instead,
 * DER given for PEM, a truncated or encrypted block).
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
    // RFC 1421 headers (`Proc-Type: ...`) are lines with a colon; base64 never has one.
    const body = match[2].includes(":")
      ? match[2].split(/\r?\n/).filter((line) => !line.includes(":")).join("")
      : match[2];
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

/** What a PEM input must hold: a name for messages and the block labels accepted. */
export interface PemKind {
  /** E.g. `private key`. */
  name: string;
  labels: readonly string[];
  /** The accepted block must come first (a key file); otherwise any block may be it. */
  first?: boolean;
}

/** A private key: PKCS#8, SEC1 (EC) or PKCS#1 (RSA), unencrypted, as the first block. */
export const PEM_PRIVATE_KEY: PemKind = {
  name: "private key",
  labels: ["PRIVATE KEY", "EC PRIVATE KEY", "RSA PRIVATE KEY"],
  first: true,
};

/** One or more certificates. */
export const PEM_CERTIFICATE: PemKind = { name: "certificate", labels: ["CERTIFICATE"] };

/** A PKCS#10 certificate signing request. */
export const PEM_CSR: PemKind = {
  name: "certificate signing request",
  labels: ["CERTIFICATE REQUEST"],
  first: true,
};

const BEGIN = /-----BEGIN ([A-Z0-9 ]+)-----/;
const LEGACY_ENCRYPTED = /^Proc-Type:\s*4,ENCRYPTED/m;

const ENCRYPTED_KEY = "an encrypted private key: sentry needs it unencrypted " +
  "(decrypt it with 'openssl pkey -in FILE -out PLAIN.key')";

/** Why `text` (no PEM block in it) is not PEM: empty, binary (DER?), or truncated. */
function notPem(text: string, kind: PemKind): string {
  const not = `not a PEM ${kind.name}`;
  if (text.trim() === "") return `${not} (the file is empty)`;
  const begin = BEGIN.exec(text);
  if (begin) {
    return `${not} (truncated: "-----BEGIN ${begin[1]}-----" has no "-----END ${
      begin[1]
    }-----" line)`;
  }
  // DER starts with a SEQUENCE (0x30 = "0") and is not text.
  // deno-lint-ignore no-control-regex
  if (text.startsWith("0") && /[\u0000-\u0008\u000e-\u001f\ufffd]/.test(text)) {
    return `${not} (binary data, DER perhaps: convert it with 'openssl ${
      kind === PEM_CERTIFICATE ? "x509" : kind === PEM_CSR ? "req" : "pkey"
    } -inform DER -in FILE -out FILE.pem')`;
  }
  return `${not} (no "-----BEGIN ...-----" line)`;
}

/**
 * Why `text` does not hold a PEM block of `kind`, in plain words (`not a PEM private key
 * (found a CERTIFICATE block)`), or undefined when it does. The text never includes library
 * error codes; callers prefix the file name.
 *
 * @example
 * ```ts
 * const problem = pemProblem(text, PEM_PRIVATE_KEY);
 * if (problem) throw new Error(`${path}: ${problem}`);
 * ```
 */
export function pemProblem(text: string | Uint8Array, kind: PemKind): string | undefined {
  const source = typeof text === "string" ? text : Buffer.from(text).toString("latin1");
  const blocks = decodePem(source);
  if (blocks.length === 0) return notPem(source, kind);
  const index = kind.first ? 0 : blocks.findIndex((block) => kind.labels.includes(block.label));
  const block = blocks[Math.max(index, 0)];
  if (block.label === "ENCRYPTED PRIVATE KEY" && kind === PEM_PRIVATE_KEY) return ENCRYPTED_KEY;
  if (index < 0 || !kind.labels.includes(block.label)) {
    const where = kind.first && blocks.length > 1 ? " first" : "";
    return `not a PEM ${kind.name} (found a ${block.label} block${where})`;
  }
  if (kind === PEM_PRIVATE_KEY && LEGACY_ENCRYPTED.test(source)) return ENCRYPTED_KEY;
  return undefined;
}
