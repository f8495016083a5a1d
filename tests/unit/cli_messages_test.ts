/**
 * Error messages of the offline commands (issue 17 point 10): a failed write names the file the
 * user asked for and the reason, never a temporary file, and leaves none behind; an input that
 * is not the expected PEM (another block, DER, encrypted, truncated, damaged, a FIFO) is named
 * with what is wrong in plain words, never an OpenSSL code; and a certificate whose issuer has
 * the right name but another key is told apart from one whose issuer name differs.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { join } from "node:path";
import { readInputFile, writeOutputFiles } from "../../src/cli/files.ts";
import { runMint } from "../../src/cli/mint.ts";
import type { CommandIO } from "../../src/cli/command.ts";
import { generateRoot, issueIssuer } from "../../src/ca/bundle.ts";
import { createCaCertificate, ROOT_KEY_USAGES } from "../../src/ca/profiles.ts";
import { verifyChain } from "../../src/x509/chain-verification.ts";
import { colonHex } from "../../src/x509/describe.ts";
import * as der from "../../src/x509/der.ts";
import { encodeName } from "../../src/x509/certificate.ts";
import {
  generateCaKey,
  KeyFormatError,
  keyIdentifier,
  loadPrivateKey,
  SigningKey,
} from "../../src/x509/keys.ts";
import { parseCertificate, subjectKeyId } from "../../src/x509/parse.ts";
import { decodePem } from "../../src/x509/pem.ts";
import { generateKey, openssl } from "../helpers/openssl.ts";

/** What no message may contain: temporary names, OpenSSL error codes, Node's error codes. */
const INTERNALS = /\.tmp\b|sentry-tmp|error:[0-9A-F]{8}|routines::|ERR_OSSL|ERR_[A-Z_]{4,}/;

function assertPlain(message: string): void {
  assert.doesNotMatch(message, INTERNALS, `message leaks internals: ${message}`);
}

async function entries(dir: string): Promise<string[]> {
  const names: string[] = [];
  for await (const entry of Deno.readDir(dir)) names.push(entry.name);
  return names.sort();
}

async function rejection(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
  } catch (error) {
    return (error as Error).message;
  }
  assert.fail("expected a failure");
}

// ---------------------------------------------------------------------------------------------
// Writing

Deno.test("write: a destination that is a directory is named, nothing is written or left", async () => {
  const dir = await Deno.makeTempDir();
  await Deno.mkdir(join(dir, "out.crt"));
  const message = await rejection(writeOutputFiles([
    { path: join(dir, "out.key"), content: "key", mode: 0o600 },
    { path: join(dir, "out.crt"), content: "cert", mode: 0o644 },
  ]));
  assert.equal(message, `cannot write ${join(dir, "out.crt")}: it is a directory`);
  assertPlain(message);
  // Refused before any rename: no new key next to a certificate that was not written.
  assert.deepEqual(await entries(dir), ["out.crt"]);
});

Deno.test("write: a missing directory or a file in the way is named, no temporary is left", async () => {
  const dir = await Deno.makeTempDir();
  const missing = join(dir, "nodir", "x.crt");
  let message = await rejection(writeOutputFiles([{ path: missing, content: "x", mode: 0o644 }]));
  assert.equal(message, `cannot write ${missing}: directory ${join(dir, "nodir")} does not exist`);
  await Deno.writeTextFile(join(dir, "file"), "");
  const under = join(dir, "file", "x.crt");
  message = await rejection(writeOutputFiles([{ path: under, content: "x", mode: 0o644 }]));
  // Before: the clean-up's own ENOTDIR ("lstat '.../.x.crt.….tmp'") replaced the error.
  assert.equal(message, `cannot write ${under}: ${join(dir, "file")} is not a directory`);
  assertPlain(message);
  assert.deepEqual(await entries(dir), ["file"]);
});

Deno.test("write: permission denied names the destination, not the temporary file", async () => {
  // root may write anywhere on a normal file system; sysfs refuses new files even to root.
  let dir = "/sys/kernel";
  if (Deno.uid() !== 0) {
    dir = await Deno.makeTempDir();
    await Deno.chmod(dir, 0o555);
  }
  const path = join(dir, "issuer.key");
  const message = await rejection(writeOutputFiles([{ path, content: "k", mode: 0o600 }]));
  assert.match(message, new RegExp(`^cannot write ${path}: permission denied`));
  assertPlain(message);
  assert.ok(!(await entries(dir)).some((name) => name.endsWith(".tmp")));
});

// ---------------------------------------------------------------------------------------------
// Reading

Deno.test("read: a FIFO or /dev/zero given as an input is refused at once", async () => {
  const dir = await Deno.makeTempDir();
  const fifo = join(dir, "ca.crt");
  const mkfifo = await new Deno.Command("mkfifo", { args: [fifo] }).output();
  assert.ok(mkfifo.success);
  let timer: ReturnType<typeof setTimeout> | undefined;
  const hung = new Promise<string>((resolve) => {
    timer = setTimeout(() => resolve("hung"), 5000);
  });
  const message = await Promise.race([rejection(readInputFile(fifo, "--ca")), hung]);
  clearTimeout(timer);
  if (message === "hung") {
    // Release the blocked open() with a writer, then fail.
    (await Deno.open(fifo, { write: true })).close();
    assert.fail("reading a FIFO blocked");
  }
  assert.equal(message, `cannot read --ca ${fifo}: it is a FIFO`);
  assert.equal(
    await rejection(readInputFile("/dev/zero", "--ca-key")),
    "cannot read --ca-key /dev/zero: it is a character device",
  );
  assert.equal(
    await rejection(readInputFile(join(dir, "none"), "--csr")),
    `cannot read --csr ${join(dir, "none")}: file not found`,
  );
});

// ---------------------------------------------------------------------------------------------
// Keys, certificates and CSRs that are not what the flag expects

/** A bundle made by `sentry init`'s code, written as files, plus odd inputs made by openssl. */
async function oddInputs(dir: string): Promise<Record<string, string>> {
  const root = generateRoot({
    trustDomain: "example.org",
    algorithm: "ecdsa-p256",
    now: new Date(),
    ttlMs: 86_400_000,
    skewMs: 0,
  });
  const issuer = issueIssuer(root, {
    trustDomain: "example.org",
    namespace: "default",
    algorithm: "ecdsa-p256",
    now: new Date(),
    skewMs: 0,
    ttlMs: 3_600_000,
  });
  const files: Record<string, string> = {
    "issuer.crt": issuer.issuerCrt,
    "issuer.key": issuer.issuerKey,
    "garbage.txt": "hello\n",
  };
  const keyLines = issuer.issuerKey.trimEnd().split("\n");
  // The END line is cut off, or the body damaged under intact BEGIN/END lines.
  files["truncated.key"] = keyLines.slice(0, 2).join("\n") + "\n";
  files["damaged.key"] = [keyLines[0], "AAAA" + keyLines[1].slice(4), ...keyLines.slice(2)]
    .join("\n") + "\n";
  const path = (name: string) => join(dir, name);
  for (const [name, content] of Object.entries(files)) {
    await Deno.writeTextFile(path(name), content);
  }
  files["encrypted.key"] = await generateKey([
    "-algorithm",
    "EC",
    "-pkeyopt",
    "ec_paramgen_curve:P-256",
    "-aes256",
    "-pass",
    "pass:secret",
  ]);
  await Deno.writeTextFile(path("encrypted.key"), files["encrypted.key"]);
  await openssl([
    "ec",
    "-in",
    path("issuer.key"),
    "-aes128",
    "-passout",
    "pass:x",
    "-out",
    path("legacy.key"),
  ]);
  await openssl(["pkey", "-in", path("issuer.key"), "-outform", "DER", "-out", path("key.der")]);
  await openssl(["x509", "-in", path("issuer.crt"), "-outform", "DER", "-out", path("issuer.der")]);
  return files;
}

function captureIO(): { io: CommandIO; stderr: () => string } {
  let stderr = "";
  const io: CommandIO = {
    env: {},
    now: () => new Date(),
    stdout: () => {},
    stderr: (text) => (stderr += text),
    readStdin: () => Promise.resolve(new Uint8Array()),
  };
  return { io, stderr: () => stderr };
}

/** Runs `sentry mint` (a leaf under issuer.crt) with one flag's file replaced; returns stderr. */
async function mintWith(dir: string, flag: "--ca" | "--ca-key" | "--csr", file: string) {
  const args: Record<string, string> = {
    "--ca": join(dir, "issuer.crt"),
    "--ca-key": join(dir, "issuer.key"),
    [flag]: join(dir, file),
  };
  const output = flag === "--csr" ? [] : ["--key-out", join(dir, "leaf.key")];
  const { io, stderr } = captureIO();
  const code = await runMint([
    "--profile",
    "leaf",
    "--dns",
    "example.org",
    ...Object.entries(args).flat(),
    "--out",
    join(dir, "leaf.crt"),
    ...output,
  ], io);
  assert.equal(code, 1, stderr());
  assertPlain(stderr());
  return stderr();
}

Deno.test("mint: a wrong --ca-key, --ca or --csr file is named with what is wrong", async () => {
  const dir = await Deno.makeTempDir();
  await oddInputs(dir);
  const cases: Array<["--ca" | "--ca-key" | "--csr", string, string]> = [
    ["--ca-key", "issuer.crt", "not a PEM private key (found a CERTIFICATE block)"],
    ["--ca-key", "encrypted.key", "an encrypted private key: sentry needs it unencrypted"],
    ["--ca-key", "legacy.key", "an encrypted private key: sentry needs it unencrypted"],
    ["--ca-key", "key.der", "not a PEM private key (binary data, DER perhaps"],
    ["--ca-key", "garbage.txt", 'not a PEM private key (no "-----BEGIN ...-----" line)'],
    [
      "--ca-key",
      "truncated.key",
      'not a PEM private key (truncated: "-----BEGIN PRIVATE KEY-----" has no "-----END',
    ],
    ["--ca-key", "damaged.key", "the PRIVATE KEY block is damaged or truncated"],
    ["--ca", "issuer.key", "not a PEM certificate (found a PRIVATE KEY block)"],
    ["--ca", "issuer.der", "not a PEM certificate (binary data, DER perhaps"],
    ["--csr", "issuer.crt", "not a PEM certificate signing request (found a CERTIFICATE block)"],
  ];
  for (const [flag, file, expected] of cases) {
    const stderr = await mintWith(dir, flag, file);
    assert.ok(stderr.includes(join(dir, file)), `${flag} ${file}: names the file: ${stderr}`);
    assert.ok(stderr.includes(expected), `${flag} ${file}: expected "${expected}" in: ${stderr}`);
  }
  // Nothing was written, not even a temporary file.
  assert.ok(
    (await entries(dir)).every((name) => !name.startsWith("leaf") && !name.endsWith(".tmp")),
  );
});

Deno.test("loadPrivateKey: a damaged key is a KeyFormatError in plain words", async () => {
  const dir = await Deno.makeTempDir();
  const files = await oddInputs(dir);
  for (const name of ["damaged.key", "issuer.crt", "encrypted.key"]) {
    assert.throws(() => loadPrivateKey(files[name]), (error: Error) => {
      assert.ok(error instanceof KeyFormatError, `${name}: ${error}`);
      assertPlain(error.message);
      return true;
    });
  }
});

Deno.test("parseCertificate: an unreadable public key is a DerError without OpenSSL codes", async () => {
  const dir = await Deno.makeTempDir();
  const files = await oddInputs(dir);
  const cert = Buffer.from(decodePem(files["issuer.crt"])[0].der);
  // id-ecPublicKey (1.2.840.10045.2.1) becomes the unknown 1.2.840.10045.2.9.
  const oid = Buffer.from([0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01]);
  const at = cert.indexOf(oid);
  assert.ok(at > 0);
  cert[at + oid.length - 1] = 0x09;
  assert.throws(() => parseCertificate(cert), (error: Error) => {
    assert.ok(error instanceof der.DerError, String(error));
    assert.equal(error.message, "its public key is damaged or of an unsupported type");
    return true;
  });
});

// ---------------------------------------------------------------------------------------------
// Chain verification: same name, other key; same name, other encoding

Deno.test("verifyChain: an issuer under a namesake root says which keys differ", () => {
  const now = new Date();
  const options = {
    trustDomain: "example.org",
    algorithm: "ecdsa-p256" as const,
    now,
    ttlMs: 86_400_000,
    skewMs: 0,
  };
  const rootA = generateRoot(options);
  const rootB = generateRoot(options); // same subject O=example.org, another key
  const issuerPem = issueIssuer(rootA, { ...options, namespace: "default", ttlMs: 3_600_000 });
  const issuer = parseCertificate(decodePem(issuerPem.issuerCrt)[0].der);
  const akiA = colonHex(subjectKeyId(rootA.certificate)!);
  const skiB = colonHex(subjectKeyId(rootB.certificate)!);
  for (const anchors of [[rootB.certificate], [rootB.certificate, rootB.certificate]]) {
    const result = verifyChain([issuer], anchors, now);
    assert.equal(result.verified, false);
    const error = result.error!;
    assert.match(error, /both are named "O=example\.org"/);
    assert.match(error, /does not verify with the key of the anchor "O=example\.org"/);
    assert.ok(error.includes("a different CA with the same name"), error);
    assert.ok(error.includes(`authority key ID ${akiA} vs subject key ID ${skiB}`), error);
    assert.doesNotMatch(error, /its issuer is "O=example\.org", not "O=example\.org"/);
  }
  // The same between two certificates of the chain.
  const link = verifyChain([issuer, rootB.certificate], [rootB.certificate], now);
  assert.match(link.error!, /is not signed by certificate #2 \(O=example\.org\): both are named/);
  assert.equal(link.failedIndex, 0);
});

Deno.test("verifyChain: names that read the same but are encoded differently are told so", () => {
  const now = new Date();
  const validity = {
    notBefore: new Date(now.getTime() - 1000),
    notAfter: new Date(now.getTime() + 3_600_000),
  };
  const rootKey = new SigningKey(generateCaKey("ecdsa-p256"));
  const printable = encodeName([["O", "x"]]); // PrintableString
  const utf8 = der.sequence(
    der.set(der.sequence(der.oid("2.5.4.10"), der.tlv(der.Tag.UTF8_STRING, Buffer.from("x")))),
  );
  const root = parseCertificate(createCaCertificate({
    subject: printable,
    subjectPublicKeyInfo: rootKey.spki,
    selfKey: rootKey,
    validity,
    keyUsages: [...ROOT_KEY_USAGES],
  }));
  const childKey = new SigningKey(generateCaKey("ecdsa-p256"));
  const child = parseCertificate(createCaCertificate({
    subject: encodeName([["O", "child"]]),
    subjectPublicKeyInfo: childKey.spki,
    issuer: { key: rootKey, subject: utf8, keyId: keyIdentifier(rootKey.spki) },
    validity,
    keyUsages: [...ROOT_KEY_USAGES],
  }));
  const error = verifyChain([child], [root], now).error!;
  assert.doesNotMatch(error, /its issuer is "O=x", not "O=x"/);
  assert.match(error, /both read "O=x" but are encoded differently/);
});
