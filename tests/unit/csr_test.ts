/**
 * decodeCsr with CSRs made by the openssl CLI: key types Dapr clients use, the exact
 * SubjectPublicKeyInfo, proof of possession, and refusals with useful messages.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { join } from "node:path";
import { CsrError, decodeCsr } from "../../src/x509/csr.ts";
import { generateKey, KEY_TYPES, type KeyType, makeCsr, openssl } from "../helpers/openssl.ts";

const work = await Deno.makeTempDir({ prefix: "sentry-csr-test-" });
globalThis.addEventListener("unload", () => Deno.removeSync(work, { recursive: true }));

/** Runs openssl and returns its raw stdout (for DER output). */
async function opensslBytes(args: string[]): Promise<Uint8Array> {
  const output = await new Deno.Command("openssl", { args, stdout: "piped", stderr: "piped" })
    .output();
  if (output.code !== 0) {
    throw new Error(`openssl ${args.join(" ")}: ${new TextDecoder().decode(output.stderr)}`);
  }
  return output.stdout;
}

async function writeTemp(name: string, content: string | Uint8Array): Promise<string> {
  const path = join(work, `${crypto.randomUUID()}-${name}`);
  if (typeof content === "string") await Deno.writeTextFile(path, content);
  else await Deno.writeFile(path, content);
  return path;
}

/** The DER SPKI of a private key, as openssl computes it. */
async function opensslSpki(keyPem: string): Promise<Uint8Array> {
  const keyPath = await writeTemp("key.pem", keyPem);
  return await opensslBytes(["pkey", "-in", keyPath, "-pubout", "-outform", "DER"]);
}

/** The DER of the first PEM block in `pem`. */
function pemBody(pem: string): Buffer {
  const match = /-----BEGIN [A-Z ]+-----([\s\S]*?)-----END/.exec(pem);
  assert.ok(match, "no PEM block");
  return Buffer.from(match[1].replace(/\s+/g, ""), "base64");
}

function toPem(label: string, der: Uint8Array): string {
  const lines = Buffer.from(der).toString("base64").match(/.{1,64}/g) ?? [];
  return `-----BEGIN ${label}-----\n${lines.join("\n")}\n-----END ${label}-----\n`;
}

function csrError(pattern: RegExp) {
  return (error: Error) => {
    assert.ok(error instanceof CsrError, `not a CsrError: ${error}`);
    assert.match(error.message, pattern);
    return true;
  };
}

// One key and CSR per accepted type, shared by the tests below.
const samples = new Map<KeyType, { keyPem: string; csrPem: string; spki: Uint8Array }>();
for (const type of Object.keys(KEY_TYPES) as KeyType[]) {
  const keyPem = await generateKey(type);
  samples.set(type, {
    keyPem,
    csrPem: await makeCsr(work, keyPem),
    spki: await opensslSpki(keyPem),
  });
}

Deno.test("accepted key types: keyType and the exact SPKI", async (t) => {
  for (const [type, sample] of samples) {
    await t.step(type, () => {
      const csr = decodeCsr(sample.csrPem);
      assert.equal(csr.keyType, type);
      assert.ok(Buffer.from(sample.spki).equals(csr.subjectPublicKeyInfo), "SPKI differs");
      assert.ok(
        Buffer.from(sample.spki).equals(
          csr.publicKey.export({ type: "spki", format: "der" }) as Buffer,
        ),
      );
      assert.equal(csr.publicKey.type, "public");
    });
  }
});

Deno.test("the CSR may be given as bytes", () => {
  const sample = samples.get("ec-p256")!;
  const csr = decodeCsr(new TextEncoder().encode(sample.csrPem));
  assert.equal(csr.keyType, "ec-p256");
  assert.ok(Buffer.from(sample.spki).equals(csr.subjectPublicKeyInfo));
});

Deno.test("text around the PEM block is ignored; the first block is used", () => {
  const p256 = samples.get("ec-p256")!;
  const ed = samples.get("ed25519")!;
  const csr = decodeCsr(`Certificate request for myapp\n${p256.csrPem}\n${ed.csrPem}trailer`);
  assert.equal(csr.keyType, "ec-p256");
  assert.ok(Buffer.from(p256.spki).equals(csr.subjectPublicKeyInfo));
});

Deno.test("the legacy CERTIFICATE label is accepted", () => {
  const sample = samples.get("ed25519")!;
  const legacy = sample.csrPem.replaceAll("CERTIFICATE REQUEST", "CERTIFICATE");
  assert.notEqual(legacy, sample.csrPem);
  const csr = decodeCsr(legacy);
  assert.equal(csr.keyType, "ed25519");
  assert.ok(Buffer.from(sample.spki).equals(csr.subjectPublicKeyInfo));
});

Deno.test("not PEM, or the wrong label: invalid certificate signing request", () => {
  const sample = samples.get("ec-p256")!;
  const cases = [
    "",
    "hello",
    pemBody(sample.csrPem).toString("base64"),
    sample.csrPem.replaceAll("CERTIFICATE REQUEST", "NEW CERTIFICATE REQUEST"),
    sample.csrPem.replaceAll("CERTIFICATE REQUEST", "PUBLIC KEY"),
    toPem("PUBLIC KEY", sample.spki),
    sample.keyPem,
  ];
  for (const input of cases) {
    assert.throws(
      () => decodeCsr(input),
      csrError(/^invalid certificate signing request$/),
      input.slice(0, 40),
    );
  }
  // The first block decides, even when a CSR follows.
  assert.throws(
    () => decodeCsr(sample.keyPem + sample.csrPem),
    csrError(/^invalid certificate signing request$/),
  );
});

Deno.test("garbage DER is a parse failure", () => {
  const sample = samples.get("ec-p256")!;
  const der = pemBody(sample.csrPem);
  const cases = [
    Uint8Array.of(1, 2, 3, 4, 5, 6, 7, 8),
    Uint8Array.of(0x30, 0x00),
    Uint8Array.of(0x30, 0x05, 0x02, 0x01, 0x00),
    Uint8Array.of(0x04, 0x03, 1, 2, 3),
    der.subarray(0, der.length - 10), // truncated
    new TextEncoder().encode("not DER at all, just text that is long enough"),
  ];
  for (const bytes of cases) {
    assert.throws(
      () => decodeCsr(toPem("CERTIFICATE REQUEST", bytes)),
      csrError(/^failed to parse certificate signing request: /),
      Buffer.from(bytes).toString("hex").slice(0, 40),
    );
  }
});

Deno.test("a certificate under the legacy CERTIFICATE label is not a request", async () => {
  const keyPath = await writeTemp("key.pem", samples.get("ec-p256")!.keyPem);
  const certPem = await openssl(["req", "-x509", "-new", "-key", keyPath, "-subj", "/O=x"]);
  assert.match(certPem, /BEGIN CERTIFICATE-----/);
  assert.throws(() => decodeCsr(certPem), csrError(/^failed to parse certificate signing request/));
});

Deno.test("trailing data after the request is refused", () => {
  const der = pemBody(samples.get("ec-p256")!.csrPem);
  const padded = Buffer.concat([der, Buffer.from([0x00, 0x00])]);
  assert.throws(
    () => decodeCsr(toPem("CERTIFICATE REQUEST", padded)),
    csrError(/failed to parse certificate signing request: trailing data/),
  );
});

Deno.test("a tampered signature is refused: invalid signature", async (t) => {
  for (const [type, sample] of samples) {
    await t.step(type, () => {
      const der = Buffer.from(pemBody(sample.csrPem));
      der[der.length - 1] ^= 0x01; // last byte of the signature value
      assert.throws(
        () => decodeCsr(toPem("CERTIFICATE REQUEST", der)),
        csrError(/^invalid signature$/),
      );
    });
  }
});

Deno.test("a tampered request body is refused: invalid signature", async () => {
  const keyPem = samples.get("ec-p256")!.keyPem;
  const csrPem = await makeCsr(work, keyPem, "/CN=aaaaaaaa");
  const der = Buffer.from(pemBody(csrPem));
  const at = der.indexOf("aaaaaaaa");
  assert.ok(at > 0);
  der[at] = "b".charCodeAt(0);
  assert.throws(
    () => decodeCsr(toPem("CERTIFICATE REQUEST", der)),
    csrError(/^invalid signature$/),
  );
});

Deno.test("a CSR whose key is swapped for another is refused: invalid signature", async () => {
  const sample = samples.get("ec-p256")!;
  const der = Buffer.from(pemBody(sample.csrPem));
  const otherSpki = await opensslSpki(await generateKey("ec-p256"));
  assert.equal(otherSpki.length, sample.spki.length);
  const at = der.indexOf(Buffer.from(sample.spki));
  assert.ok(at > 0, "SPKI not found in the request");
  der.set(otherSpki, at);
  assert.throws(
    () => decodeCsr(toPem("CERTIFICATE REQUEST", der)),
    csrError(/^invalid signature$/),
  );
});

Deno.test("RSA-1024 and P-521 keys are refused with a message naming the key", async () => {
  const cases: Array<[string[], string]> = [
    [["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024"], "rsa-1024"],
    [["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-521"], "ec-p521"],
  ];
  for (const [options, name] of cases) {
    const csrPem = await makeCsr(work, await generateKey(options));
    assert.throws(
      () => decodeCsr(csrPem),
      csrError(new RegExp(`unsupported public key ${name}\\b`)),
      name,
    );
  }
});

Deno.test("signature algorithms outside the accepted set are refused", async () => {
  const ecKey = await writeTemp("ec.pem", samples.get("ec-p256")!.keyPem);
  const sha1 = await openssl(["req", "-new", "-key", ecKey, "-subj", "/", "-sha1"]);
  assert.throws(
    () => decodeCsr(sha1),
    csrError(/unsupported signature algorithm 1\.2\.840\.10045\.4\.1\b/),
  );
  const rsaKey = await writeTemp("rsa.pem", samples.get("rsa-2048")!.keyPem);
  const pss = await openssl([
    "req",
    "-new",
    "-key",
    rsaKey,
    "-subj",
    "/",
    "-sigopt",
    "rsa_padding_mode:pss",
  ]);
  assert.throws(
    () => decodeCsr(pss),
    csrError(/unsupported signature algorithm 1\.2\.840\.113549\.1\.1\.10\b/),
  );
});

Deno.test("other accepted signature hashes verify (ECDSA SHA-384, RSA SHA-512)", async () => {
  const ecKey = await writeTemp("ec.pem", samples.get("ec-p256")!.keyPem);
  const ec384 = await openssl(["req", "-new", "-key", ecKey, "-subj", "/", "-sha384"]);
  assert.equal(decodeCsr(ec384).keyType, "ec-p256");
  const rsaKey = await writeTemp("rsa.pem", samples.get("rsa-2048")!.keyPem);
  const rsa512 = await openssl(["req", "-new", "-key", rsaKey, "-subj", "/", "-sha512"]);
  assert.equal(decodeCsr(rsa512).keyType, "rsa-2048");
});

Deno.test("a CSR with subject, SANs and extensions still yields only the key", async () => {
  const sample = samples.get("ec-p384")!;
  const keyPath = await writeTemp("key.pem", sample.keyPem);
  const csrPem = await openssl([
    "req",
    "-new",
    "-key",
    keyPath,
    "-subj",
    "/CN=evil/O=spiffe:\\/\\/evil\\/ns\\/x\\/y",
    "-addext",
    "subjectAltName=URI:spiffe://evil/ns/kube-system/admin,DNS:evil.example.com",
    "-addext",
    "basicConstraints=critical,CA:TRUE",
    "-addext",
    "keyUsage=critical,keyCertSign",
  ]);
  const text = await openssl(["req", "-in", await writeTemp("csr.pem", csrPem), "-noout", "-text"]);
  assert.match(text, /URI:spiffe:\/\/evil\/ns\/kube-system\/admin/); // really in the request
  const csr = decodeCsr(csrPem);
  assert.deepEqual(Object.keys(csr).sort(), ["keyType", "publicKey", "subjectPublicKeyInfo"]);
  assert.equal(csr.keyType, "ec-p384");
  assert.ok(Buffer.from(sample.spki).equals(csr.subjectPublicKeyInfo));
});
