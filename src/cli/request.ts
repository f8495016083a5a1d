/**
 * `sentry request`: obtain a workload certificate from a running sentry exactly as a daprd
 * sidecar does. Generates a key (Ed25519 by default), sends a CSR with an empty subject to
 * SignCertificate over TLS, checks sentry's SPIFFE ID against the trust anchors, verifies the
 * answer locally (our key, our SPIFFE ID, a chain to an anchor) and only then writes
 * `cert.pem` (leaf + chain), `key.pem` (0600) and `ca.pem` into the output directory.
 *
 * @module
 */
import { readInputFile, writeOutputFiles } from "./files.ts";
import type { Buffer } from "node:buffer";
import { mkdir } from "node:fs/promises";
import { join, resolve } from "node:path";
import { csrPem } from "../x509/csr-builder.ts";
import { DEFAULT_KEY_TYPE, generateKey, KEY_TYPES, type KeyType } from "../x509/key-types.ts";
import { privateKeyToPem, spkiOf } from "../x509/keys.ts";
import { isCa, isSignedBy, parseCertificate, type ParsedCertificate } from "../x509/parse.ts";
import { decodePem, encodeCertificates } from "../x509/pem.ts";
import { DurationError, parseDuration } from "../util/duration.ts";
import { WireValidator } from "../identity/validator.ts";
import {
  CheckFailed,
  type CommandIO,
  type CommandSpec,
  Exit,
  flagValues,
  runCommand,
} from "./command.ts";
import { UsageError } from "./flags.ts";
import { signCertificate, type SignCertificateResponse, uriSans } from "./sentry-client.ts";

/** `--validator` values and the wire enum they select (empty: the server's default). */
const VALIDATORS: Record<string, number> = {
  "": WireValidator.UNKNOWN,
  insecure: WireValidator.INSECURE,
  kubernetes: WireValidator.KUBERNETES,
  jwks: WireValidator.JWKS,
};

/** The `request` subcommand's description and flags. */
export const REQUEST_COMMAND: CommandSpec = {
  name: "request",
  summary: "obtain a workload certificate from a running sentry, as daprd does",
  usage: `
Usage: sentry request --anchors FILE --app-id ID [flags]

Acts like a daprd sidecar: generates a key, sends a certificate signing request with an
empty subject to SignCertificate at --address over TLS, and accepts the server only if its
certificate chains to --anchors and carries exactly one URI SAN,
spiffe://<control-plane-trust-domain>/ns/<control-plane-namespace>/dapr-sentry.
The answer is checked before anything is written to --out-dir: it must certify our key for
spiffe://<trust-domain>/ns/<namespace>/<app-id> (any trust domain when --trust-domain is
empty) and chain to one of the trust anchors sentry returned. Files written:
  cert.pem  the workload certificate followed by its issuer chain (0644)
  key.pem   the private key, PKCS#8 (0600)
  ca.pem    the trust anchors sentry returned (0644)

Exit codes: 0 written, 1 refused or failed (nothing written), 2 bad usage.`,
  flags: [
    {
      name: "address",
      type: "string",
      default: "localhost:50001",
      help: "Sentry's gRPC address (host:port)",
    },
    {
      name: "anchors",
      type: "string",
      default: "",
      help: "Trust anchors file (PEM, sentry's ca.crt) to verify the server (required)",
    },
    {
      name: "control-plane-trust-domain",
      type: "string",
      default: "localhost",
      help: "Trust domain of sentry's SPIFFE ID (its --trust-domain)",
    },
    {
      name: "control-plane-namespace",
      type: "string",
      default: "default",
      help: "Namespace of sentry's SPIFFE ID (its NAMESPACE)",
    },
    { name: "app-id", type: "string", default: "", help: "App id to certify (required)" },
    { name: "namespace", type: "string", default: "default", help: "Namespace of the app" },
    {
      name: "trust-domain",
      type: "string",
      default: "",
      help: "Trust domain to ask for (empty: the server decides, `public` by default)",
    },
    { name: "token", type: "string", default: "", help: "Token sent with the request" },
    {
      name: "token-file",
      type: "string",
      default: "",
      help: "File holding the token (surrounding whitespace is trimmed)",
    },
    {
      name: "validator",
      type: "string",
      default: "",
      choices: Object.keys(VALIDATORS),
      help: "Token validator to ask for: insecure, kubernetes or jwks (empty: server default)",
    },
    {
      name: "key-type",
      type: "string",
      default: DEFAULT_KEY_TYPE,
      choices: KEY_TYPES,
      help: `Key to generate: ${KEY_TYPES.join(", ")}`,
    },
    { name: "out-dir", type: "string", default: ".", help: "Directory for the written files" },
    {
      name: "timeout",
      type: "string",
      default: "10s",
      help: "Deadline of the request, connection included (Go duration)",
    },
    { name: "json", type: "bool", default: false, help: "Print the result as JSON" },
  ],
};

/** The parsed command line. */
interface RequestOptions {
  address: string;
  anchorsPath: string;
  sentrySpiffeId: string;
  appId: string;
  namespace: string;
  trustDomain: string;
  tokenFlag: string;
  tokenFile: string;
  validator: number;
  keyType: KeyType;
  outDir: string;
  timeoutMs: number;
  json: boolean;
}

/** Reads and checks the flags; UsageError (exit 2) for anything missing or malformed. */
function readOptions(values: ReturnType<typeof flagValues>): RequestOptions {
  const appId = values.string("app-id");
  if (appId === "") throw new UsageError("--app-id is required");
  const anchorsPath = values.string("anchors");
  if (anchorsPath === "") throw new UsageError("--anchors is required (sentry's ca.crt)");
  if (values.given("token") && values.given("token-file")) {
    throw new UsageError("use either --token or --token-file, not both");
  }
  if (values.string("out-dir") === "") throw new UsageError("--out-dir must not be empty");
  let timeoutMs: number;
  try {
    timeoutMs = parseDuration(values.string("timeout"));
  } catch (error) {
    if (error instanceof DurationError) throw new UsageError(`--timeout: ${error.message}`);
    throw error;
  }
  if (!(timeoutMs > 0)) throw new UsageError("--timeout must be positive");
  return {
    address: values.string("address"),
    anchorsPath,
    sentrySpiffeId: `spiffe://${values.string("control-plane-trust-domain")}/ns/${
      values.string("control-plane-namespace")
    }/dapr-sentry`,
    appId,
    namespace: values.string("namespace"),
    trustDomain: values.string("trust-domain"),
    tokenFlag: values.string("token"),
    tokenFile: values.string("token-file"),
    validator: VALIDATORS[values.string("validator")],
    keyType: values.string("key-type") as KeyType,
    outDir: values.string("out-dir"),
    timeoutMs,
    json: values.bool("json"),
  };
}

function certificatesIn(pem: string | Uint8Array, what: string): ParsedCertificate[] {
  const blocks = decodePem(pem).filter((block) => block.label === "CERTIFICATE");
  return blocks.map((block, index) => {
    try {
      return parseCertificate(block.der);
    } catch (error) {
      throw new CheckFailed(
        `${what}: certificate ${index + 1} is malformed: ${(error as Error).message}`,
      );
    }
  });
}

/** A checked answer, ready to be written. */
interface Issued {
  chain: ParsedCertificate[];
  anchors: ParsedCertificate[];
  spiffeId: string;
  notAfter: Date;
}

/**
 * Checks sentry's answer before trusting it: the leaf certifies our key, carries exactly one
 * URI SAN with the app's SPIFFE ID (any trust domain when none was asked for), is not a CA,
 * is still valid, and every certificate is signed by the next, up to a trust anchor.
 */
function verifyResponse(
  response: SignCertificateResponse,
  ourSpki: Buffer,
  options: RequestOptions,
  fallbackAnchors: ParsedCertificate[],
  now: Date,
): Issued {
  const chain = certificatesIn(response.workloadCertificate, "sentry's answer");
  if (chain.length === 0) throw new CheckFailed("sentry's answer holds no certificate");
  const leaf = chain[0];
  if (!leaf.subjectPublicKeyInfo.equals(ourSpki)) {
    throw new CheckFailed("the certificate sentry returned is for a different public key");
  }
  const uris = uriSans(leaf);
  const path = `/ns/${options.namespace}/${options.appId}`;
  const expected = options.trustDomain === ""
    ? `spiffe://<trust domain>${path}`
    : `spiffe://${options.trustDomain}${path}`;
  const matches = uris.length === 1 &&
    (options.trustDomain === ""
      ? /^spiffe:\/\/[a-z0-9._-]+(\/.*)$/.exec(uris[0])?.[1] === path
      : uris[0] === expected);
  if (!matches) {
    throw new CheckFailed(
      `the certificate sentry returned is for ${uris.join(", ") || "no SPIFFE ID"}, ` +
        `expected ${expected}`,
    );
  }
  if (isCa(leaf)) throw new CheckFailed("the certificate sentry returned is a CA certificate");
  if (leaf.notAfter.getTime() <= now.getTime()) {
    throw new CheckFailed(
      `the certificate sentry returned expired at ${leaf.notAfter.toISOString()}`,
    );
  }
  for (let i = 0; i + 1 < chain.length; i++) {
    if (!isCa(chain[i + 1]) || !isSignedBy(chain[i], chain[i + 1])) {
      throw new CheckFailed(
        `certificate ${i + 1} of sentry's answer is not signed by certificate ${i + 2}`,
      );
    }
  }
  const returned = response.trustChainCertificates.flatMap((pem) =>
    certificatesIn(pem, "sentry's trust anchors")
  );
  const anchors = returned.length > 0 ? returned : fallbackAnchors;
  const top = chain[chain.length - 1];
  const anchored = anchors.some((anchor) =>
    anchor.der.equals(top.der) ||
    (isCa(anchor) && anchor.subject.equals(top.issuer) && isSignedBy(top, anchor))
  );
  if (!anchored) {
    throw new CheckFailed("the certificate chain sentry returned does not lead to a trust anchor");
  }
  return { chain, anchors, spiffeId: uris[0], notAfter: leaf.notAfter };
}

/** Runs `sentry request` with `argv` (the arguments after `request`); returns the exit code. */
export function runRequest(argv: readonly string[], io: CommandIO): Promise<number> {
  return runCommand(REQUEST_COMMAND, argv, io, async (parsed) => {
    const options = readOptions(flagValues(parsed));
    const anchorsPem = await readInputFile(options.anchorsPath, "trust anchors");
    const trusted = certificatesIn(anchorsPem, options.anchorsPath);
    if (trusted.length === 0) {
      throw new CheckFailed(`${options.anchorsPath} holds no PEM certificate`);
    }
    const token = options.tokenFile !== ""
      ? (await readInputFile(options.tokenFile, "token file")).trim()
      : options.tokenFlag;

    const key = await generateKey(options.keyType);
    const response = await signCertificate(
      {
        address: options.address,
        anchorsPem,
        sentrySpiffeId: options.sentrySpiffeId,
        timeoutMs: options.timeoutMs,
      },
      {
        id: options.appId,
        token,
        trustDomain: options.trustDomain,
        namespace: options.namespace,
        csrPem: csrPem(key),
        tokenValidator: options.validator,
      },
    );
    const issued = verifyResponse(response, spkiOf(key), options, trusted, io.now());

    const outDir = resolve(options.outDir);
    try {
      await mkdir(outDir, { recursive: true });
    } catch (error) {
      throw new Error(`cannot create ${outDir}: ${(error as Error).message}`, { cause: error });
    }
    const paths = {
      certificate: join(outDir, "cert.pem"),
      key: join(outDir, "key.pem"),
      ca: join(outDir, "ca.pem"),
    };
    await writeOutputFiles([
      { path: paths.key, content: privateKeyToPem(key), mode: 0o600 },
      {
        path: paths.certificate,
        content: encodeCertificates(issued.chain.map((cert) => cert.der)),
        mode: 0o644,
      },
      {
        path: paths.ca,
        content: encodeCertificates(issued.anchors.map((cert) => cert.der)),
        mode: 0o644,
      },
    ]);

    if (options.json) {
      io.stdout(
        JSON.stringify(
          { ...paths, spiffeId: issued.spiffeId, notAfter: issued.notAfter.toISOString() },
          null,
          2,
        ) + "\n",
      );
    } else {
      io.stdout(
        `wrote ${paths.certificate}\n` +
          `wrote ${paths.key}\n` +
          `wrote ${paths.ca}\n` +
          `SPIFFE ID: ${issued.spiffeId}\n` +
          `expires:   ${issued.notAfter.toISOString()}\n`,
      );
    }
    return Exit.OK;
  });
}
