/**
 * `sentry mint`: one certificate, offline, like `step certificate create`, with Dapr's
 * profiles built in: `root-ca`, `intermediate-ca`, `workload` (Dapr's SPIFFE workload
 * profile) and `leaf` (DNS/IP/URI/email SANs, server and/or client EKU). It generates the key
 * (`--key-type`) or certifies the key of an existing CSR (`--csr`).
 *
 * @module
 */
import { readInputFile, writeOutputFiles } from "./files.ts";
import type { KeyObject } from "node:crypto";
import { rootFromPem } from "../ca/bundle.ts";
import { encodeName, ExtKeyUsage, KeyUsage } from "../x509/certificate.ts";
import { decodeCsr } from "../x509/csr.ts";
import { generateKey, isKeyType, KEY_TYPES } from "../x509/key-types.ts";
import { describeKey, keyIdentifier, privateKeyToPem, SigningKey, spkiOf } from "../x509/keys.ts";
import { isSelfSigned, parseCertificate, subjectKeyId } from "../x509/parse.ts";
import { decodePem, encodePem } from "../x509/pem.ts";
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
  const caPem = await readInputFile(caPath, "--ca");
  const ca = rootFromPem(caPem, await readInputFile(caKeyPath, "--ca-key"), {
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

    // The key to certify.
    let privateKey: KeyObject | undefined;
    let spki: Uint8Array;
    if (csrPath) {
      spki = decodeCsr(await readInputFile(csrPath, "--csr")).subjectPublicKeyInfo;
    } else {
      const keyType = flags.string("key-type");
      if (!isKeyType(keyType)) {
        throw new UsageError(`--key-type must be one of ${KEY_TYPES.join(", ")}`);
      }
      privateKey = await generateKey(keyType);
      spki = spkiOf(privateKey);
    }

    // Validity.
    const now = io.now();
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

    const pathLength = flags.int("path-len") >= 0 ? flags.int("path-len") : undefined;
    const subjectFlag = flags.string("subject");
    let trustDomain = flags.string("trust-domain");
    let der: Uint8Array;
    let chainPem = "";
    let clamped = false;
    let spiffeId: string | undefined;
    const validityUnder = (ca: LoadedCa): Validity => {
      if (ca.notAfter <= now) {
        throw new Error(`the CA in --ca expired at ${ca.notAfter.toISOString()}`);
      }
      clamped = notAfter > ca.notAfter;
      if (clamped) notAfter = ca.notAfter;
      return { notBefore: now, notAfter };
    };
    try {
      if (profile === "root-ca") {
        const selfKey = new SigningKey(privateKey!);
        der = createCaCertificate({
          subject: subjectFlag ? parseSubject(subjectFlag) : encodeName([["O", trustDomain]]),
          subjectPublicKeyInfo: spki,
          selfKey,
          validity: { notBefore: now, notAfter },
          keyUsages: [...ROOT_KEY_USAGES],
          pathLength,
        });
      } else {
        const ca = await loadCa(flags.string("ca"), flags.string("ca-key"));
        chainPem = ca.chainPem;
        if (!flags.given("trust-domain") && ca.trustDomain) trustDomain = ca.trustDomain;
        if (profile === "intermediate-ca") {
          const sentryId = SpiffeId.forWorkload(
            trustDomain,
            flags.string("namespace"),
            "dapr-sentry",
          );
          der = createCaCertificate({
            subject: subjectFlag
              ? parseSubject(subjectFlag)
              : encodeName([["O", sentryId.toString()]]),
            subjectPublicKeyInfo: spki,
            issuer: ca.identity,
            validity: validityUnder(ca),
            keyUsages: [...ISSUER_KEY_USAGES],
            pathLength,
          });
        } else if (profile === "workload") {
          const id = flags.string("spiffe-id")
            ? SpiffeId.parse(flags.string("spiffe-id"))
            : flags.string("app-id")
            ? SpiffeId.forWorkload(trustDomain, flags.string("namespace"), flags.string("app-id"))
            : undefined;
          if (!id) throw new UsageError("the workload profile needs --app-id (or --spiffe-id)");
          spiffeId = id.toString();
          der = createWorkloadCertificate(
            id,
            spki,
            ca.identity,
            validityUnder(ca),
            flags.list("dns"),
          );
        } else {
          const ekuNames = flags.list("eku");
          const ekus = ekuNames.map((name) => {
            if (name === "server") return ExtKeyUsage.serverAuth;
            if (name === "client") return ExtKeyUsage.clientAuth;
            throw new UsageError(
              `--eku: unknown usage ${JSON.stringify(name)} (use server, client)`,
            );
          });
          const names = {
            dnsNames: flags.list("dns"),
            ips: flags.list("ip"),
            uris: flags.list("uri"),
            emails: flags.list("email"),
          };
          if (Object.values(names).every((list) => list.length === 0) && !subjectFlag) {
            throw new UsageError(
              "a leaf needs at least one of --dns, --ip, --uri, --email or a --subject",
            );
          }
          const keyType = describeKey(
            privateKey ?? decodeCsr(await readInputFile(csrPath, "--csr")).publicKey,
          );
          der = createLeafCertificate({
            subject: subjectFlag ? parseSubject(subjectFlag) : undefined,
            subjectPublicKeyInfo: spki,
            issuer: ca.identity,
            validity: validityUnder(ca),
            names,
            extendedKeyUsages: ekus,
            keyUsages: keyType.startsWith("rsa-")
              ? [KeyUsage.digitalSignature, KeyUsage.keyEncipherment]
              : [KeyUsage.digitalSignature],
          });
        }
      }
    } catch (error) {
      if (error instanceof UsageError) throw error;
      const message = (error as Error).message;
      if (error instanceof SpiffeIdError) throw new UsageError(message);
      throw error;
    }

    const certificatePem = encodePem("CERTIFICATE", der) + (flags.bool("bundle") ? chainPem : "");
    const out = flags.string("out");
    await writeOutputFiles([
      ...(privateKey ? [{ path: keyOut, content: privateKeyToPem(privateKey), mode: 0o600 }] : []),
      ...(out ? [{ path: out, content: certificatePem, mode: 0o644 }] : []),
    ]);
    if (!out) io.stdout(certificatePem);
    const summary = {
      profile,
      certificate: out || "-",
      ...(privateKey ? { key: keyOut } : {}),
      ...(spiffeId ? { spiffeId } : {}),
      notAfter: notAfter.toISOString(),
      clampedToCa: clamped,
    };
    if (flags.bool("json")) {
      // With the certificate on standard output, the summary goes to standard error.
      (out ? io.stdout : io.stderr)(JSON.stringify(summary, null, 2) + "\n");
    } else if (out) {
      io.stdout(
        `minted a ${profile} certificate: ${out}${privateKey ? ` (key ${keyOut})` : ""}` +
          (spiffeId ? `, ${spiffeId}` : "") + (clamped ? " (NotAfter clamped to the CA's)" : "") +
          "\n",
      );
    }
    return Exit.OK;
  });
}
