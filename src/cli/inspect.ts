/**
 * `sentry inspect FILE|-`: describes certificates, chains and certificate signing requests
 * (PEM, or a single DER object), and with `--anchors FILE` verifies the chain against trust
 * anchors. Human text by default, `--json` for machines.
 *
 * Input: every `CERTIFICATE` block is described in file order (leaf first, as sentry and
 * Dapr write chains); otherwise a `CERTIFICATE REQUEST` (or `NEW CERTIFICATE REQUEST`) block.
 * Other blocks (keys) are ignored. A file without PEM blocks is read as DER.
 *
 * Exit codes: 0 described (and verified, when asked); 1 a failed check (the chain does not
 * verify against `--anchors`, including an expired or not yet valid certificate on the path,
 * or a CSR whose self-signature does not verify) or unreadable input, with one line on stderr
 * naming the file; 2 bad usage.
 *
 * An issuer (intermediate CA) that expires after the root it was issued by, both given in FILE
 * or the root in `--anchors`, gets the server's warning on stderr ("issuer certificate outlives
 * the root: ..."); the exit code is unchanged. FILE and the anchors are read only when they are
 * regular files of at most 1 MiB (a FIFO or a device is refused).
 *
 * JSON output (`--json`), field names stable:
 *
 * ```text
 * { "certificates": [Certificate, ...],      leaf first
 *   "chain": null                             without --anchors
 *          | { "verified": boolean,
 *              "anchors": number,             self-signed certificates in the anchors file
 *              "anchor"?: string,             subject of the anchor the chain ends at
 *              "error"?: string,              why it does not verify, naming the link
 *              "failedIndex"?: number } }     index in certificates of the one at fault
 * { "csr": Csr }
 *
 * Certificate = { "version": 3, "subject": "O=cluster.local, CN=x", "issuer": string,
 *   "serial": "0A1B..." (uppercase hex, as openssl x509 -serial),
 *   "subjectAltNames": { "dns": [], "uris": [], "ips": [], "emails": [], "other": [] },
 *   "spiffeId": string | null,
 *   "validity": { "notBefore": ISO, "notAfter": ISO,
 *                 "status": "valid" | "expired" | "not-yet-valid",
 *                 "secondsLeft": number (negative once expired), "lifetimeSeconds": number },
 *   "keyType": "ec-p256" | "ec-p384" | "ed25519" | "rsa-2048" | ...,
 *   "signatureAlgorithm": "ecdsa-with-SHA256" | ..., "ca": boolean,
 *   "pathLength": number | null, "keyUsage": ["digitalSignature", ...],
 *   "extendedKeyUsage": ["serverAuth", "clientAuth", ...], "subjectKeyId": "AB:CD.." | null,
 *   "authorityKeyId": string | null, "selfSigned": boolean,
 *   "fingerprints": { "sha256": "AB:CD:...", "sha1": "AB:CD:..." },
 *   "publicKeySha256": "AB:CD:...",
 *   "extensions": [{ "oid": "2.5.29.15", "name": "keyUsage", "critical": true }, ...] }
 *
 * Csr = { "subject": string, "keyType": string, "signatureAlgorithm": string,
 *   "signatureValid": boolean, "subjectAltNames": {...}, "spiffeId": string | null,
 *   "extensions": [...] (from extensionRequest), "publicKeySha256": string,
 *   "acceptedBySentry": boolean, "rejection": string | null }
 * ```
 *
 * @module
 */
import {
  type CertificateDescription,
  type CsrDescription,
  describeCertificate,
  describeCsr,
  formatDuration,
  parseCsr,
  type ParsedCsr,
} from "../x509/describe.ts";
import { type ChainVerification, verifyChain } from "../x509/chain-verification.ts";
import type { SubjectAltNames } from "../x509/x509-text.ts";
import * as der from "../x509/der.ts";
import {
  isCa,
  isSelfSigned,
  isSignedBy,
  parseCertificate,
  type ParsedCertificate,
} from "../x509/parse.ts";
import { decodePem } from "../x509/pem.ts";
import {
  CheckFailed,
  type CommandIO,
  type CommandSpec,
  Exit,
  flagValues,
  runCommand,
} from "./command.ts";
import { UsageError } from "./flags.ts";
import { issuerOutlivesRootWarning } from "../server/expiry-monitor.ts";
import { readSmallFileBytes } from "../util/bounded-read.ts";
import { errorCode, fileErrorReason } from "../util/file-errors.ts";

/** The `inspect` subcommand. */
export const INSPECT_COMMAND: CommandSpec = {
  name: "inspect",
  positionals: 1,
  summary: "Describe certificates, chains and CSRs; verify a chain against trust anchors",
  usage: `
Usage: sentry inspect [flags] FILE|-

Describes the certificates (a chain, leaf first) or the certificate signing request in FILE
(PEM or DER; - reads standard input): subject, issuer, SANs, SPIFFE ID, validity and time
left, key type, key usages, serial and fingerprints. With --anchors, also verifies that the
chain links up to one of those self-signed anchors and that every certificate on the path is
valid now.

Exit codes: 0 success, 1 a failed check (the chain does not verify, a CSR's signature is
invalid) or unreadable input, 2 bad usage.`,
  flags: [
    { name: "json", type: "bool", default: false, help: "Print JSON instead of text" },
    {
      name: "anchors",
      type: "string",
      default: "",
      help: "Trust anchors (PEM) to verify the chain against",
    },
  ],
};

/** What the input file holds. */
type Input =
  | { kind: "certificates"; certificates: ParsedCertificate[] }
  | { kind: "csr"; csr: ParsedCsr };

const CSR_LABELS = ["CERTIFICATE REQUEST", "NEW CERTIFICATE REQUEST"];

/**
 * Reads a file (or stdin for `-`), with one-line errors naming it. Only a regular file of at
 * most 1 MiB is read: a FIFO, a device such as /dev/zero or a huge file is refused at once.
 */
async function readInput(path: string, io: CommandIO): Promise<Uint8Array> {
  if (path === "-") return await io.readStdin();
  try {
    return await readSmallFileBytes(path);
  } catch (error) {
    const reason = errorCode(error) === "ENOENT" ? "no such file" : fileErrorReason(error);
    throw new Error(`${path}: ${reason}`, { cause: error });
  }
}

function parseCertificateAt(bytes: Uint8Array, name: string, index: number): ParsedCertificate {
  try {
    return parseCertificate(bytes);
  } catch (error) {
    throw new Error(
      `${name}: certificate #${index + 1} cannot be parsed: ${(error as Error).message}`,
    );
  }
}

/** Decodes certificates or a CSR from PEM, or from DER when there is no PEM block. */
function decodeInput(bytes: Uint8Array, name: string): Input {
  const blocks = decodePem(bytes);
  if (blocks.length > 0) {
    const certs = blocks.filter((block) => block.label === "CERTIFICATE");
    const csrs = blocks.filter((block) => CSR_LABELS.includes(block.label));
    if (certs.length > 0 && csrs.length > 0) {
      throw new Error(`${name} holds both certificates and a certificate request`);
    }
    if (csrs.length > 1) throw new Error(`${name} holds ${csrs.length} certificate requests`);
    if (certs.length > 0) {
      return {
        kind: "certificates",
        certificates: certs.map((block, i) => parseCertificateAt(block.der, name, i)),
      };
    }
    if (csrs.length === 1) {
      try {
        return { kind: "csr", csr: parseCsr(csrs[0].der) };
      } catch (error) {
        throw new Error(
          `${name}: the certificate request cannot be parsed: ${(error as Error).message}`,
        );
      }
    }
    const labels = [...new Set(blocks.map((block) => block.label))].join(", ");
    throw new Error(
      `${name} holds no CERTIFICATE or CERTIFICATE REQUEST PEM block (found ${labels})`,
    );
  }
  if (bytes.length === 0) throw new Error(`${name} is empty`);
  try {
    const outer = der.readElement(bytes);
    if (outer.tag === der.Tag.SEQUENCE && outer.end === bytes.length) {
      try {
        return { kind: "certificates", certificates: [parseCertificate(bytes)] };
      } catch {
        return { kind: "csr", csr: parseCsr(bytes) };
      }
    }
  } catch {
    // fall through to the message below
  }
  throw new Error(
    `${name} holds no PEM block and is not a DER certificate or certificate request`,
  );
}

/** Reads trust anchors (PEM CERTIFICATE blocks, or one DER certificate). */
function decodeAnchors(bytes: Uint8Array, name: string): ParsedCertificate[] {
  const input = (() => {
    try {
      return decodeInput(bytes, name);
    } catch (error) {
      if (decodePem(bytes).length > 0) throw error;
      throw new Error(`${name} holds no PEM CERTIFICATE block`);
    }
  })();
  if (input.kind !== "certificates") {
    throw new Error(`${name} holds a certificate request, not trust anchors`);
  }
  return input.certificates;
}

/** True when `cert` was issued by `root` (its issuer name and signature). */
function issuedBy(cert: ParsedCertificate, root: ParsedCertificate): boolean {
  return cert.issuer.equals(root.subject) && isSignedBy(cert, root);
}

/**
 * The server's warning (expiry-monitor.ts) for each issuer in `chain` that outlives the root
 * it was issued by: an intermediate CA signed directly by a self-signed certificate of `chain`
 * or `anchors` (a Dapr bundle's issuer and root).
 */
function outlivesRootWarnings(
  chain: readonly ParsedCertificate[],
  anchors: readonly ParsedCertificate[],
): string[] {
  const roots = [...chain, ...anchors].filter(isSelfSigned);
  const warnings = new Set<string>();
  for (const issuer of chain.filter((cert) => isCa(cert) && !isSelfSigned(cert))) {
    for (const root of roots.filter((root) => issuedBy(issuer, root))) {
      const warning = issuerOutlivesRootWarning(issuer.notAfter, root.notAfter);
      if (warning) warnings.add(warning);
    }
  }
  return [...warnings];
}

// ---------------------------------------------------------------------------------------------
// Text output

const LABEL_WIDTH = 22;

function line(label: string, value: string): string {
  return `  ${`${label}:`.padEnd(LABEL_WIDTH)}${value}\n`;
}

function altNamesText(names: SubjectAltNames): string {
  const all = [
    ...names.dns.map((n) => `DNS:${n}`),
    ...names.ips.map((n) => `IP:${n}`),
    ...names.emails.map((n) => `email:${n}`),
    ...names.uris.map((n) => `URI:${n}`),
    ...names.other,
  ];
  return all.length > 0 ? all.join(", ") : "(none)";
}

function notBeforeText(iso: string, now: Date): string {
  const ms = Date.parse(iso) - now.getTime();
  return ms > 0
    ? `${iso} (in ${formatDuration(ms)}, not yet valid)`
    : `${iso} (${formatDuration(ms)} ago)`;
}

function notAfterText(iso: string, now: Date): string {
  const ms = Date.parse(iso) - now.getTime();
  return ms >= 0
    ? `${iso} (in ${formatDuration(ms)})`
    : `${iso} (expired ${formatDuration(ms)} ago)`;
}

function role(cert: CertificateDescription, index: number): string {
  if (cert.ca) return cert.selfSigned ? "root CA" : "intermediate CA";
  if (cert.selfSigned) return "self-signed";
  return index === 0 ? "leaf" : "not a CA";
}

function certificateText(cert: CertificateDescription, index: number, count: number, now: Date) {
  const ca = cert.ca ? cert.pathLength === null ? "yes" : `yes, pathlen ${cert.pathLength}` : "no";
  const list = (values: string[]) => values.length > 0 ? values.join(", ") : "(none)";
  return `Certificate #${index + 1} of ${count} (${role(cert, index)})\n` +
    line("Subject", cert.subject || "(empty)") +
    line("Issuer", cert.issuer || "(empty)") +
    line("SPIFFE ID", cert.spiffeId ?? "(none)") +
    line("Subject alt names", altNamesText(cert.subjectAltNames)) +
    line("Serial", cert.serial) +
    line("Not before", notBeforeText(cert.validity.notBefore, now)) +
    line("Not after", notAfterText(cert.validity.notAfter, now)) +
    line("Status", cert.validity.status) +
    line("Key type", cert.keyType) +
    line("Signature algorithm", cert.signatureAlgorithm) +
    line("CA", ca) +
    line("Key usage", list(cert.keyUsage)) +
    line("Extended key usage", list(cert.extendedKeyUsage)) +
    line("Subject key ID", cert.subjectKeyId ?? "(none)") +
    line("Authority key ID", cert.authorityKeyId ?? "(none)") +
    line("SHA-256 fingerprint", cert.fingerprints.sha256) +
    line("SHA-1 fingerprint", cert.fingerprints.sha1) +
    line("Public key SHA-256", cert.publicKeySha256) +
    line(
      "Extensions",
      list(cert.extensions.map((e) => e.critical ? `${e.name} (critical)` : e.name)),
    );
}

function chainText(chain: ChainVerification, anchorsName: string): string {
  const anchors = `${chain.anchors} anchor${chain.anchors === 1 ? "" : "s"} in ${anchorsName}`;
  return chain.verified
    ? `Chain: verified against ${anchors} (ends at "${chain.anchor}")\n`
    : `Chain: NOT verified against ${anchors}: ${chain.error}\n`;
}

function csrText(csr: CsrDescription, name: string): string {
  const list = (values: string[]) => values.length > 0 ? values.join(", ") : "(none)";
  return `Certificate signing request (${name})\n` +
    line("Subject", csr.subject || "(empty)") +
    line("SPIFFE ID", csr.spiffeId ?? "(none)") +
    line("Subject alt names", altNamesText(csr.subjectAltNames)) +
    line("Key type", csr.keyType) +
    line("Signature algorithm", csr.signatureAlgorithm) +
    line("Signature", csr.signatureValid ? "valid" : "INVALID") +
    line(
      "Accepted by sentry",
      csr.acceptedBySentry ? "yes" : `no (${csr.rejection})`,
    ) +
    line(
      "Requested extensions",
      list(csr.extensions.map((e) => e.critical ? `${e.name} (critical)` : e.name)),
    ) +
    line("Public key SHA-256", csr.publicKeySha256);
}

// ---------------------------------------------------------------------------------------------

/** Runs `sentry inspect` with `argv` (the arguments after `inspect`); returns the exit code. */
export function runInspect(argv: readonly string[], io: CommandIO): Promise<number> {
  return runCommand(INSPECT_COMMAND, argv, io, async (parsed) => {
    const flags = flagValues(parsed);
    const json = flags.bool("json");
    const anchorsPath = flags.string("anchors");
    if (parsed.positionals.length === 0) {
      throw new UsageError("missing FILE argument (use - for standard input)");
    }
    const [path] = parsed.positionals;
    if (flags.given("anchors") && anchorsPath === "") {
      throw new UsageError("--anchors needs a file name");
    }
    if (anchorsPath === "-" && path === "-") {
      throw new UsageError("FILE and --anchors cannot both be standard input");
    }
    const name = path === "-" ? "stdin" : path;
    const anchorsName = anchorsPath === "-" ? "stdin" : anchorsPath;
    const now = io.now();

    const input = decodeInput(await readInput(path, io), name);
    if (input.kind === "csr") {
      if (anchorsPath !== "") {
        throw new UsageError("--anchors applies to certificates, not to a certificate request");
      }
      let csr: CsrDescription;
      try {
        csr = describeCsr(input.csr);
      } catch (error) {
        throw new Error(`${name}: the certificate request: ${(error as Error).message}`, {
          cause: error,
        });
      }
      io.stdout(json ? `${JSON.stringify({ csr }, null, 2)}\n` : csrText(csr, name));
      if (!csr.signatureValid) {
        throw new CheckFailed(`${name}: the request's signature does not verify`);
      }
      return Exit.OK;
    }

    const certificates = input.certificates.map((cert, i) => {
      try {
        return describeCertificate(cert, now);
      } catch (error) {
        throw new Error(`${name}: certificate #${i + 1}: ${(error as Error).message}`, {
          cause: error,
        });
      }
    });
    let chain: ChainVerification | null = null;
    let anchors: ParsedCertificate[] = [];
    if (anchorsPath !== "") {
      anchors = decodeAnchors(await readInput(anchorsPath, io), anchorsName);
      chain = verifyChain(input.certificates, anchors, now);
    }
    for (const warning of outlivesRootWarnings(input.certificates, anchors)) {
      io.stderr(`sentry inspect: warning: ${warning}\n`);
    }
    if (json) {
      io.stdout(`${JSON.stringify({ certificates, chain }, null, 2)}\n`);
    } else {
      const parts = certificates.map((cert, i) =>
        certificateText(cert, i, certificates.length, now)
      );
      if (chain) parts.push(chainText(chain, anchorsName));
      io.stdout(parts.join("\n"));
    }
    if (chain && !chain.verified) {
      throw new CheckFailed(
        `${name}: chain does not verify against ${anchorsName}: ${chain.error}`,
      );
    }
    return Exit.OK;
  });
}
