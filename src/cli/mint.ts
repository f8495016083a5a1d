/**
 * `sentry mint`: one certificate, offline, like `step certificate create`, with Dapr's
 * profiles built in: `root-ca`, `intermediate-ca`, `workload` (Dapr's SPIFFE workload
 * profile) and `leaf` (DNS/IP/URI/email SANs, server and/or client EKU). It generates the key
 * (`--key-type`) or certifies the key of an existing CSR (`--csr`).
 *
 * @module
 */
import { readPemInput, writeOutputFiles } from "./files.ts";
import type { KeyObject } from "node:crypto";
import { rootFromPem } from "../ca/bundle.ts";
import { encodeName, ExtKeyUsage, KeyUsage } from "../x509/certificate.ts";
import { decodeCsr } from "../x509/csr.ts";
import { generateKey, isKeyType, KEY_TYPES } from "../x509/key-types.ts";
import { describeKey, keyIdentifier, privateKeyToPem, SigningKey, spkiOf } from "../x509/keys.ts";
import { isSelfSigned, parseCertificate, subjectKeyId } from "../x509/parse.ts";
import { decodePem, encodePem, PEM_CERTIFICATE, PEM_CSR, PEM_PRIVATE_KEY } from "../x509/pem.ts";
import {
  createCaCertificate,
  createLeafCertificate,
  createWorkloadCertificate,
  daprIdentityOf,
  ISSUER_KEY_USAGES,
  ROOT_KEY_USAGES,
} from "../ca/profiles.ts";
import type { IssuerIdentity, Validity } from "../x509/certificate.ts";
import { SpiffeId, SpiffeIdError } from "../ca/spiffe.ts";
import {
  type CommandIO,
  type CommandSpec,
  Exit,
  flagValues,
  runCommand,
  ttlFlag,
} from "./command.ts";
import { UsageError } from "./flags.ts";

const PROFILES = ["root-ca", "intermediate-ca", "workload", "leaf"] as const;
type Profile = typeof PROFILES[number];

const DEFAULT_TTL: Record<Profile, string> = {
  "root-ca": "365d",
  "intermediate-ca": "365d",
  workload: "24h",
  leaf: "24h",
};

/** `sentry mint`. */
export const MINT_COMMAND: CommandSpec = {
  name: "mint",
  summary: "create one certificate offline (root-ca, intermediate-ca, workload, leaf)",
  usage: `Usage:
  sentry mint --profile root-ca --out ca.crt --key-out ca.key [--subject "O=cluster.local"]
  sentry mint --profile intermediate-ca --ca ca.crt --ca-key ca.key --out issuer.crt --key-out issuer.key
  sentry mint --profile workload --app-id myapp --namespace default --trust-domain cluster.local \\
              --ca issuer.crt --ca-key issuer.key --out app.crt --key-out app.key
  sentry mint --profile leaf --dns example.com --ip 127.0.0.1 --ca issuer.crt --ca-key issuer.key \\
              --out server.crt --key-out server.key

Profiles (Dapr's where Dapr has one):
  root-ca          self-signed CA; subject O=<trust domain> unless --subject
  intermediate-ca  CA signed by --ca; subject O=spiffe://<td>/ns/<namespace>/dapr-sentry unless --subject
  workload         Dapr's workload certificate: empty subject, one URI SAN (the SPIFFE ID from
                   --spiffe-id or --trust-domain/--namespace/--app-id), server+client EKU
  leaf             end-entity certificate with --dns/--ip/--uri/--email SANs and --eku

The certificate never outlives its CA (NotAfter is clamped). Keys are written with mode 0600.
TTLs take Go durations or days (30d); --not-after takes an RFC 3339 time instead.`,
  flags: [
    {
      name: "profile",
      type: "string",
      default: "",
      choices: PROFILES,
      help: "root-ca, intermediate-ca, workload or leaf (required)",
    },
    {
      name: "out",
      type: "string",
      default: "",
      help: "Certificate output file (default: standard output)",
    },
    {
      name: "key-out",
      type: "string",
      default: "",
      help: "Private key output file (required unless --csr)",
    },
    {
      name: "key-type",
      type: "string",
      default: "ec-p256",
      choices: KEY_TYPES,
      help: "Type of the generated key",
    },
    {
      name: "csr",
      type: "string",
      default: "",
      help: "Certify the key of this PEM CSR instead of generating one",
    },
    {
      name: "ca",
      type: "string",
      default: "",
      help: "Issuing CA certificate (PEM; further certificates in the file form its chain)",
    },
    { name: "ca-key", type: "string", default: "", help: "Issuing CA private key (PEM)" },
    {
      name: "bundle",
      type: "bool",
      default: false,
      help: "Append the issuing chain (the --ca file, minus self-signed roots) to --out",
    },
    {
      name: "ttl",
      type: "string",
      default: "",
      help: "Lifetime (default: 365d for CAs, 24h otherwise)",
    },
    {
      name: "not-after",
      type: "string",
      default: "",
      help: "Expiry as an RFC 3339 time (instead of --ttl)",
    },
    {
      name: "subject",
      type: "string",
      default: "",
      help: 'Subject, e.g. "CN=api,O=Example" (CN, O, OU, C, L, ST)',
    },
    {
      name: "path-len",
      type: "int",
      default: -1,
      help: "Path length limit of a CA (default: none)",
    },
    {
      name: "trust-domain",
      type: "string",
      default: "localhost",
      help: "Trust domain (root subject, SPIFFE IDs)",
    },
    { name: "namespace", type: "string", default: "default", help: "Namespace in SPIFFE IDs" },
    { name: "app-id", type: "string", default: "", help: "App id of a workload certificate" },
    {
      name: "spiffe-id",
      type: "string",
      default: "",
      help: "Full SPIFFE ID of a workload certificate (instead of --app-id)",
    },
    { name: "dns", type: "list", default: [], help: "DNS SANs (repeatable, comma-separated)" },
    { name: "ip", type: "list", default: [], help: "IP address SANs" },
    { name: "uri", type: "list", default: [], help: "URI SANs" },
    { name: "email", type: "list", default: [], help: "Email SANs" },
    {
      name: "eku",
      type: "list",
      default: ["server", "client"],
      help: "Extended key usages of a leaf: server, client",
    },
    { name: "json", type: "bool", default: false, help: "Print a summary as JSON" },
  ],
};

/** Parses `CN=x,O=y` into Name attributes. */
function parseSubject(text: string): Uint8Array {
  const attributes = text.split(",").map((part) => part.trim()).filter((part) => part !== "").map(
    (part) => {
      const match = /^(CN|O|OU|C|L|ST)=(.+)$/.exec(part);
      if (!match) {
        throw new UsageError(
          `--subject: cannot read ${JSON.stringify(part)} (use CN=, O=, OU=, C=, L=, ST=)`,
        );
      }
      return [match[1], match[2]] as [string, string];
    },
  );
  return encodeName(attributes as Parameters<typeof encodeName>[0]);
}

interface LoadedCa {
  identity: IssuerIdentity;
  /** Trust domain named by a Dapr-profile CA (default for SPIFFE IDs). */
  trustDomain?: string;
  notAfter: Date;
  /** The --ca file's certificates that are not self-signed, PEM (for --bundle). */
  chainPem: string;
}

async function loadCa(caPath: string, caKeyPath: string): Promise<LoadedCa> {
  if (!caPath || !caKeyPath) throw new UsageError("this profile needs --ca and --ca-key");
  const caPem = await readPemInput(caPath, "--ca", PEM_CERTIFICATE);
  const ca = rootFromPem(caPem, await readPemInput(caKeyPath, "--ca-key", PEM_PRIVATE_KEY), {
    cert: caPath,
    key: caKeyPath,
  });
  const chain = decodePem(caPem)
    .filter((block) => block.label === "CERTIFICATE")
    .filter((block) => !isSelfSigned(parseCertificate(block.der)));
  return {
    identity: {
      key: ca.key,
      subject: ca.certificate.subject,
      keyId: subjectKeyId(ca.certificate) ?? keyIdentifier(ca.certificate.subjectPublicKeyInfo),
    },
    notAfter: ca.certificate.notAfter,
    trustDomain: daprIdentityOf(ca.certificate.subject).trustDomain,
    chainPem: chain.map((block) => encodePem("CERTIFICATE", block.der)).join(""),
  };
}

/** The parsed flags of a command. */
type Flags = ReturnType<typeof flagValues>;

/** The key a certificate is for: a new one (`--key-type`), or the one in `--csr`. */
interface KeyToCertify {
  spki: Uint8Array;
  /** The public key (for its description). */
  key: KeyObject;
  /** Set when the key was generated here (it is written to `--key-out`). */
  privateKey?: KeyObject;
}

async function keyToCertify(flags: Flags): Promise<KeyToCertify> {
  const csrPath = flags.string("csr");
  if (csrPath) {
    const csrPem = await readPemInput(csrPath, "--csr", PEM_CSR);
    let csr;
    try {
      csr = decodeCsr(csrPem);
    } catch (error) {
      throw new Error(`--csr ${csrPath}: ${(error as Error).message}`, { cause: error });
    }
    return { spki: csr.subjectPublicKeyInfo, key: csr.publicKey };
  }
  const keyType = flags.string("key-type");
  if (!isKeyType(keyType)) {
    throw new UsageError(`--key-type must be one of ${KEY_TYPES.join(", ")}`);
  }
  const privateKey = await generateKey(keyType);
  return { spki: spkiOf(privateKey), key: privateKey, privateKey };
}

/** The NotAfter asked for: `--not-after`, else now + `--ttl` (or the profile's default). */
function requestedNotAfter(flags: Flags, profile: Profile, now: Date): Date {
  let notAfter: Date;
  if (flags.string("not-after")) {
    if (flags.string("ttl")) throw new UsageError("use --ttl or --not-after, not both");
    notAfter = new Date(flags.string("not-after"));
    if (Number.isNaN(notAfter.getTime())) {
      throw new UsageError("--not-after must be an RFC 3339 time");
    }
  } else {
    notAfter = new Date(
      now.getTime() + ttlFlag("ttl", flags.string("ttl") || DEFAULT_TTL[profile]),
    );
  }
  if (notAfter <= now) throw new UsageError("the certificate would already be expired");
  return notAfter;
}

/** A minted certificate and what the summary reports about it. */
interface Minted {
  der: Uint8Array;
  /** The CA's chain, for `--bundle` (empty for a root). */
  chainPem: string;
  notAfter: Date;
  /** NotAfter was cut to the CA's. */
  clamped: boolean;
  spiffeId?: string;
}

function subjectOr(flags: Flags, fallback: () => Uint8Array): Uint8Array {
  const subject = flags.string("subject");
  return subject ? parseSubject(subject) : fallback();
}

function pathLength(flags: Flags): number | undefined {
  return flags.int("path-len") >= 0 ? flags.int("path-len") : undefined;
}

/** A self-signed root in Dapr's profile (`O=<trust domain>` unless `--subject`). */
function mintRoot(flags: Flags, key: KeyToCertify, validity: Validity): Minted {
  const der = createCaCertificate({
    subject: subjectOr(flags, () => encodeName([["O", flags.string("trust-domain")]])),
    subjectPublicKeyInfo: key.spki,
    selfKey: new SigningKey(key.privateKey!),
    validity,
    keyUsages: [...ROOT_KEY_USAGES],
    pathLength: pathLength(flags),
  });
  return { der, chainPem: "", notAfter: validity.notAfter, clamped: false };
}

/** The Subject Alternative Names and EKUs of a `leaf`, from the flags. */
function leafNames(flags: Flags) {
  const extendedKeyUsages = flags.list("eku").map((name) => {
    if (name === "server") return ExtKeyUsage.serverAuth;
    if (name === "client") return ExtKeyUsage.clientAuth;
    throw new UsageError(`--eku: unknown usage ${JSON.stringify(name)} (use server, client)`);
  });
  const names = {
    dnsNames: flags.list("dns"),
    ips: flags.list("ip"),
    uris: flags.list("uri"),
    emails: flags.list("email"),
  };
  if (Object.values(names).every((list) => list.length === 0) && !flags.string("subject")) {
    throw new UsageError("a leaf needs at least one of --dns, --ip, --uri, --email or a --subject");
  }
  return { names, extendedKeyUsages };
}

/** An intermediate, workload or leaf certificate signed by `--ca`. */
async function mintUnderCa(
  profile: Exclude<Profile, "root-ca">,
  flags: Flags,
  key: KeyToCertify,
  now: Date,
  notAfter: Date,
): Promise<Minted> {
  const ca = await loadCa(flags.string("ca"), flags.string("ca-key"));
  if (ca.notAfter <= now) throw new Error(`the CA in --ca expired at ${ca.notAfter.toISOString()}`);
  const clamped = notAfter > ca.notAfter;
  const validity: Validity = { notBefore: now, notAfter: clamped ? ca.notAfter : notAfter };
  const minted = { chainPem: ca.chainPem, notAfter: validity.notAfter, clamped };
  const trustDomain = !flags.given("trust-domain") && ca.trustDomain
    ? ca.trustDomain
    : flags.string("trust-domain");
  const namespace = flags.string("namespace");
  if (profile === "intermediate-ca") {
    const sentryId = SpiffeId.forWorkload(trustDomain, namespace, "dapr-sentry");
    const der = createCaCertificate({
      subject: subjectOr(flags, () => encodeName([["O", sentryId.toString()]])),
      subjectPublicKeyInfo: key.spki,
      issuer: ca.identity,
      validity,
      keyUsages: [...ISSUER_KEY_USAGES],
      pathLength: pathLength(flags),
    });
    return { ...minted, der };
  }
  if (profile === "workload") {
    const id = flags.string("spiffe-id")
      ? SpiffeId.parse(flags.string("spiffe-id"))
      : flags.string("app-id")
      ? SpiffeId.forWorkload(trustDomain, namespace, flags.string("app-id"))
      : undefined;
    if (!id) throw new UsageError("the workload profile needs --app-id (or --spiffe-id)");
    const der = createWorkloadCertificate(id, key.spki, ca.identity, validity, flags.list("dns"));
    return { ...minted, der, spiffeId: id.toString() };
  }
  const der = createLeafCertificate({
    subject: flags.string("subject") ? parseSubject(flags.string("subject")) : undefined,
    subjectPublicKeyInfo: key.spki,
    issuer: ca.identity,
    validity,
    ...leafNames(flags),
    keyUsages: describeKey(key.key).startsWith("rsa-")
      ? [KeyUsage.digitalSignature, KeyUsage.keyEncipherment]
      : [KeyUsage.digitalSignature],
  });
  return { ...minted, der };
}

/** Writes the certificate (and a generated key) and prints the summary. */
async function writeMinted(
  flags: Flags,
  io: CommandIO,
  profile: Profile,
  key: KeyToCertify,
  minted: Minted,
): Promise<void> {
  const certificatePem = encodePem("CERTIFICATE", minted.der) +
    (flags.bool("bundle") ? minted.chainPem : "");
  const out = flags.string("out");
  const keyOut = flags.string("key-out");
  const { privateKey } = key;
  await writeOutputFiles([
    ...(privateKey ? [{ path: keyOut, content: privateKeyToPem(privateKey), mode: 0o600 }] : []),
    ...(out ? [{ path: out, content: certificatePem, mode: 0o644 }] : []),
  ]);
  if (!out) io.stdout(certificatePem);
  const summary = {
    profile,
    certificate: out || "-",
    ...(privateKey ? { key: keyOut } : {}),
    ...(minted.spiffeId ? { spiffeId: minted.spiffeId } : {}),
    notAfter: minted.notAfter.toISOString(),
    clampedToCa: minted.clamped,
  };
  if (flags.bool("json")) {
    // With the certificate on standard output, the summary goes to standard error.
    (out ? io.stdout : io.stderr)(JSON.stringify(summary, null, 2) + "\n");
  } else if (out) {
    io.stdout(
      `minted a ${profile} certificate: ${out}${privateKey ? ` (key ${keyOut})` : ""}` +
        (minted.spiffeId ? `, ${minted.spiffeId}` : "") +
        (minted.clamped ? " (NotAfter clamped to the CA's)" : "") + "\n",
    );
  }
}

/** Runs `sentry mint`. */
export function runMint(argv: readonly string[], io: CommandIO): Promise<number> {
  return runCommand(MINT_COMMAND, argv, io, async (parsed) => {
    const flags = flagValues(parsed);
    const profile = flags.string("profile") as Profile;
    if (!flags.given("profile")) {
      throw new UsageError(`--profile is required: ${PROFILES.join(", ")}`);
    }
    const csrPath = flags.string("csr");
    const keyOut = flags.string("key-out");
    if (csrPath && keyOut) {
      throw new UsageError("--key-out makes no sense with --csr: the key stays with the requester");
    }
    if (!csrPath && !keyOut) {
      throw new UsageError("--key-out is required: where should the new private key go?");
    }
    if (profile === "root-ca" && csrPath) {
      throw new UsageError("a root-ca signs itself: --csr cannot be used");
    }
    const key = await keyToCertify(flags);
    const now = io.now();
    const notAfter = requestedNotAfter(flags, profile, now);
    let minted: Minted;
    try {
      minted = profile === "root-ca"
        ? mintRoot(flags, key, { notBefore: now, notAfter })
        : await mintUnderCa(profile, flags, key, now, notAfter);
    } catch (error) {
      if (error instanceof SpiffeIdError) throw new UsageError(error.message);
      throw error;
    }
    await writeMinted(flags, io, profile, key, minted);
    return Exit.OK;
  });
}
