/**
 * CSRs built by src/x509/csr-builder.ts for every workload key type: openssl accepts their
 * self-signature, decodeCsr verifies them, the subject is empty, the attributes are empty,
 * the version is 0, the signature algorithm follows the key and the SPKI is exact.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { createPublicKey, type KeyObject } from "node:crypto";
import { join } from "node:path";
import { buildCsr, csrPem } from "../../src/x509/csr-builder.ts";
import { CsrError, decodeCsr } from "../../src/x509/csr.ts";
import * as der from "../../src/x509/der.ts";
import { describeKey, privateKeyToPem, spkiOf } from "../../src/x509/keys.ts";
import { decodePem } from "../../src/x509/pem.ts";
import { DEFAULT_KEY_TYPE, generateKey, isKeyType, KEY_TYPES } from "../../src/x509/key-types.ts";
import { openssl } from "../helpers/openssl.ts";

const work = await Deno.makeTempDir({ prefix: "sentry-csr-builder-test-" });
globalThis.addEventListener("unload", () => Deno.removeSync(work, { recursive: true }));

/** Signature algorithm OID expected for each key type. */
const SIGNATURE_OIDS: Record<string, string> = {
  "ed25519": "1.3.101.112",
  "ec-p256": "1.2.840.10045.4.3.2",
  "ec-p384": "1.2.840.10045.4.3.3",
  "rsa-2048": "1.2.840.113549.1.1.11",
  "rsa-4096": "1.2.840.113549.1.1.11",
};

async function writeTemp(name: string, content: string): Promise<string> {
  const path = join(work, `${crypto.randomUUID()}-${name}`);
  await Deno.writeTextFile(path, content);
  return path;
}

/** The DER SPKI of a private key as openssl computes it (independent of node:crypto). */
async function opensslSpki(key: KeyObject): Promise<Buffer> {
  const keyPath = await writeTemp("key.pem", privateKeyToPem(key));
  const pem = await openssl(["pkey", "-in", keyPath, "-pubout"]);
  return decodePem(pem)[0].der;
}

/** The top-level parts of a DER CSR. */
function csrParts(csr: Uint8Array) {
  const root = der.expectElement(csr, der.Tag.SEQUENCE);
  const [info, algorithm, signature] = der.children(csr, root);
  const [version, subject, spki, attributes, ...extra] = der.children(csr, info);
  const [algorithmOid, ...parameters] = der.children(csr, algorithm);
  return {
    version: der.bytesOf(csr, version),
    subject: der.bytesOf(csr, subject),
    spki: der.bytesOf(csr, spki),
    attributes: der.bytesOf(csr, attributes),
    extra,
    algorithmOid: der.decodeOid(der.contentOf(csr, algorithmOid)),
    parameters: parameters.map((p) => Buffer.from(der.bytesOf(csr, p)).toString("hex")),
    signature,
  };
}

const keys = new Map<string, KeyObject>();
for (const type of KEY_TYPES) keys.set(type, await generateKey(type));

Deno.test("key types: ed25519 is the default and every type generates the named key", () => {
  assert.equal(DEFAULT_KEY_TYPE, "ed25519");
  assert.deepEqual([...KEY_TYPES], ["ed25519", "ec-p256", "ec-p384", "rsa-2048", "rsa-4096"]);
  for (const [type, key] of keys) {
    assert.equal(key.type, "private");
    assert.equal(describeKey(key), type);
  }
  assert.ok(isKeyType("ec-p384"));
  assert.ok(!isKeyType("ec-p521"));
  assert.ok(!isKeyType(""));
});

for (const type of KEY_TYPES) {
  Deno.test(`CSR for ${type}: openssl verifies it, decodeCsr accepts it, subject is empty`, async () => {
    const key = keys.get(type)!;
    const pem = csrPem(key);
    assert.match(pem, /^-----BEGIN CERTIFICATE REQUEST-----\n/);
    assert.match(pem, /-----END CERTIFICATE REQUEST-----\n$/);
    const path = await writeTemp("req.csr", pem);

    // openssl: self-signature verifies and the subject is empty.
    const verified = await new Deno.Command("openssl", {
      args: ["req", "-verify", "-noout", "-in", path],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const decoder = new TextDecoder();
    assert.equal(verified.code, 0, decoder.decode(verified.stderr));
    assert.match(
      decoder.decode(verified.stdout) + decoder.decode(verified.stderr),
      /verify OK/i,
    );
    const subject = await openssl(["req", "-noout", "-subject", "-in", path]);
    assert.match(subject.trim(), /^subject=\s*$/);

    // decodeCsr (what sentry runs): proof of possession, key type, exact SPKI.
    const decoded = decodeCsr(pem);
    assert.equal(decoded.keyType, type);
    assert.deepEqual(decoded.subjectPublicKeyInfo, spkiOf(key));
    assert.deepEqual(decoded.subjectPublicKeyInfo, await opensslSpki(key));

    // DER layout: version 0, empty Name, empty [0] attributes, algorithm by key type.
    const csr = buildCsr(key);
    assert.deepEqual(Buffer.from(decodePem(pem)[0].der), Buffer.from(csr));
    const parts = csrParts(csr);
    assert.equal(Buffer.from(parts.version).toString("hex"), "020100");
    assert.equal(Buffer.from(parts.subject).toString("hex"), "3000");
    assert.deepEqual(Buffer.from(parts.spki), await opensslSpki(key));
    assert.equal(Buffer.from(parts.attributes).toString("hex"), "a000");
    assert.equal(parts.extra.length, 0);
    assert.equal(parts.algorithmOid, SIGNATURE_OIDS[type]);
    assert.deepEqual(parts.parameters, type.startsWith("rsa-") ? ["0500"] : []);
  });
}

Deno.test("CSR: a tampered CSR is refused; Ed25519 CSRs are deterministic", () => {
  const key = keys.get("ec-p256")!;
  const csr = buildCsr(key);
  // Flip one bit inside the public key: the self-signature no longer verifies.
  const parts = csrParts(csr);
  const spkiOffset = csr.indexOf(Buffer.from(parts.spki));
  const tampered = Buffer.from(csr);
  tampered[spkiOffset + parts.spki.length - 1] ^= 0x01;
  const toPem = (bytes: Uint8Array) =>
    `-----BEGIN CERTIFICATE REQUEST-----\n${
      Buffer.from(bytes).toString("base64")
    }\n-----END CERTIFICATE REQUEST-----\n`;
  assert.throws(() => decodeCsr(toPem(tampered)), (error: Error) => {
    assert.ok(error instanceof CsrError, String(error));
    return true;
  });
  // Ed25519 signatures are deterministic, so the whole CSR is.
  const ed = keys.get("ed25519")!;
  assert.deepEqual(buildCsr(ed), buildCsr(ed));
});

Deno.test("CSR: a public key cannot sign a request", () => {
  assert.throws(() => buildCsr(createPublicKey(keys.get("ed25519")!)), /private key/);
});
