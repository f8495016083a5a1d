/**
 * End to end: `sentry inspect` on the real program. A workload certificate issued by a
 * running sentry is described and verifies against its ca.crt; chains made with openssl
 * verify or fail (wrong anchor, expired issuer) with exit code 1 and the reason; CSRs (and a
 * tampered one), DER input, standard input, unreadable files and bad usage.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { SentryClient } from "../helpers/grpc_client.ts";
import {
  generateKey,
  makeCsr,
  openssl,
  opensslIssuer,
  opensslRoot,
  opensslTime,
} from "../helpers/openssl.ts";
import {
  type Finished,
  runSentry,
  sentryCommand,
  startSentry,
  tempDir,
} from "../helpers/sentry_process.ts";

const work = await tempDir("sentry-inspect-test-");
globalThis.addEventListener("unload", () => Deno.removeSync(work, { recursive: true }));

async function write(name: string, content: string | Uint8Array): Promise<string> {
  const path = join(work, name);
  if (typeof content === "string") await Deno.writeTextFile(path, content);
  else await Deno.writeFile(path, content);
  return path;
}

/** Runs `sentry inspect` and asserts the exit code, showing the output when it differs. */
async function inspect(args: string[], code: number): Promise<Finished> {
  const result = await runSentry(["inspect", ...args]);
  assert.equal(
    result.code,
    code,
    `exit code ${result.code}, expected ${code}\nstdout:\n${result.stdout}\nstderr:\n${result.stderr}`,
  );
  return result;
}

/** Runs sentry with `input` on standard input (runSentry closes stdin). */
async function runWithStdin(args: string[], input: string): Promise<Finished> {
  const [program, ...prefix] = sentryCommand();
  const child = new Deno.Command(program, {
    args: [...prefix, ...args],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const writer = child.stdin.getWriter();
  await writer.write(new TextEncoder().encode(input));
  await writer.close();
  const output = await child.output();
  const decoder = new TextDecoder();
  return {
    code: output.code,
    stdout: decoder.decode(output.stdout),
    stderr: decoder.decode(output.stderr),
  };
}

// An openssl-made PKI: root -> issuer (pathlen 0) -> leaf with DNS, IP and SPIFFE SANs.
const rootDir = await Deno.makeTempDir({ dir: work });
const root = await opensslRoot(rootDir);
const rootPem = await Deno.readTextFile(root.certPath);
const issuer = await opensslIssuer(root);
const issuerCertPath = await write("issuer.crt", issuer.cert);
const issuerKeyPath = await write("issuer.key", issuer.key);
const leafKeyPath = await write("leaf.key", await generateKey("ec-p256"));
const leafCsrPath = await write(
  "leaf.csr",
  await openssl(["req", "-new", "-key", leafKeyPath, "-subj", "/O=cluster.local/CN=myapp"]),
);
const extPath = await write(
  "leaf.cnf",
  "[v3]\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n" +
    "extendedKeyUsage=serverAuth,clientAuth\n" +
    "subjectAltName=DNS:myapp.default.svc,IP:10.0.0.7,URI:spiffe://cluster.local/ns/default/myapp\n",
);
const leafPem = await openssl([
  "x509",
  "-req",
  "-in",
  leafCsrPath,
  "-CA",
  issuerCertPath,
  "-CAkey",
  issuerKeyPath,
  "-set_serial",
  "0x7A3F",
  "-days",
  "5",
  "-extfile",
  extPath,
  "-extensions",
  "v3",
]);
const chainPath = await write("chain.pem", leafPem + issuer.cert);
const anchorsPath = await write("anchors.pem", rootPem);
const strangerDir = await Deno.makeTempDir({ dir: work });
const strangerPath = (await opensslRoot(strangerDir)).certPath;

Deno.test("a workload certificate issued by a running sentry verifies against its ca.crt", async () => {
  const sentry = await startSentry({ env: { NAMESPACE: "dapr-system" } });
  const anchors = await Deno.readTextFile(join(sentry.dir, "ca.crt"));
  const client = new SentryClient(sentry.grpcPort, anchors);
  try {
    const csr = await makeCsr(work, await generateKey("ed25519"));
    const csrPath = await write("workload.csr", csr);
    const response = await client.sign({
      id: "myapp",
      namespace: "default",
      trustDomain: "cluster.local",
      certificateSigningRequest: csr,
      tokenValidator: 1,
    });
    const path = await write("workload.pem", response.workloadCertificate.toString());

    const result = await inspect(
      ["--json", path, "--anchors", join(sentry.dir, "ca.crt")],
      0,
    );
    const output = JSON.parse(result.stdout);
    assert.equal(output.certificates.length, 2, "leaf then issuer");
    const [leaf, issuerCert] = output.certificates;
    assert.equal(leaf.subject, "");
    assert.equal(leaf.spiffeId, "spiffe://cluster.local/ns/default/myapp");
    assert.deepEqual(leaf.subjectAltNames.uris, ["spiffe://cluster.local/ns/default/myapp"]);
    assert.equal(leaf.keyType, "ed25519");
    assert.deepEqual(leaf.keyUsage, ["digitalSignature"]);
    assert.deepEqual([...leaf.extendedKeyUsage].sort(), ["clientAuth", "serverAuth"]);
    assert.equal(leaf.ca, false);
    assert.equal(leaf.validity.status, "valid");
    assert.ok(Math.abs(leaf.validity.secondsLeft - 86_400) < 120, `${leaf.validity.secondsLeft}`);
    assert.equal(leaf.authorityKeyId, issuerCert.subjectKeyId);
    assert.equal(leaf.issuer, issuerCert.subject);
    assert.equal(issuerCert.ca, true);
    assert.equal(output.chain.verified, true);
    assert.equal(output.chain.anchors, 1);

    // The certified key is the CSR's.
    const request = JSON.parse((await inspect(["--json", csrPath], 0)).stdout).csr;
    assert.equal(request.publicKeySha256, leaf.publicKeySha256);

    // Human text: one field per line, time left in words.
    const text = (await inspect([path, "--anchors", join(sentry.dir, "ca.crt")], 0)).stdout;
    assert.match(text, /^Certificate #1 of 2 \(leaf\)$/m);
    assert.match(text, /^ {2}SPIFFE ID: +spiffe:\/\/cluster\.local\/ns\/default\/myapp$/m);
    assert.match(text, /^ {2}Subject: +\(empty\)$/m);
    assert.match(text, /^ {2}Not after: +\d{4}-\d\d-\d\dT[\d:.]+Z \(in 23h 5\dm\)$/m);
    assert.match(text, /^ {2}Not before: +\S+ \(1[45]m( \d+s)? ago\)$/m);
    assert.match(text, /^Certificate #2 of 2 \(intermediate CA\)$/m);
    assert.match(text, /^Chain: verified against 1 anchor in /m);
  } finally {
    client.close();
    assert.equal(await sentry.stop(), 0);
  }
});

Deno.test("human text for an openssl chain: fields, SANs, fingerprints", async () => {
  const { stdout, stderr } = await inspect([chainPath], 0);
  assert.equal(stderr, "");
  assert.match(stdout, /^ {2}Subject: +O=cluster\.local, CN=myapp$/m);
  assert.match(stdout, /^ {2}Issuer: +O=cluster\.local$/m);
  assert.match(
    stdout,
    /^ {2}Subject alt names: +DNS:myapp\.default\.svc, IP:10\.0\.0\.7, URI:spiffe:\/\/cluster\.local\/ns\/default\/myapp$/m,
  );
  assert.match(stdout, /^ {2}Serial: +7A3F$/m);
  assert.match(stdout, /^ {2}Not after: +\S+ \(in 4d 23h\)$/m);
  assert.match(stdout, /^ {2}Key usage: +digitalSignature$/m);
  assert.match(stdout, /^ {2}Extended key usage: +serverAuth, clientAuth$/m);
  assert.match(stdout, /^ {2}CA: +yes, pathlen 0$/m);
  const fingerprint = await openssl(["x509", "-noout", "-fingerprint", "-sha256"], leafPem);
  const expected = fingerprint.trim().split("=")[1];
  assert.ok(new RegExp(`^  SHA-256 fingerprint: +${expected}$`, "m").test(stdout), stdout);
  assert.doesNotMatch(stdout, /^Chain:/m, "no verification without --anchors");
});

Deno.test("--json: fields of every certificate, chain null without --anchors", async () => {
  const output = JSON.parse((await inspect(["--json", chainPath], 0)).stdout);
  assert.equal(output.chain, null);
  const [leaf, issuerCert] = output.certificates;
  assert.deepEqual(Object.keys(leaf).sort(), [
    "authorityKeyId",
    "ca",
    "extendedKeyUsage",
    "extensions",
    "fingerprints",
    "issuer",
    "keyType",
    "keyUsage",
    "pathLength",
    "publicKeySha256",
    "selfSigned",
    "serial",
    "signatureAlgorithm",
    "spiffeId",
    "subject",
    "subjectAltNames",
    "subjectKeyId",
    "validity",
    "version",
  ]);
  assert.deepEqual(leaf.subjectAltNames, {
    dns: ["myapp.default.svc"],
    uris: ["spiffe://cluster.local/ns/default/myapp"],
    ips: ["10.0.0.7"],
    emails: [],
    other: [],
  });
  assert.equal(leaf.serial, "7A3F");
  assert.equal(leaf.keyType, "ec-p256");
  assert.equal(leaf.validity.status, "valid");
  assert.equal(leaf.validity.lifetimeSeconds, 5 * 86_400);
  assert.equal(issuerCert.pathLength, 0);
  assert.deepEqual(issuerCert.keyUsage, ["digitalSignature", "keyCertSign", "cRLSign"]);
  const sha1 = await openssl(["x509", "-noout", "-fingerprint", "-sha1"], issuer.cert);
  assert.equal(issuerCert.fingerprints.sha1, sha1.trim().split("=")[1]);
});

Deno.test("--anchors: success exits 0, the wrong anchor exits 1 with the reason", async () => {
  const ok = JSON.parse((await inspect(["--json", "--anchors", anchorsPath, chainPath], 0)).stdout);
  assert.deepEqual(ok.chain, { verified: true, anchors: 1, anchor: "O=cluster.local" });

  const failed = await inspect(["--anchors", strangerPath, chainPath], 1);
  assert.match(failed.stdout, /^Chain: NOT verified against 1 anchor in /m);
  assert.match(
    failed.stderr,
    /^sentry inspect: .*chain\.pem: chain does not verify against .*root\.crt: certificate #2 \(O=cluster\.local\) is not signed by any of the 1 anchors: both are named "O=cluster\.local", but the signature does not verify with the key of the anchor "O=cluster\.local": a different CA with the same name \(authority key ID [0-9A-F:]+ vs subject key ID [0-9A-F:]+\)\n$/,
  );
  const json = await inspect(["--json", "--anchors", strangerPath, chainPath], 1);
  const chain = JSON.parse(json.stdout).chain;
  assert.equal(chain.verified, false);
  assert.equal(chain.failedIndex, 1);
  assert.match(chain.error, /not signed by any of the 1 anchors/);

  // The leaf without its issuer does not reach the root.
  const alone = await write("leaf-only.pem", leafPem);
  const missing = await inspect(["--anchors", anchorsPath, alone], 1);
  assert.match(missing.stderr, /certificate #1 \(O=cluster\.local, CN=myapp\) is not signed by/);
});

Deno.test("an expired issuer: described without --anchors, a failed check with them", async () => {
  const now = Date.now();
  const old = await opensslIssuer(root, {
    start: opensslTime(new Date(now - 3 * 86_400_000)),
    end: opensslTime(new Date(now - 2 * 86_400_000 - 3_600_000)),
  });
  const path = await write("expired.pem", old.cert);
  const described = await inspect([path], 0);
  assert.match(described.stdout, /^ {2}Not after: +\S+ \(expired 2d 1h ago\)$/m);
  assert.match(described.stdout, /^ {2}Status: +expired$/m);
  const json = JSON.parse((await inspect(["--json", path], 0)).stdout);
  assert.equal(json.certificates[0].validity.status, "expired");
  assert.ok(json.certificates[0].validity.secondsLeft < -2 * 86_400);

  const checked = await inspect(["--anchors", anchorsPath, path], 1);
  assert.match(checked.stderr, /certificate #1 \(O=cluster\.local\) expired at \d{4}-/);
});

Deno.test("a CSR: subject, key, SANs, signature; a tampered one exits 1", async () => {
  const keyPath = await write("csr.key", await generateKey("rsa-2048"));
  const csr = await openssl([
    "req",
    "-new",
    "-key",
    keyPath,
    "-subj",
    "/CN=requester",
    "-addext",
    "subjectAltName=URI:spiffe://cluster.local/ns/default/req,DNS:req.example",
  ]);
  const path = await write("request.csr", csr);
  const text = (await inspect([path], 0)).stdout;
  assert.match(text, /^Certificate signing request \(.*request\.csr\)$/m);
  assert.match(text, /^ {2}Subject: +CN=requester$/m);
  assert.match(text, /^ {2}Key type: +rsa-2048$/m);
  assert.match(text, /^ {2}Signature: +valid$/m);
  assert.match(text, /^ {2}SPIFFE ID: +spiffe:\/\/cluster\.local\/ns\/default\/req$/m);
  assert.match(text, /^ {2}Accepted by sentry: +yes$/m);

  const json = JSON.parse((await inspect(["--json", path], 0)).stdout);
  assert.deepEqual(Object.keys(json), ["csr"]);
  assert.equal(json.csr.signatureValid, true);
  assert.deepEqual(json.csr.subjectAltNames.dns, ["req.example"]);

  // Flip one bit in the signature (the end of the DER).
  const der = await new Deno.Command("openssl", {
    args: ["req", "-in", path, "-outform", "DER"],
    stdout: "piped",
  }).output();
  const bytes = der.stdout.slice();
  bytes[bytes.length - 1] ^= 0x01;
  const tampered = await write("tampered.der", bytes);
  const bad = await inspect(["--json", tampered], 1);
  assert.equal(JSON.parse(bad.stdout).csr.signatureValid, false);
  assert.match(bad.stderr, /tampered\.der: the request's signature does not verify/);

  // --anchors makes no sense for a CSR.
  await inspect(["--anchors", anchorsPath, path], 2);
});

Deno.test("DER input and standard input", async () => {
  const der = await new Deno.Command("openssl", {
    args: ["x509", "-outform", "DER", "-in", root.certPath],
    stdout: "piped",
  }).output();
  const derPath = await write("root.der", der.stdout);
  const fromDer = JSON.parse(
    (await inspect(["--json", derPath, "--anchors", anchorsPath], 0)).stdout,
  );
  assert.equal(fromDer.certificates[0].subject, "O=cluster.local");
  assert.equal(fromDer.certificates[0].selfSigned, true);
  assert.equal(fromDer.chain.verified, true);

  const stdin = await runWithStdin(
    ["inspect", "--json", "-", "--anchors", anchorsPath],
    leafPem + issuer.cert,
  );
  assert.equal(stdin.code, 0, stdin.stderr);
  const output = JSON.parse(stdin.stdout);
  assert.equal(output.certificates.length, 2);
  assert.equal(output.chain.verified, true);

  const garbage = await runWithStdin(["inspect", "-"], "hello\n");
  assert.equal(garbage.code, 1);
  assert.equal(
    garbage.stderr,
    "sentry inspect: stdin holds no PEM block and is not a DER certificate or certificate request\n",
  );
});

Deno.test("unreadable input: one line naming the file, exit 1", async () => {
  const missing = join(work, "missing.pem");
  const result = await inspect([missing], 1);
  assert.equal(result.stderr, `sentry inspect: ${missing}: no such file\n`);
  assert.equal(result.stdout, "");

  const keyOnly = await write("key-only.pem", await generateKey("ed25519"));
  const key = await inspect([keyOnly], 1);
  assert.equal(
    key.stderr,
    `sentry inspect: ${keyOnly} holds no CERTIFICATE or CERTIFICATE REQUEST PEM block (found PRIVATE KEY)\n`,
  );

  const garbled = await write(
    "garbled.pem",
    "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
  );
  const bad = await inspect([garbled], 1);
  assert.match(bad.stderr, /^sentry inspect: .*garbled\.pem: certificate #1 cannot be parsed: /);

  const missingAnchors = await inspect(["--anchors", join(work, "nope.pem"), chainPath], 1);
  assert.match(missingAnchors.stderr, /nope\.pem: no such file\n$/);

  await inspect([work], 1); // a directory
});

Deno.test("bad usage exits 2", async () => {
  const flag = await inspect(["--bogus", chainPath], 2);
  assert.match(flag.stderr, /flag provided but not defined: -bogus/);
  assert.match(flag.stderr, /Run 'sentry inspect --help' for usage/);
  const none = await inspect([], 2);
  assert.match(none.stderr, /missing FILE argument/);
  await inspect([chainPath, chainPath], 2);
  await inspect([chainPath, "--anchors"], 2);
  const help = await inspect(["--help"], 0);
  assert.match(help.stdout, /Usage: sentry inspect/);
  assert.match(help.stdout, /--anchors/);
  assert.match(help.stdout, /--json/);
});
