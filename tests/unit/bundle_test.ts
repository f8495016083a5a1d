/**
 * validateBundle (docs/compatibility.md#trust-bundle-validation) with bring-your-own bundles made by the openssl CLI: the key
 * formats Dapr accepts, longer chains, and every refusal with a message naming the check and
 * the file.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { join } from "node:path";
import {
  BundleError,
  type BundleNames,
  type BundlePem,
  validateBundle,
} from "../../src/ca/bundle.ts";
import { issueWorkloadCertificate } from "../../src/ca/signer.ts";
import { SpiffeId } from "../../src/ca/spiffe.ts";
import { openssl, verifyChain } from "../helpers/openssl.ts";

const work = await Deno.makeTempDir({ prefix: "sentry-bundle-test-" });
globalThis.addEventListener("unload", () => Deno.removeSync(work, { recursive: true }));
const DAY = 86_400_000;

interface Issued {
  /** Path of the certificate PEM file. */
  certPath: string;
  cert: string;
  keyPath: string;
  key: string;
}

async function file(name: string, content: string): Promise<string> {
  const path = join(work, `${crypto.randomUUID()}-${name}`);
  await Deno.writeTextFile(path, content);
  return path;
}

type KeyKind = "ec" | "ed25519" | "rsa";

async function newKey(kind: KeyKind = "ec"): Promise<{ keyPath: string; key: string }> {
  const options = {
    ec: ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
    ed25519: ["-algorithm", "ED25519"],
    rsa: ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
  }[kind];
  const key = await openssl(["genpkey", ...options]);
  return { key, keyPath: await file("key.pem", key) };
}

const CA_EXTENSIONS = [
  "-addext",
  "basicConstraints=critical,CA:TRUE",
  "-addext",
  "keyUsage=critical,keyCertSign,cRLSign",
];

/** A self-signed root made with `openssl req -x509`. */
async function makeRoot(
  subject = "/O=Example Root",
  days = 3650,
  extensions = CA_EXTENSIONS,
  kind: KeyKind = "ec",
): Promise<Issued> {
  const { key, keyPath } = await newKey(kind);
  const certPath = join(work, `${crypto.randomUUID()}-root.crt`);
  await openssl([
    "req",
    "-x509",
    "-new",
    "-key",
    keyPath,
    "-subj",
    subject,
    "-days",
    String(days),
    ...extensions,
    "-out",
    certPath,
  ]);
  return { certPath, cert: await Deno.readTextFile(certPath), keyPath, key };
}

const INTERMEDIATE_EXTFILE = `[v3]
basicConstraints = critical, CA:TRUE
keyUsage = critical, digitalSignature, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
`;

/** A certificate signed by `parent` with `openssl x509 -req` and an extfile. */
async function makeSigned(
  parent: Issued,
  subject = "/O=spiffe:\\/\\/cluster.local\\/ns\\/dapr-system\\/dapr-sentry",
  days = 365,
  extfile = INTERMEDIATE_EXTFILE,
  kind: KeyKind = "ec",
): Promise<Issued> {
  const { key, keyPath } = await newKey(kind);
  const csrPath = await file(
    "req.csr",
    await openssl(["req", "-new", "-key", keyPath, "-subj", subject]),
  );
  const certPath = join(work, `${crypto.randomUUID()}-issuer.crt`);
  const serial = "0x" + Buffer.from(crypto.getRandomValues(new Uint8Array(16))).toString("hex");
  await openssl([
    "x509",
    "-req",
    "-in",
    csrPath,
    "-CA",
    parent.certPath,
    "-CAkey",
    parent.keyPath,
    "-set_serial",
    serial,
    "-days",
    String(days),
    "-extfile",
    await file("ext.cnf", extfile),
    "-extensions",
    "v3",
    "-out",
    certPath,
  ]);
  return { certPath, cert: await Deno.readTextFile(certPath), keyPath, key };
}

function countBlocks(pem: string): number {
  return (pem.match(/-----BEGIN CERTIFICATE-----/g) ?? []).length;
}

function derOf(pem: string): Buffer {
  const match = /-----BEGIN CERTIFICATE-----([\s\S]*?)-----END CERTIFICATE-----/.exec(pem)!;
  return Buffer.from(match[1].replace(/\s+/g, ""), "base64");
}

/** Asserts validateBundle refuses `pem` with a BundleError matching every pattern. */
function assertRefused(
  pem: BundlePem,
  patterns: RegExp[],
  now = new Date(),
  names?: BundleNames,
): void {
  assert.throws(() => validateBundle(pem, now, names), (error: Error) => {
    assert.ok(error instanceof BundleError, `not a BundleError: ${error}`);
    for (const pattern of patterns) assert.match(error.message, pattern);
    return true;
  });
}

/** Signs a workload certificate with the bundle and has openssl verify it. */
async function assertUsable(pem: BundlePem): Promise<void> {
  const now = new Date();
  const trust = validateBundle(pem, now);
  const spki = Buffer.from(
    (await openssl(["pkey", "-pubout", "-in", (await newKey("ed25519")).keyPath]))
      .replace(/-----[A-Z ]+-----/g, "")
      .replace(/\s+/g, ""),
    "base64",
  );
  const issued = issueWorkloadCertificate(
    trust,
    SpiffeId.forWorkload("cluster.local", "default", "myapp"),
    spki,
    { ttlMs: DAY, skewMs: 15 * 60_000 },
    now,
  );
  assert.match(await verifyChain(work, trust.anchorsPem, issued.chainPem, "sslclient"), /OK/);
  assert.match(await verifyChain(work, trust.anchorsPem, issued.chainPem, "sslserver"), /OK/);
}

// Shared fixtures.
const root = await makeRoot();
const issuer = await makeSigned(root);
const otherRoot = await makeRoot("/O=Other Root");

Deno.test("an openssl-made bundle with a PKCS#8 issuer key is accepted", async () => {
  assert.match(issuer.key, /^-----BEGIN PRIVATE KEY-----/);
  const pem = { caCrt: root.cert, issuerCrt: issuer.cert, issuerKey: issuer.key };
  const trust = validateBundle(pem, new Date());
  assert.equal(trust.anchors.length, 1);
  assert.equal(trust.issuerChain.length, 1);
  assert.ok(trust.issuerChain[0].der.equals(derOf(issuer.cert)));
  assert.ok(trust.anchors[0].der.equals(derOf(root.cert)));
  assert.equal(countBlocks(trust.issuerChainPem), 1);
  assert.ok(derOf(trust.issuerChainPem).equals(derOf(issuer.cert)));
  assert.equal(countBlocks(trust.anchorsPem), 1);
  assert.equal(trust.pem, pem);

  // Dates and key id as openssl sees them.
  const dates = await openssl(["x509", "-in", issuer.certPath, "-noout", "-startdate", "-enddate"]);
  const [, start] = /notBefore=(.*)/.exec(dates)!;
  const [, end] = /notAfter=(.*)/.exec(dates)!;
  assert.equal(trust.issuerNotBefore.getTime(), new Date(start).getTime());
  assert.equal(trust.issuerNotAfter.getTime(), new Date(end).getTime());
  const rootDates = await openssl(["x509", "-in", root.certPath, "-noout", "-enddate"]);
  assert.equal(
    trust.rootNotAfter.getTime(),
    new Date(/notAfter=(.*)/.exec(rootDates)![1]).getTime(),
  );
  const text = await openssl([
    "x509",
    "-in",
    issuer.certPath,
    "-noout",
    "-ext",
    "subjectKeyIdentifier",
  ]);
  const ski = /\n\s+([0-9A-F:]+)\s*$/.exec(text)![1].replaceAll(":", "").toLowerCase();
  assert.equal(Buffer.from(trust.issuer.keyId).toString("hex"), ski);
  await assertUsable(pem);
});

Deno.test("SEC1 'EC PRIVATE KEY' issuer keys are accepted (openssl ec, pkey -traditional)", async () => {
  const viaEc = await openssl(["ec", "-in", issuer.keyPath]);
  const viaPkey = await openssl(["pkey", "-traditional", "-in", issuer.keyPath]);
  for (const key of [viaEc, viaPkey]) {
    assert.match(key, /^-----BEGIN EC PRIVATE KEY-----/);
    const pem = { caCrt: root.cert, issuerCrt: issuer.cert, issuerKey: key };
    const trust = validateBundle(pem, new Date());
    assert.equal(trust.issuer.key.privateKey.asymmetricKeyType, "ec");
  }
  await assertUsable({ caCrt: root.cert, issuerCrt: issuer.cert, issuerKey: viaEc });
});

Deno.test("PKCS#1 'RSA PRIVATE KEY' issuer keys are accepted", async () => {
  const rsaIssuer = await makeSigned(root, "/O=RSA Issuer", 365, INTERMEDIATE_EXTFILE, "rsa");
  const pkcs1 = await openssl(["pkey", "-traditional", "-in", rsaIssuer.keyPath]);
  assert.match(pkcs1, /^-----BEGIN RSA PRIVATE KEY-----/);
  const pem = { caCrt: root.cert, issuerCrt: rsaIssuer.cert, issuerKey: pkcs1 };
  const trust = validateBundle(pem, new Date());
  assert.equal(trust.issuer.key.privateKey.asymmetricKeyType, "rsa");
  await assertUsable(pem);
});

Deno.test("Ed25519 roots and issuers are accepted", async () => {
  const edRoot = await makeRoot("/O=Ed Root", 3650, CA_EXTENSIONS, "ed25519");
  const edIssuer = await makeSigned(edRoot, "/O=Ed Issuer", 365, INTERMEDIATE_EXTFILE, "ed25519");
  const pem = { caCrt: edRoot.cert, issuerCrt: edIssuer.cert, issuerKey: edIssuer.key };
  assert.equal(validateBundle(pem, new Date()).issuer.key.privateKey.asymmetricKeyType, "ed25519");
  await assertUsable(pem);
});

Deno.test("a 2-level chain: issuer.crt holds the issuer then the intermediate", async () => {
  const intermediate = await makeSigned(root, "/O=Intermediate");
  const deepIssuer = await makeSigned(intermediate, "/O=Deep Issuer");
  const pem = {
    caCrt: root.cert,
    issuerCrt: deepIssuer.cert + intermediate.cert,
    issuerKey: deepIssuer.key,
  };
  const trust = validateBundle(pem, new Date());
  assert.equal(trust.issuerChain.length, 2);
  assert.ok(trust.issuerChain[0].der.equals(derOf(deepIssuer.cert)));
  assert.ok(trust.issuerChain[1].der.equals(derOf(intermediate.cert)));
  assert.equal(countBlocks(trust.issuerChainPem), 2);
  await assertUsable(pem);

  // Without the intermediate the issuer does not reach the root.
  assertRefused(
    { caCrt: root.cert, issuerCrt: deepIssuer.cert, issuerKey: deepIssuer.key },
    [/issuer\.crt does not chain to any trust anchor in ca\.crt/],
  );
  // In the wrong order the links do not verify.
  assertRefused(
    { caCrt: root.cert, issuerCrt: intermediate.cert + deepIssuer.cert, issuerKey: deepIssuer.key },
    [/issuer\.crt: certificate #1 is not signed by certificate #2 \(broken chain\)/],
  );
});

Deno.test("a trailing self-signed root in issuer.crt is dropped", async () => {
  const pem = { caCrt: root.cert, issuerCrt: issuer.cert + root.cert, issuerKey: issuer.key };
  const trust = validateBundle(pem, new Date());
  assert.equal(trust.issuerChain.length, 1);
  assert.equal(countBlocks(trust.issuerChainPem), 1);
  assert.ok(derOf(trust.issuerChainPem).equals(derOf(issuer.cert)));
  await assertUsable(pem);
});

Deno.test("ca.crt may hold several anchors", async () => {
  for (const caCrt of [otherRoot.cert + root.cert, root.cert + otherRoot.cert]) {
    const pem = { caCrt, issuerCrt: issuer.cert, issuerKey: issuer.key };
    const trust = validateBundle(pem, new Date());
    assert.equal(trust.anchors.length, 2);
    assert.equal(countBlocks(trust.anchorsPem), 2);
    await assertUsable(pem);
  }
});

Deno.test("rootNotAfter is the earliest NotAfter among the anchors", () => {
  const trust = validateBundle(
    { caCrt: root.cert + otherRoot.cert, issuerCrt: issuer.cert, issuerKey: issuer.key },
    new Date(),
  );
  const earliest = Math.min(...trust.anchors.map((anchor) => anchor.notAfter.getTime()));
  assert.equal(trust.rootNotAfter.getTime(), earliest);
});

Deno.test("refused: the key does not match the issuer certificate", async () => {
  const other = await newKey("ec");
  assertRefused(
    { caCrt: root.cert, issuerCrt: issuer.cert, issuerKey: other.key },
    [/^issuer\.key does not match the certificate in issuer\.crt/],
  );
  // The root's key is not the issuer's key either.
  assertRefused(
    { caCrt: root.cert, issuerCrt: issuer.cert, issuerKey: root.key },
    [/issuer\.key does not match/],
  );
});

Deno.test("refused: the issuer was signed by a different root", () => {
  assertRefused(
    { caCrt: otherRoot.cert, issuerCrt: issuer.cert, issuerKey: issuer.key },
    [/^issuer\.crt does not chain to any trust anchor in ca\.crt$/],
  );
});

Deno.test("refused: the issuer is the root itself", () => {
  assertRefused(
    { caCrt: root.cert, issuerCrt: root.cert, issuerKey: root.key },
    [/^issuer\.crt holds a self-signed root/, /ca\.crt/],
  );
});

Deno.test("refused: the issuer is not a CA", async () => {
  const notCa = await makeSigned(
    root,
    "/O=Not A CA",
    365,
    `[v3]\nbasicConstraints = critical, CA:FALSE\nkeyUsage = critical, digitalSignature\nsubjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid:always\n`,
  );
  assertRefused(
    { caCrt: root.cert, issuerCrt: notCa.cert, issuerKey: notCa.key },
    [/^issuer\.crt: certificate #1 is not a CA/, /CA:TRUE/],
  );
  const noConstraints = await makeSigned(
    root,
    "/O=No Constraints",
    365,
    `[v3]\nkeyUsage = critical, digitalSignature, keyCertSign\nsubjectKeyIdentifier = hash\n`,
  );
  assertRefused(
    { caCrt: root.cert, issuerCrt: noConstraints.cert, issuerKey: noConstraints.key },
    [/^issuer\.crt: certificate #1 is not a CA/],
  );
});

Deno.test("refused: an intermediate that is not a CA (certificate #2)", async () => {
  const notCa = await makeSigned(
    root,
    "/O=Not A CA",
    365,
    `[v3]\nbasicConstraints = critical, CA:FALSE\nkeyUsage = critical, digitalSignature, keyCertSign\n`,
  );
  const below = await makeSigned(notCa, "/O=Below");
  assertRefused(
    { caCrt: root.cert, issuerCrt: below.cert + notCa.cert, issuerKey: below.key },
    [/^issuer\.crt: certificate #2 is not a CA/],
  );
});

Deno.test("refused: the issuer's KeyUsage lacks keyCertSign", async () => {
  const noCertSign = await makeSigned(
    root,
    "/O=No CertSign",
    365,
    `[v3]\nbasicConstraints = critical, CA:TRUE\nkeyUsage = critical, digitalSignature, cRLSign\n`,
  );
  assertRefused(
    { caCrt: root.cert, issuerCrt: noCertSign.cert, issuerKey: noCertSign.key },
    [/^issuer\.crt: certificate #1 may not sign certificates/, /keyCertSign/],
  );
});

Deno.test("refused: an anchor that is not self-signed", () => {
  assertRefused(
    { caCrt: issuer.cert, issuerCrt: issuer.cert, issuerKey: issuer.key },
    [/^ca\.crt: certificate #1 is not a self-signed root$/],
  );
  assertRefused(
    { caCrt: root.cert + issuer.cert, issuerCrt: issuer.cert, issuerKey: issuer.key },
    [/^ca\.crt: certificate #2 is not a self-signed root$/],
  );
});

Deno.test("refused: an anchor that is not a CA", async () => {
  const selfSignedLeaf = await makeRoot("/O=Leaf", 365, [
    "-addext",
    "basicConstraints=critical,CA:FALSE",
    "-addext",
    "keyUsage=critical,digitalSignature",
  ]);
  assertRefused(
    { caCrt: selfSignedLeaf.cert, issuerCrt: issuer.cert, issuerKey: issuer.key },
    [/^ca\.crt: certificate #1 is not a CA/],
  );
  assertRefused(
    { caCrt: root.cert + selfSignedLeaf.cert, issuerCrt: issuer.cert, issuerKey: issuer.key },
    [/^ca\.crt: certificate #2 is not a CA/],
  );
});

Deno.test("refused: an expired issuer", async () => {
  const shortIssuer = await makeSigned(root, "/O=Short", 1);
  const pem = { caCrt: root.cert, issuerCrt: shortIssuer.cert, issuerKey: shortIssuer.key };
  validateBundle(pem, new Date()); // fine today
  assertRefused(
    pem,
    [/^issuer\.crt: certificate #1 has expired \(NotAfter /],
    new Date(Date.now() + 10 * DAY),
  );
  // Far in the future, everything has expired; the issuer is named first.
  assertRefused(
    { caCrt: root.cert, issuerCrt: issuer.cert, issuerKey: issuer.key },
    [/^issuer\.crt: certificate #1 has expired/],
    new Date(Date.now() + 20 * 365 * DAY),
  );
});

Deno.test("refused: an expired root under a valid issuer", async () => {
  const shortRoot = await makeRoot("/O=Short Root", 1);
  const longIssuer = await makeSigned(shortRoot, "/O=Long Issuer", 30);
  const pem = { caCrt: shortRoot.cert, issuerCrt: longIssuer.cert, issuerKey: longIssuer.key };
  validateBundle(pem, new Date());
  assertRefused(pem, [/^ca\.crt: .* has expired/], new Date(Date.now() + 10 * DAY));
});

Deno.test("refused: a bundle that is not valid yet", () => {
  assertRefused(
    { caCrt: root.cert, issuerCrt: issuer.cert, issuerKey: issuer.key },
    [/^issuer\.crt: certificate #1 is not valid yet \(NotBefore /],
    new Date(Date.now() - 10 * DAY),
  );
});

Deno.test("refused: garbage PEM", () => {
  const garbage =
    "-----BEGIN CERTIFICATE-----\nZ2FyYmFnZSBnYXJiYWdlIGdhcmJhZ2U=\n-----END CERTIFICATE-----\n";
  assertRefused(
    { caCrt: garbage, issuerCrt: issuer.cert, issuerKey: issuer.key },
    [/^ca\.crt: certificate #1 cannot be parsed/],
  );
  assertRefused(
    { caCrt: root.cert, issuerCrt: issuer.cert + garbage, issuerKey: issuer.key },
    [/^issuer\.crt: certificate #2 cannot be parsed/],
  );
  const truncated = derOf(issuer.cert).subarray(0, 100).toString("base64");
  assertRefused(
    {
      caCrt: root.cert,
      issuerCrt: `-----BEGIN CERTIFICATE-----\n${truncated}\n-----END CERTIFICATE-----\n`,
      issuerKey: issuer.key,
    },
    [/^issuer\.crt: certificate #1 cannot be parsed/],
  );
  assertRefused(
    { caCrt: "just some text", issuerCrt: issuer.cert, issuerKey: issuer.key },
    [/^ca\.crt contains no PEM CERTIFICATE block \(no "-----BEGIN \.\.\.-----" line\)$/],
  );
  assertRefused(
    {
      caCrt: root.cert,
      issuerCrt: issuer.cert,
      issuerKey: "-----BEGIN PRIVATE KEY-----\nZ2FyYmFnZQ==\n-----END PRIVATE KEY-----\n",
    },
    [/^issuer\.key: private key cannot be parsed/],
  );
});

Deno.test("refused: empty files", () => {
  assertRefused(
    { caCrt: "", issuerCrt: issuer.cert, issuerKey: issuer.key },
    [/^ca\.crt contains no PEM CERTIFICATE block \(the file is empty\)$/],
  );
  assertRefused(
    { caCrt: root.cert, issuerCrt: "", issuerKey: issuer.key },
    [/^issuer\.crt contains no PEM CERTIFICATE block \(the file is empty\)$/],
  );
  assertRefused(
    { caCrt: root.cert, issuerCrt: issuer.cert, issuerKey: "" },
    [/^issuer\.key must hold a PEM "PRIVATE KEY", "EC PRIVATE KEY" or "RSA PRIVATE KEY" block \(the file is empty\)$/],
  );
});

Deno.test("refused: the key file holds a certificate (or a public key)", async () => {
  assertRefused(
    { caCrt: root.cert, issuerCrt: issuer.cert, issuerKey: issuer.cert },
    [/^issuer\.key must hold a PEM "PRIVATE KEY".* \(found a CERTIFICATE block\)$/],
  );
  const publicKey = await openssl(["pkey", "-pubout", "-in", issuer.keyPath]);
  assertRefused(
    { caCrt: root.cert, issuerCrt: issuer.cert, issuerKey: publicKey },
    [/^issuer\.key must hold a PEM/],
  );
});

Deno.test("refused: the certificate files hold keys", () => {
  assertRefused(
    { caCrt: root.key, issuerCrt: issuer.cert, issuerKey: issuer.key },
    [/^ca\.crt contains no PEM CERTIFICATE block \(found a PRIVATE KEY block\)$/],
  );
  assertRefused(
    { caCrt: root.cert, issuerCrt: issuer.key, issuerKey: issuer.key },
    [/^issuer\.crt contains no PEM CERTIFICATE block \(found a PRIVATE KEY block\)$/],
  );
});

Deno.test("messages use the configured file names", () => {
  const names = {
    caCrt: "/creds/root.pem",
    issuerCrt: "/creds/issuer-chain.pem",
    issuerKey: "/creds/issuer-key.pem",
  };
  assertRefused(
    { caCrt: root.cert, issuerCrt: issuer.cert, issuerKey: otherRoot.key },
    [/^\/creds\/issuer-key\.pem does not match the certificate in \/creds\/issuer-chain\.pem/],
    new Date(),
    names,
  );
  assertRefused(
    { caCrt: otherRoot.cert, issuerCrt: issuer.cert, issuerKey: issuer.key },
    [/^\/creds\/issuer-chain\.pem does not chain to any trust anchor in \/creds\/root\.pem$/],
    new Date(),
    names,
  );
  assertRefused(
    { caCrt: "", issuerCrt: issuer.cert, issuerKey: issuer.key },
    [/^\/creds\/root\.pem contains no PEM CERTIFICATE block \(the file is empty\)$/],
    new Date(),
    names,
  );
});

Deno.test({
  name: "refused: a malformed extension is a BundleError naming the file",
  fn() {
    const der = Buffer.from(derOf(issuer.cert));
    // basicConstraints, critical, OCTET STRING { SEQUENCE { BOOLEAN TRUE } }
    const extension = Buffer.from("0603551d130101ff040530030101ff", "hex");
    const at = der.indexOf(extension);
    assert.ok(at > 0, "BasicConstraints extension not found");
    der[at + 10] = 0x31; // SEQUENCE -> SET
    const lines = der.toString("base64").match(/.{1,64}/g)!.join("\n");
    assertRefused(
      {
        caCrt: root.cert,
        issuerCrt: `-----BEGIN CERTIFICATE-----\n${lines}\n-----END CERTIFICATE-----\n`,
        issuerKey: issuer.key,
      },
      [/^issuer\.crt/],
    );
  },
});

Deno.test("a bundle shaped like `step certificate create --profile root-ca/intermediate-ca` is accepted", async () => {
  // step's root-ca profile: CN subject, CA:TRUE with pathlen 1, KeyUsage certSign + cRLSign;
  // its intermediate-ca profile: CN subject, CA:TRUE pathlen 0, the same KeyUsage, SKI/AKI.
  const stepRoot = await makeRoot("/CN=cluster.local", 3650, [
    "-addext",
    "basicConstraints=critical,CA:TRUE,pathlen:1",
    "-addext",
    "keyUsage=critical,keyCertSign,cRLSign",
  ]);
  const stepIssuer = await makeSigned(
    stepRoot,
    "/CN=cluster.local",
    365,
    `[v3]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
`,
  );
  await assertUsable({
    caCrt: stepRoot.cert,
    issuerCrt: stepIssuer.cert,
    issuerKey: stepIssuer.key,
  });
});
