/**
 * The fast paths of the signer, checked against the slow, generic ones they replace:
 * the per-issuer workload TBSCertificate template must encode exactly what the generic
 * certificate encoder writes for Dapr's workload profile, and the thread-pool variants of CSR
 * verification and signing must accept and refuse exactly what the synchronous ones do.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { createPublicKey, generateKeyPairSync, verify } from "node:crypto";
import type { TrustBundle } from "../../src/ca/bundle.ts";
import {
  authorityKeyIdentifier,
  EMPTY_NAME,
  encodeTbsCertificate,
  extendedKeyUsage,
  ExtKeyUsage,
  KeyUsage,
  keyUsage,
  randomSerial,
  subjectAltName,
} from "../../src/x509/certificate.ts";
import { csrPem } from "../../src/x509/csr-builder.ts";
import { CsrError, decodeCsr, decodeCsrAsync } from "../../src/x509/csr.ts";
import type { CaKeyAlgorithm } from "../../src/x509/keys.ts";
import { decodePem } from "../../src/x509/pem.ts";
import { issueWorkloadCertificate, issueWorkloadCertificateAsync } from "../../src/ca/signer.ts";
import { SpiffeId } from "../../src/ca/spiffe.ts";
import { encodeWorkloadTbs } from "../../src/ca/workload-tbs.ts";
import { parseCertificate } from "../../src/x509/parse.ts";
import { testTrustBundle } from "../helpers/trust_bundle.ts";

const NOW = new Date("2031-03-04T05:06:07Z");
const DAY = 86_400_000;

function bundleFor(algorithm: CaKeyAlgorithm, trustDomain = "cluster.local"): TrustBundle {
  return testTrustBundle({ now: NOW, algorithm, trustDomain });
}

const bundles = {
  "ecdsa-p256": bundleFor("ecdsa-p256"),
  "ed25519": bundleFor("ed25519"),
};
const workloadSpki = generateKeyPairSync("ec", { namedCurve: "P-256" }).publicKey.export({
  type: "spki",
  format: "der",
});
const validity = {
  notBefore: new Date(NOW.getTime() - 900_000),
  notAfter: new Date(NOW.getTime() + DAY),
};
const id = SpiffeId.forWorkload("cluster.local", "default", "myapp");

for (const [algorithm, bundle] of Object.entries(bundles)) {
  for (const dnsNames of [[], ["dapr-sentry.dapr-system.svc", "localhost"]]) {
    Deno.test(`${algorithm} issuer, ${dnsNames.length} DNS names: the template encodes what the generic encoder writes`, () => {
      const serial = randomSerial();
      const generic = encodeTbsCertificate({
        serial,
        issuer: bundle.issuer.subject,
        subject: EMPTY_NAME,
        ...validity,
        subjectPublicKeyInfo: workloadSpki,
        extensions: [
          keyUsage(KeyUsage.digitalSignature),
          extendedKeyUsage(ExtKeyUsage.serverAuth, ExtKeyUsage.clientAuth),
          subjectAltName({ uris: [id.toString()], dnsNames }, true),
          authorityKeyIdentifier(bundle.issuer.keyId),
        ],
      }, bundle.issuer.key);
      const fast = encodeWorkloadTbs(id, workloadSpki, bundle.issuer, validity, dnsNames, serial);
      assert.equal(Buffer.from(fast).toString("hex"), generic.toString("hex"));
    });
  }
}

Deno.test("each issuer gets its own template: a second bundle's certificates name the second issuer", () => {
  const other = bundleFor("ecdsa-p256", "other.example");
  const first = issueWorkloadCertificate(bundles["ecdsa-p256"], id, workloadSpki, {
    ttlMs: DAY,
    skewMs: 0,
  }, NOW);
  const second = issueWorkloadCertificate(other, id, workloadSpki, { ttlMs: DAY, skewMs: 0 }, NOW);
  const hex = (bytes: Uint8Array) => Buffer.from(bytes).toString("hex");
  assert.equal(
    hex(parseCertificate(first.leafDer).issuer),
    hex(bundles["ecdsa-p256"].issuer.subject),
  );
  assert.equal(hex(parseCertificate(second.leafDer).issuer), hex(other.issuer.subject));
});

Deno.test("serials are 16 bytes, positive, and never repeat across pool refills", () => {
  const seen = new Set<string>();
  for (let i = 0; i < 2000; i++) {
    const serial = randomSerial();
    assert.equal(serial.length, 16);
    assert.ok(serial[0] > 0 && serial[0] < 0x80);
    seen.add(serial.toString("hex"));
  }
  assert.equal(seen.size, 2000);
});

for (const [algorithm, bundle] of Object.entries(bundles)) {
  Deno.test(`${algorithm} issuer: the thread-pool signer issues a certificate the issuer's key verifies`, async () => {
    const issued = await issueWorkloadCertificateAsync(bundle, id, workloadSpki, {
      ttlMs: DAY,
      skewMs: 0,
    }, NOW);
    const cert = parseCertificate(issued.leafDer);
    const issuerPublic = createPublicKey(bundle.issuer.key.privateKey);
    const hash = algorithm === "ed25519" ? null : "sha256";
    assert.ok(verify(hash, cert.tbs, issuerPublic, cert.signature));
    assert.equal(issued.notAfter.getTime(), NOW.getTime() + DAY);
    assert.ok(issued.chainPem.endsWith(bundle.issuerChainPem));
  });
}

Deno.test("the thread-pool CSR check accepts and refuses exactly what the synchronous one does", async () => {
  for (
    const pair of [
      generateKeyPairSync("ec", { namedCurve: "P-256" }),
      generateKeyPairSync("ec", { namedCurve: "P-384" }),
      generateKeyPairSync("ed25519"),
      generateKeyPairSync("rsa", { modulusLength: 2048 }),
    ]
  ) {
    const pem = csrPem(pair.privateKey);
    const good = await decodeCsrAsync(pem);
    assert.deepEqual(good.subjectPublicKeyInfo, decodeCsr(pem).subjectPublicKeyInfo);

    const tampered = Buffer.from(decodePem(pem)[0].der);
    tampered[tampered.length - 3] ^= 0x01; // inside the signature
    const tamperedPem = `-----BEGIN CERTIFICATE REQUEST-----\n${
      tampered.toString("base64")
    }\n-----END CERTIFICATE REQUEST-----\n`;
    assert.throws(() => decodeCsr(tamperedPem), CsrError);
    await assert.rejects(decodeCsrAsync(tamperedPem), (error: Error) => {
      assert.ok(error instanceof CsrError);
      assert.match(error.message, /invalid signature/);
      return true;
    });
  }
});
