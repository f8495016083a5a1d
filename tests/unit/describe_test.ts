/**
 * describe.ts against certificates and CSRs made with the openssl CLI: names, SANs (DNS, IP
 * v4/v6, email, URI), serial, fingerprints, key usages, EKU, CA/pathlen and key IDs compared
 * with what openssl prints; validity relative to `now`; CSR descriptions; and chain
 * verification, passing and failing at each kind of link.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { createHash } from "node:crypto";
import { join } from "node:path";
import {
  describeCertificate,
  describeCsr,
  describeValidity,
  formatDuration,
  formatSerial,
  parseCsr,
} from "../../src/x509/describe.ts";
import { verifyChain } from "../../src/x509/chain-verification.ts";
import { decodeName, formatIp, formatName } from "../../src/x509/x509-text.ts";
import * as der from "../../src/x509/der.ts";
import { parseCertificate, type ParsedCertificate } from "../../src/x509/parse.ts";
import { decodePem } from "../../src/x509/pem.ts";
import {
  generateKey,
  openssl,
  opensslIssuer,
  opensslRoot,
  opensslTime,
} from "../helpers/openssl.ts";

const work = await Deno.makeTempDir({ prefix: "sentry-describe-test-" });
globalThis.addEventListener("unload", () => Deno.removeSync(work, { recursive: true }));

async function writeTemp(name: string, content: string): Promise<string> {
  const path = join(work, `${crypto.randomUUID()}-${name}`);
  await Deno.writeTextFile(path, content);
  return path;
}

function parsePem(pem: string): ParsedCertificate[] {
  return decodePem(pem).filter((b) => b.label === "CERTIFICATE").map((b) =>
    parseCertificate(b.der)
  );
}

/** A CA or leaf made with openssl: PEM texts and file paths. */
interface Made {
  cert: string;
  certPath: string;
  keyPath: string;
  parsed: ParsedCertificate;
}

async function finish(certPath: string, keyPath: string): Promise<Made> {
  const cert = await Deno.readTextFile(certPath);
  return { cert, certPath, keyPath, parsed: parsePem(cert)[0] };
}

/** A self-signed root with `extensions` (openssl -addext lines). */
async function makeRoot(subject: string, extensions: string[], days = 30): Promise<Made> {
  const keyPath = await writeTemp("root.key", await generateKey("ec-p256"));
  const certPath = join(work, `${crypto.randomUUID()}-root.crt`);
  await openssl([
    "req",
    "-x509",
    "-new",
    "-key",
    keyPath,
    "-multivalue-rdn",
    "-subj",
    subject,
    "-days",
    String(days),
    ...extensions.flatMap((ext) => ["-addext", ext]),
    "-out",
    certPath,
  ]);
  return await finish(certPath, keyPath);
}

/** A certificate for a new key of `keyType`, signed by `ca` with the given v3 extensions. */
async function issue(
  ca: Made,
  subject: string,
  extensions: string,
  options: { keyType?: string[]; serial?: string; days?: number } = {},
): Promise<Made> {
  const keyPath = await writeTemp(
    "leaf.key",
    await openssl(["genpkey", ...(options.keyType ?? ["-algorithm", "ED25519"])]),
  );
  const csrPath = await writeTemp(
    "leaf.csr",
    await openssl(["req", "-new", "-key", keyPath, "-subj", subject]),
  );
  const extPath = await writeTemp("ext.cnf", `[v3]\n${extensions}\n`);
  const certPath = join(work, `${crypto.randomUUID()}-leaf.crt`);
  await openssl([
    "x509",
    "-req",
    "-in",
    csrPath,
    "-CA",
    ca.certPath,
    "-CAkey",
    ca.keyPath,
    "-set_serial",
    options.serial ?? "0x0F1E2D3C4B5A69788796A5B4C3D2E1F0",
    "-days",
    String(options.days ?? 10),
    "-extfile",
    extPath,
    "-extensions",
    "v3",
    "-out",
    certPath,
  ]);
  return await finish(certPath, keyPath);
}

/** openssl's value of one extension, from `-ext NAME` (the lines after the header). */
async function opensslExt(made: Made, name: string): Promise<string> {
  const text = await openssl(["x509", "-in", made.certPath, "-noout", "-ext", name]);
  return text.split("\n").slice(1).map((l) => l.trim()).filter(Boolean).join(", ");
}

/** openssl's RFC 2253 name (reversed order) turned into our encoding-order form. */
async function opensslName(made: Made, which: "subject" | "issuer"): Promise<string> {
  const text = await openssl([
    "x509",
    "-in",
    made.certPath,
    "-noout",
    `-${which}`,
    "-nameopt",
    "RFC2253",
  ]);
  const rfc2253 = text.trim().slice(which.length + 1);
  return rfc2253.split(/(?<!\\),/).reverse()
    .map((rdn) => rdn.split(/(?<!\\)\+/).reverse().join("+"))
    .join(", ");
}

const root = await makeRoot("/C=US/ST=CA/L=San Francisco/O=Example, Inc./OU=Platform+CN=Root CA", [
  "basicConstraints=critical,CA:TRUE,pathlen:1",
  "keyUsage=critical,keyCertSign,cRLSign",
]);
const intermediate = await issue(
  root,
  "/O=cluster.local/CN=issuer",
  "basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign,digitalSignature\n" +
    "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid",
  { keyType: ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"], serial: "0x00FF01" },
);
const leaf = await issue(
  intermediate,
  "/O=cluster.local/CN=myapp/emailAddress=ops@example.com/serialNumber=42",
  "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n" +
    "extendedKeyUsage=serverAuth,clientAuth,1.2.3.4.5\n" +
    "subjectAltName=DNS:myapp.default.svc,IP:10.1.2.3,IP:2001:db8::1,email:me@example.com," +
    "URI:https://example.com/x,URI:spiffe://cluster.local/ns/default/myapp\n" +
    "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid",
);
const now = new Date();

Deno.test("subject and issuer match openssl's names, in encoding order", async () => {
  for (const made of [root, intermediate, leaf]) {
    const described = describeCertificate(made.parsed, now);
    assert.equal(described.subject, await opensslName(made, "subject"));
    assert.equal(described.issuer, await opensslName(made, "issuer"));
  }
  const described = describeCertificate(leaf.parsed, now);
  assert.equal(
    described.subject,
    "O=cluster.local, CN=myapp, emailAddress=ops@example.com, serialNumber=42",
  );
  assert.equal(described.issuer, "O=cluster.local, CN=issuer");
  assert.equal(
    describeCertificate(root.parsed, now).subject,
    "C=US, ST=CA, L=San Francisco, O=Example\\, Inc., CN=Root CA+OU=Platform",
  );
});

Deno.test("SANs of every kind and the SPIFFE ID", async () => {
  const described = describeCertificate(leaf.parsed, now);
  assert.deepEqual(described.subjectAltNames, {
    dns: ["myapp.default.svc"],
    uris: ["https://example.com/x", "spiffe://cluster.local/ns/default/myapp"],
    ips: ["10.1.2.3", "2001:db8::1"],
    emails: ["me@example.com"],
    other: [],
  });
  assert.equal(described.spiffeId, "spiffe://cluster.local/ns/default/myapp");
  const text = await opensslExt(leaf, "subjectAltName");
  assert.match(text, /DNS:myapp\.default\.svc/);
  assert.match(text, /IP Address:10\.1\.2\.3/);
  assert.match(text, /IP Address:2001:DB8:0:0:0:0:0:1/);
  assert.match(text, /email:me@example\.com/);
  assert.match(text, /URI:spiffe:\/\/cluster\.local\/ns\/default\/myapp/);
  const rootDescribed = describeCertificate(root.parsed, now);
  assert.equal(rootDescribed.spiffeId, null);
  assert.deepEqual(rootDescribed.subjectAltNames, {
    dns: [],
    uris: [],
    ips: [],
    emails: [],
    other: [],
  });
});

Deno.test("serial and fingerprints are what openssl prints", async () => {
  for (const made of [root, intermediate, leaf]) {
    const described = describeCertificate(made.parsed, now);
    const serial = await openssl(["x509", "-in", made.certPath, "-noout", "-serial"]);
    assert.equal(`serial=${described.serial}`, serial.trim());
    const sha256 = await openssl([
      "x509",
      "-in",
      made.certPath,
      "-noout",
      "-fingerprint",
      "-sha256",
    ]);
    assert.equal(`sha256 Fingerprint=${described.fingerprints.sha256}`, sha256.trim());
    const sha1 = await openssl(["x509", "-in", made.certPath, "-noout", "-fingerprint", "-sha1"]);
    assert.equal(`sha1 Fingerprint=${described.fingerprints.sha1}`, sha1.trim());
  }
  assert.equal(describeCertificate(leaf.parsed, now).serial, "0F1E2D3C4B5A69788796A5B4C3D2E1F0");
  // DER keeps 0x00FF01 as 00 FF 01 (positive); openssl and we print FF01.
  assert.equal(describeCertificate(intermediate.parsed, now).serial, "FF01");
  assert.equal(formatSerial("00ff01"), "FF01");
  assert.equal(formatSerial("00"), "00");
  assert.equal(formatSerial("0a"), "0A");
});

Deno.test("key usages, extended key usages, CA and pathlen match openssl", async () => {
  const names: Record<string, string> = {
    "Digital Signature": "digitalSignature",
    "Non Repudiation": "nonRepudiation",
    "Key Encipherment": "keyEncipherment",
    "Data Encipherment": "dataEncipherment",
    "Key Agreement": "keyAgreement",
    "Certificate Sign": "keyCertSign",
    "CRL Sign": "cRLSign",
  };
  for (const made of [root, intermediate, leaf]) {
    const described = describeCertificate(made.parsed, now);
    const usage = (await opensslExt(made, "keyUsage")).split(", ").map((n) => names[n]);
    assert.deepEqual(described.keyUsage, usage);
  }
  const l = describeCertificate(leaf.parsed, now);
  assert.deepEqual(l.keyUsage, ["digitalSignature", "keyEncipherment"]);
  assert.deepEqual(l.extendedKeyUsage, ["serverAuth", "clientAuth", "1.2.3.4.5"]);
  assert.equal(l.ca, false);
  assert.equal(l.pathLength, null);
  const i = describeCertificate(intermediate.parsed, now);
  assert.equal(await opensslExt(intermediate, "basicConstraints"), "CA:TRUE, pathlen:0");
  assert.equal(i.ca, true);
  assert.equal(i.pathLength, 0);
  assert.deepEqual(i.keyUsage, ["digitalSignature", "keyCertSign", "cRLSign"]);
  assert.deepEqual(i.extendedKeyUsage, []);
  const r = describeCertificate(root.parsed, now);
  assert.equal(r.ca, true);
  assert.equal(r.pathLength, 1);
  assert.equal(r.selfSigned, true);
  assert.equal(i.selfSigned, false);
  const ku = l.extensions.find((e) => e.name === "keyUsage");
  assert.deepEqual(ku, { oid: "2.5.29.15", name: "keyUsage", critical: true });
  assert.ok(l.extensions.some((e) => e.name === "extKeyUsage" && !e.critical));
});

Deno.test("key identifiers, key types, signature algorithms and version", async () => {
  const l = describeCertificate(leaf.parsed, now);
  const i = describeCertificate(intermediate.parsed, now);
  assert.equal(l.subjectKeyId, await opensslExt(leaf, "subjectKeyIdentifier"));
  assert.equal(l.authorityKeyId, i.subjectKeyId);
  assert.equal(l.version, 3);
  assert.equal(l.keyType, "ed25519");
  const text = await openssl(["x509", "-in", leaf.certPath, "-noout", "-text"]);
  assert.equal(
    `Signature Algorithm: ${l.signatureAlgorithm}`,
    /Signature Algorithm: \S+/.exec(text)![0],
  );
  assert.equal(l.signatureAlgorithm, "ecdsa-with-SHA256");
  assert.equal(i.keyType, "ec-p384");
  assert.equal(i.signatureAlgorithm, "ecdsa-with-SHA256");
  assert.equal(describeCertificate(root.parsed, now).keyType, "ec-p256");
  const rsa = await issue(root, "/CN=rsa", "basicConstraints=CA:FALSE\nsubjectKeyIdentifier=none", {
    keyType: ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
  });
  assert.equal(describeCertificate(rsa.parsed, now).keyType, "rsa-2048");
  assert.equal(describeCertificate(rsa.parsed, now).subjectKeyId, null);
  // The SPKI hash matches openssl's.
  const spki = await new Deno.Command("openssl", {
    args: ["x509", "-in", leaf.certPath, "-noout", "-pubkey"],
    stdout: "piped",
  }).output();
  const spkiDer = decodePem(new TextDecoder().decode(spki.stdout))[0].der;
  const digest = createHash("sha256").update(spkiDer).digest();
  assert.equal(
    l.publicKeySha256,
    [...digest].map((b) => b.toString(16).padStart(2, "0").toUpperCase()).join(":"),
  );
});

Deno.test("validity is described relative to now, as openssl's dates", async () => {
  const dates = await openssl(["x509", "-in", leaf.certPath, "-noout", "-startdate", "-enddate"]);
  const [start, end] = dates.trim().split("\n").map((l) => new Date(l.split("=")[1]));
  const v = describeCertificate(leaf.parsed, now).validity;
  assert.equal(v.notBefore, start.toISOString());
  assert.equal(v.notAfter, end.toISOString());
  assert.equal(v.status, "valid");
  assert.equal(v.lifetimeSeconds, 10 * 86_400);

  const notBefore = new Date("2030-01-01T00:00:00Z");
  const notAfter = new Date("2030-01-02T00:00:00Z");
  assert.deepEqual(describeValidity(notBefore, notAfter, new Date("2030-01-01T00:00:30Z")), {
    notBefore: "2030-01-01T00:00:00.000Z",
    notAfter: "2030-01-02T00:00:00.000Z",
    status: "valid",
    secondsLeft: 86_370,
    lifetimeSeconds: 86_400,
  });
  const later = describeValidity(notBefore, notAfter, new Date("2030-01-04T00:00:00Z"));
  assert.equal(later.status, "expired");
  assert.equal(later.secondsLeft, -2 * 86_400);
  const earlier = describeValidity(notBefore, notAfter, new Date("2029-12-31T00:00:00Z"));
  assert.equal(earlier.status, "not-yet-valid");
  assert.equal(earlier.secondsLeft, 2 * 86_400);
});

Deno.test("formatDuration keeps the two largest units", () => {
  const s = 1000, m = 60 * s, h = 60 * m, d = 24 * h;
  assert.equal(formatDuration(24 * h - 30 * s), "23h 59m");
  assert.equal(formatDuration(2 * d), "2d");
  assert.equal(formatDuration(-2 * d - 5 * s), "2d");
  assert.equal(formatDuration(2 * d + 3 * h + 4 * m), "2d 3h");
  assert.equal(formatDuration(5 * m + 12 * s), "5m 12s");
  assert.equal(formatDuration(42 * s + 900), "42s");
  assert.equal(formatDuration(400), "0s");
  assert.equal(formatDuration(365 * d), "365d");
});

Deno.test("IP addresses: dotted IPv4, RFC 5952 IPv6", () => {
  assert.equal(formatIp(Uint8Array.of(127, 0, 0, 1)), "127.0.0.1");
  const v6 = (text: string) => {
    const groups = text.split(":").map((g) => parseInt(g, 16));
    const bytes = new Uint8Array(16);
    groups.forEach((g, i) => [bytes[2 * i], bytes[2 * i + 1]] = [g >> 8, g & 0xff]);
    return bytes;
  };
  assert.equal(formatIp(v6("0:0:0:0:0:0:0:1")), "::1");
  assert.equal(formatIp(v6("0:0:0:0:0:0:0:0")), "::");
  assert.equal(formatIp(v6("2001:db8:0:0:1:0:0:1")), "2001:db8::1:0:0:1");
  assert.equal(formatIp(v6("2001:db8:0:1:1:1:1:1")), "2001:db8:0:1:1:1:1:1");
  assert.equal(formatIp(v6("fe80:0:0:0:0:0:0:0")), "fe80::");
});

Deno.test("names: unknown OIDs, non-string values, UTF-8 and BMP strings, escaping", () => {
  const attribute = (oid: string, value: Uint8Array) => der.set(der.sequence(der.oid(oid), value));
  const name = der.sequence(
    attribute("2.5.4.6", der.tlv(der.Tag.PRINTABLE_STRING, Buffer.from("DE"))),
    attribute("2.5.4.10", der.tlv(der.Tag.UTF8_STRING, Buffer.from("Zürich AG", "utf8"))),
    attribute("2.5.4.11", der.tlv(0x1e, Buffer.from([0, 0x48, 0, 0x69]))), // BMPString "Hi"
    attribute("1.2.3.4", der.tlv(der.Tag.UTF8_STRING, Buffer.from("custom"))),
    attribute("1.2.3.5", der.tlv(der.Tag.INTEGER, Uint8Array.of(7))),
    attribute("2.5.4.3", der.tlv(der.Tag.UTF8_STRING, Buffer.from(" a+b;c "))),
    attribute("0.9.2342.19200300.100.1.25", der.ia5String("example")),
  );
  assert.equal(
    formatName(name),
    "C=DE, O=Zürich AG, OU=Hi, 1.2.3.4=custom, 1.2.3.5=#020107, CN=\\ a\\+b\\;c\\ , DC=example",
  );
  assert.equal(decodeName(name)[3][0].oid, "1.2.3.4");
  assert.equal(formatName(der.sequence()), "");
  assert.throws(() => formatName(Uint8Array.of(0x30, 0x03, 0x02, 0x01, 0x00)), der.DerError);
});

// ---------------------------------------------------------------------------------------------
// CSRs

async function csrOf(keyArgs: string[], subject: string, extensions: string[] = []) {
  const keyPath = await writeTemp("csr.key", await openssl(["genpkey", ...keyArgs]));
  const pem = await openssl([
    "req",
    "-new",
    "-key",
    keyPath,
    "-subj",
    subject,
    ...extensions.flatMap((ext) => ["-addext", ext]),
  ]);
  return { pem, der: decodePem(pem)[0].der };
}

Deno.test("CSR: subject, key type, SANs from extensionRequest, signature", async () => {
  const csr = await csrOf(
    ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
    "/O=x/CN=y",
    [
      "subjectAltName=DNS:a.example,IP:192.168.0.1,URI:spiffe://td/ns/n/app,email:a@b.c",
      "keyUsage=critical,digitalSignature",
    ],
  );
  const d = describeCsr(parseCsr(csr.der));
  assert.equal(d.subject, "O=x, CN=y");
  assert.equal(d.keyType, "ec-p256");
  assert.equal(d.signatureAlgorithm, "ecdsa-with-SHA256");
  assert.equal(d.signatureValid, true);
  assert.deepEqual(d.subjectAltNames, {
    dns: ["a.example"],
    uris: ["spiffe://td/ns/n/app"],
    ips: ["192.168.0.1"],
    emails: ["a@b.c"],
    other: [],
  });
  assert.equal(d.spiffeId, "spiffe://td/ns/n/app");
  assert.deepEqual(d.extensions, [
    { oid: "2.5.29.17", name: "subjectAltName", critical: false },
    { oid: "2.5.29.15", name: "keyUsage", critical: true },
  ]);
  assert.equal(d.acceptedBySentry, true);
  assert.equal(d.rejection, null);
});

Deno.test("CSR: empty subject as Dapr sends, no attributes", async () => {
  const csr = await csrOf(["-algorithm", "ED25519"], "/");
  const d = describeCsr(parseCsr(csr.der));
  assert.equal(d.subject, "");
  assert.equal(d.keyType, "ed25519");
  assert.equal(d.signatureValid, true);
  assert.equal(d.spiffeId, null);
  assert.deepEqual(d.extensions, []);
});

Deno.test("CSR: a tampered request's signature does not verify", async () => {
  const csr = await csrOf(["-algorithm", "ED25519"], "/CN=tamper");
  const bytes = Buffer.from(csr.der);
  bytes[bytes.length - 1] ^= 0x01; // last signature byte
  const d = describeCsr(parseCsr(bytes));
  assert.equal(d.signatureValid, false);
  assert.equal(d.acceptedBySentry, false);
  assert.match(d.rejection!, /invalid signature/);
});

Deno.test("CSR: a key sentry refuses is described, with the reason", async () => {
  const csr = await csrOf(["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024"], "/CN=weak");
  const d = describeCsr(parseCsr(csr.der));
  assert.equal(d.keyType, "rsa-1024");
  assert.equal(d.signatureValid, true);
  assert.equal(d.acceptedBySentry, false);
  assert.match(d.rejection!, /unsupported public key rsa-1024/);
});

Deno.test("CSR: malformed DER throws DerError", () => {
  assert.throws(() => parseCsr(Uint8Array.of(0x30, 0x03, 0x02, 0x01, 0x00)), der.DerError);
  assert.throws(() => parseCsr(Uint8Array.of(1, 2, 3)), der.DerError);
});

// ---------------------------------------------------------------------------------------------
// Chains

Deno.test("chain: leaf + intermediate verify against the root", () => {
  const result = verifyChain([leaf.parsed, intermediate.parsed], [root.parsed], now);
  assert.deepEqual(result, {
    verified: true,
    anchors: 1,
    anchor: "C=US, ST=CA, L=San Francisco, O=Example\\, Inc., CN=Root CA+OU=Platform",
  });
  // The root may be part of the chain too; other anchors do not matter.
  const other = parsePem(root.cert)[0];
  assert.equal(
    verifyChain([leaf.parsed, intermediate.parsed, root.parsed], [other], now).verified,
    true,
  );
  // A root verifies against itself.
  assert.equal(verifyChain([root.parsed], [root.parsed], now).verified, true);
});

Deno.test("chain: the wrong anchor", async () => {
  const stranger = await makeRoot("/O=cluster.local", ["basicConstraints=critical,CA:TRUE"]);
  const result = verifyChain([leaf.parsed, intermediate.parsed], [stranger.parsed], now);
  assert.equal(result.verified, false);
  assert.equal(result.anchors, 1);
  assert.equal(result.failedIndex, 1);
  assert.match(result.error!, /certificate #2 \(O=cluster\.local, CN=issuer\) is not signed by/);
  assert.match(result.error!, /its issuer is "C=US/);

  // Same name, different key: the signature is what fails.
  const twin = await makeRoot(
    "/C=US/ST=CA/L=San Francisco/O=Example, Inc./OU=Platform+CN=Root CA",
    ["basicConstraints=critical,CA:TRUE"],
  );
  const sameName = verifyChain([leaf.parsed, intermediate.parsed], [twin.parsed], now);
  assert.equal(sameName.verified, false);
  assert.match(sameName.error!, /the signature does not verify/);

  // A self-signed chain end that is not an anchor.
  const notAnchor = verifyChain([root.parsed], [stranger.parsed], now);
  assert.equal(notAnchor.failedIndex, 0);
  assert.match(notAnchor.error!, /is self-signed and not among the 1 anchors/);

  // Anchors that are not self-signed do not count.
  const none = verifyChain([leaf.parsed], [intermediate.parsed], now);
  assert.deepEqual(none, {
    verified: false,
    anchors: 0,
    error: "none of the 1 anchors is a self-signed certificate",
  });
});

Deno.test("chain: a broken link names both certificates", async () => {
  const otherIssuer = await issue(
    root,
    "/O=cluster.local/CN=other-issuer",
    "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign",
    { keyType: ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"] },
  );
  const result = verifyChain([leaf.parsed, otherIssuer.parsed], [root.parsed], now);
  assert.equal(result.verified, false);
  assert.equal(result.failedIndex, 0);
  assert.match(
    result.error!,
    /^certificate #1 \(O=cluster\.local, CN=myapp.*\) is not signed by certificate #2 \(O=cluster\.local, CN=other-issuer\)/,
  );
  // Missing intermediate: the leaf alone does not reach the root.
  const alone = verifyChain([leaf.parsed], [root.parsed], now);
  assert.equal(alone.failedIndex, 0);
  assert.match(alone.error!, /not signed by any of the 1 anchors/);
});

Deno.test("chain: a signer that is not a CA, or may not sign certificates", async () => {
  const notCa = await issue(root, "/CN=not-a-ca", "basicConstraints=critical,CA:FALSE", {
    keyType: ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
  });
  const below = await issue(notCa, "/CN=below", "basicConstraints=critical,CA:FALSE");
  const result = verifyChain([below.parsed, notCa.parsed], [root.parsed], now);
  assert.equal(result.failedIndex, 1);
  assert.match(result.error!, /certificate #2 \(CN=not-a-ca\) is not a CA/);

  const noCertSign = await issue(
    root,
    "/CN=no-cert-sign",
    "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,digitalSignature",
    { keyType: ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"] },
  );
  const below2 = await issue(noCertSign, "/CN=below2", "basicConstraints=critical,CA:FALSE");
  const result2 = verifyChain([below2.parsed, noCertSign.parsed], [root.parsed], now);
  assert.equal(result2.failedIndex, 1);
  assert.match(result2.error!, /may not sign certificates \(KeyUsage lacks keyCertSign\)/);
});

Deno.test("chain: path length limits", async () => {
  // The intermediate has pathlen:0, so a CA below it cannot issue.
  const sub = await issue(
    intermediate,
    "/CN=sub-ca",
    "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign",
    { keyType: ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"] },
  );
  const below = await issue(sub, "/CN=deep", "basicConstraints=critical,CA:FALSE");
  const result = verifyChain(
    [below.parsed, sub.parsed, intermediate.parsed],
    [root.parsed],
    now,
  );
  assert.equal(result.verified, false);
  assert.equal(result.failedIndex, 2);
  assert.match(result.error!, /certificate #3 .* allows 0 intermediate\(s\) below it/);
});

Deno.test("chain: expired or not yet valid certificates fail, naming the certificate", async () => {
  const future = new Date(now.getTime() + 15 * 86_400_000); // the leaf lives 10 days
  const expired = verifyChain([leaf.parsed, intermediate.parsed], [root.parsed], future);
  assert.equal(expired.verified, false);
  assert.equal(expired.failedIndex, 0);
  assert.match(expired.error!, /^certificate #1 \(.*CN=myapp.*\) expired at \d{4}-/);

  const past = new Date(now.getTime() - 86_400_000);
  const early = verifyChain([leaf.parsed, intermediate.parsed], [root.parsed], past);
  assert.equal(early.failedIndex, 0);
  assert.match(early.error!, /is not valid before/);

  // The anchor itself expiring (root lives 30 days, leaf and intermediate 10).
  const shortRoot = await makeRoot("/CN=short-root", [
    "basicConstraints=critical,CA:TRUE",
    "keyUsage=critical,keyCertSign",
  ], 1);
  const underShort = await issue(shortRoot, "/CN=under-short", "basicConstraints=CA:FALSE");
  const anchorExpired = verifyChain(
    [underShort.parsed],
    [shortRoot.parsed],
    new Date(now.getTime() + 3 * 86_400_000),
  );
  assert.equal(anchorExpired.failedIndex, undefined);
  assert.match(anchorExpired.error!, /^the anchor "CN=short-root" expired at/);

  // A truly expired intermediate, made by openssl ca with a window in the past.
  const caDir = await Deno.makeTempDir({ dir: work });
  const opensslCa = await opensslRoot(caDir);
  const old = await opensslIssuer(opensslCa, {
    start: opensslTime(new Date(now.getTime() - 3 * 86_400_000)),
    end: opensslTime(new Date(now.getTime() - 86_400_000)),
  });
  const result = verifyChain(
    parsePem(old.cert),
    parsePem(await Deno.readTextFile(opensslCa.certPath)),
    now,
  );
  assert.equal(result.verified, false);
  assert.equal(result.anchor, "O=cluster.local");
  assert.match(result.error!, /^certificate #1 \(O=cluster\.local\) expired at/);
});

Deno.test("chain: nothing to verify", () => {
  assert.deepEqual(verifyChain([], [root.parsed], now), {
    verified: false,
    anchors: 1,
    error: "there is no certificate to verify",
  });
});
