/**
 * The `openssl` CLI as an independent reference: key and CSR generation, certificate
 * creation for bring-your-own bundles, and strict verification of what sentry issues.
 *
 * @module
 */
import { join } from "node:path";

/** Runs openssl with `args`; throws with its stderr when it fails. */
export async function openssl(args: string[], stdin?: string): Promise<string> {
  const child = new Deno.Command("openssl", {
    args,
    stdin: stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (stdin !== undefined) {
    const writer = child.stdin.getWriter();
    await writer.write(new TextEncoder().encode(stdin));
    await writer.close();
  }
  const output = await child.output();
  const decoder = new TextDecoder();
  if (output.code !== 0) {
    throw new Error(`openssl ${args.join(" ")} failed: ${decoder.decode(output.stderr)}`);
  }
  return decoder.decode(output.stdout);
}

/** Key types the tests exercise, with the openssl options that make them. */
export const KEY_TYPES = {
  "ec-p256": ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
  "ec-p384": ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"],
  "ed25519": ["-algorithm", "ED25519"],
  "rsa-2048": ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
} as const;

/** One of {@link KEY_TYPES}. */
export type KeyType = keyof typeof KEY_TYPES;

/** Generates a private key (PKCS#8 PEM) of the given type. */
export async function generateKey(type: KeyType | string[]): Promise<string> {
  const options = Array.isArray(type) ? type : [...KEY_TYPES[type]];
  return await openssl(["genpkey", ...options]);
}

/** Writes `key` to a file in `dir` and returns a CSR with an empty subject, as daprd sends. */
export async function makeCsr(dir: string, keyPem: string, subject = "/"): Promise<string> {
  const keyPath = join(dir, `key-${crypto.randomUUID()}.pem`);
  await Deno.writeTextFile(keyPath, keyPem);
  return await openssl(["req", "-new", "-key", keyPath, "-subj", subject]);
}

/**
 * `openssl verify -x509_strict` of `leafChainPem` (leaf + intermediates) against `anchorsPem`
 * for a purpose (`sslserver` or `sslclient`). Returns openssl's output; throws on failure.
 */
export async function verifyChain(
  dir: string,
  anchorsPem: string,
  leafChainPem: string,
  purpose: "sslserver" | "sslclient",
): Promise<string> {
  const blocks =
    leafChainPem.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----\n?/g) ?? [];
  const id = crypto.randomUUID();
  const anchors = join(dir, `anchors-${id}.pem`);
  const leaf = join(dir, `leaf-${id}.pem`);
  const untrusted = join(dir, `untrusted-${id}.pem`);
  await Deno.writeTextFile(anchors, anchorsPem);
  await Deno.writeTextFile(leaf, blocks[0] ?? "");
  await Deno.writeTextFile(untrusted, blocks.slice(1).join(""));
  const args = ["verify", "-x509_strict", "-purpose", purpose, "-CAfile", anchors];
  if (blocks.length > 1) args.push("-untrusted", untrusted);
  return await openssl([...args, leaf]);
}

/** A root CA made with openssl: its certificate and key files. */
export interface OpensslRoot {
  certPath: string;
  keyPath: string;
}

/** Creates a self-signed ECDSA root `O=cluster.local` (30 days) in `dir`. */
export async function opensslRoot(dir: string): Promise<OpensslRoot> {
  const keyPath = join(dir, "root.key");
  const certPath = join(dir, "root.crt");
  await openssl([
    "genpkey",
    "-algorithm",
    "EC",
    "-pkeyopt",
    "ec_paramgen_curve:P-256",
    "-out",
    keyPath,
  ]);
  await openssl([
    "req",
    "-x509",
    "-new",
    "-key",
    keyPath,
    "-subj",
    "/O=cluster.local",
    "-days",
    "30",
    "-addext",
    "basicConstraints=critical,CA:TRUE",
    "-addext",
    "keyUsage=critical,keyCertSign,cRLSign",
    "-out",
    certPath,
  ]);
  return { certPath, keyPath };
}

/** A validity window for `openssl ca` (`YYMMDDHHMMSSZ` or `YYYYMMDDHHMMSSZ`). */
export interface Window {
  start: string;
  end: string;
}

/** `openssl ca` time format of a Date. */
export function opensslTime(date: Date): string {
  return date.toISOString().replace(/[-:T]/g, "").slice(0, 14) + "Z";
}

/**
 * Issues an intermediate issuer (SEC1 `EC PRIVATE KEY`) under `root` with `openssl ca`, which
 * allows any validity window (in the past, or ending in a few seconds). Returns the PEMs.
 */
export async function opensslIssuer(
  root: OpensslRoot,
  window?: Window,
): Promise<{ cert: string; key: string }> {
  const dir = await Deno.makeTempDir({ prefix: "sentry-openssl-ca-" });
  const path = (name: string) => join(dir, name);
  try {
    await openssl([
      "ecparam",
      "-name",
      "prime256v1",
      "-genkey",
      "-noout",
      "-out",
      path("issuer.key"),
    ]);
    await openssl([
      "req",
      "-new",
      "-key",
      path("issuer.key"),
      "-subj",
      "/O=cluster.local",
      "-out",
      path("issuer.csr"),
    ]);
    await Deno.writeTextFile(path("index.txt"), "");
    await Deno.writeTextFile(
      path("ca.cnf"),
      `[ca]\ndefault_ca = this\n[this]\ndatabase = ${path("index.txt")}\nnew_certs_dir = ${dir}\n` +
        `rand_serial = yes\ndefault_md = sha256\npolicy = any\nunique_subject = no\n` +
        `x509_extensions = issuer\n[any]\norganizationName = optional\n` +
        `[issuer]\nbasicConstraints = critical,CA:TRUE,pathlen:0\n` +
        `keyUsage = critical,keyCertSign,cRLSign,digitalSignature\n` +
        `subjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid\n`,
    );
    const validity = window
      ? ["-startdate", window.start, "-enddate", window.end]
      : ["-days", "20"];
    await openssl([
      "ca",
      "-batch",
      "-notext",
      "-config",
      path("ca.cnf"),
      "-cert",
      root.certPath,
      "-keyfile",
      root.keyPath,
      "-in",
      path("issuer.csr"),
      "-out",
      path("issuer.crt"),
      ...validity,
    ]);
    return {
      cert: await Deno.readTextFile(path("issuer.crt")),
      key: await Deno.readTextFile(path("issuer.key")),
    };
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/**
 * Writes a bring-your-own bundle made with openssl into `dir` (`ca.crt`, `issuer.crt`,
 * `issuer.key` only) and returns the root, kept in a separate directory, for later rotations.
 */
export async function opensslBundle(dir: string, window?: Window): Promise<OpensslRoot> {
  const root = await opensslRoot(await Deno.makeTempDir({ prefix: "sentry-openssl-root-" }));
  const issuer = await opensslIssuer(root, window);
  await Deno.copyFile(root.certPath, join(dir, "ca.crt"));
  await Deno.writeTextFile(join(dir, "issuer.crt"), issuer.cert);
  await Deno.writeTextFile(join(dir, "issuer.key"), issuer.key);
  return root;
}

/** A test CA and a server certificate it signed, for TLS servers started by tests. */
export interface ServerTls {
  caPem: string;
  certPem: string;
  keyPem: string;
  /** A client certificate of the same CA, when one was asked for. */
  client?: { certPem: string; keyPem: string };
}

/** Options of {@link opensslServerTls}. */
export interface ServerTlsOptions {
  /** Also issue a client certificate (clientAuth) with this subject, e.g. `/O=x/CN=admin`. */
  clientSubject?: string;
}

/**
 * Makes a new P-256 CA and a server certificate for `127.0.0.1` and `localhost` (serverAuth)
 * with the openssl CLI, and a client certificate when asked; every call makes another CA.
 */
export async function opensslServerTls(
  caName: string,
  options: ServerTlsOptions = {},
): Promise<ServerTls> {
  const dir = await Deno.makeTempDir({ prefix: "server-tls-" });
  const at = (name: string) => join(dir, name);
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
  const leaf = "keyUsage=critical,digitalSignature\nbasicConstraints=critical,CA:FALSE\n";
  /** A key and a certificate `name` signed by the CA, with `extensions`. */
  const issue = async (name: string, subject: string, extensions: string) => {
    const key = at(`${name}.key`);
    await openssl(["req", ...ec, "-keyout", key, "-out", at(`${name}.csr`), "-subj", subject]);
    await Deno.writeTextFile(at(`${name}.ext`), extensions + leaf);
    await openssl([
      "x509",
      "-req",
      "-in",
      at(`${name}.csr`),
      "-CA",
      at("ca.crt"),
      "-CAkey",
      at("ca.key"),
      "-CAcreateserial",
      "-out",
      at(`${name}.crt`),
      "-days",
      "2",
      "-extfile",
      at(`${name}.ext`),
    ]);
    return {
      certPem: await Deno.readTextFile(at(`${name}.crt`)),
      keyPem: await Deno.readTextFile(key),
    };
  };
  try {
    await openssl([
      "req",
      "-x509",
      ...ec,
      "-keyout",
      at("ca.key"),
      "-out",
      at("ca.crt"),
      "-subj",
      `/CN=${caName}`,
      "-days",
      "2",
      "-addext",
      "basicConstraints=critical,CA:TRUE",
      "-addext",
      "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    const server = await issue(
      "server",
      "/CN=localhost",
      "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
    );
    const client = options.clientSubject === undefined
      ? undefined
      : await issue("client", options.clientSubject, "extendedKeyUsage=clientAuth\n");
    return {
      caPem: await Deno.readTextFile(at("ca.crt")),
      ...server,
      ...(client ? { client } : {}),
    };
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}
