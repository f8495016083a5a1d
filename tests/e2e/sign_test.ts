/**
 * End to end: a real sentry process signs CSRs of every accepted key type over real TLS, and
 * the certificates are checked with openssl and @peculiar/x509 (chain, SAN, key usages,
 * validity, serial uniqueness).
 */
import "reflect-metadata";
import assert from "node:assert/strict";
import { webcrypto } from "node:crypto";
import { join } from "node:path";
import * as x509 from "@peculiar/x509";
import { SentryClient } from "../helpers/grpc_client.ts";
import { generateKey, KEY_TYPES, type KeyType, makeCsr, verifyChain } from "../helpers/openssl.ts";
import { startSentry, tempDir } from "../helpers/sentry_process.ts";

x509.cryptoProvider.set(webcrypto as unknown as Crypto);

Deno.test("sentry signs CSRs of every key type with Dapr's workload profile", async (t) => {
  const work = await tempDir();
  const sentry = await startSentry({ env: { NAMESPACE: "dapr-system" } });
  const anchors = await Deno.readTextFile(join(sentry.dir, "ca.crt"));
  const issuerPem = await Deno.readTextFile(join(sentry.dir, "issuer.crt"));
  const issuer = new x509.X509Certificate(issuerPem);
  const client = new SentryClient(sentry.grpcPort, anchors);
  const serials = new Set<string>();
  try {
    for (const keyType of Object.keys(KEY_TYPES) as KeyType[]) {
      await t.step(keyType, async () => {
        const csr = await makeCsr(work, await generateKey(keyType));
        const before = Date.now();
        const response = await client.sign({
          id: "myapp",
          namespace: "default",
          trustDomain: "cluster.local",
          certificateSigningRequest: csr,
          tokenValidator: 1,
        });
        const chainPem = response.workloadCertificate.toString();
        const certs = chainPem.match(
          /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g,
        )!;
        assert.equal(certs.length, 2, "leaf followed by the issuer");
        const leaf = new x509.X509Certificate(certs[0]);
        assert.equal(new x509.X509Certificate(certs[1]).serialNumber, issuer.serialNumber);

        // Identity: empty subject, exactly one URI SAN, critical.
        assert.equal(leaf.subject, "");
        const san = leaf.getExtension(x509.SubjectAlternativeNameExtension)!;
        assert.ok(san.critical, "SAN must be critical with an empty subject");
        assert.deepEqual(
          san.names.toJSON(),
          [{ type: "url", value: "spiffe://cluster.local/ns/default/myapp" }],
        );
        // Usages.
        const ku = leaf.getExtension(x509.KeyUsagesExtension)!;
        assert.ok(ku.critical);
        assert.equal(ku.usages, x509.KeyUsageFlags.digitalSignature);
        const eku = leaf.getExtension(x509.ExtendedKeyUsageExtension)!;
        assert.deepEqual(
          [...eku.usages].sort(),
          [
            x509.ExtendedKeyUsage.clientAuth,
            x509.ExtendedKeyUsage.serverAuth,
          ].sort(),
        );
        assert.equal(leaf.getExtension(x509.BasicConstraintsExtension), null);
        const aki = leaf.getExtension(x509.AuthorityKeyIdentifierExtension)!;
        const ski = issuer.getExtension(x509.SubjectKeyIdentifierExtension)!;
        assert.equal(aki.keyId, ski.keyId);
        // Validity: back-dated by the default 15m skew, 24h lifetime.
        const skewMs = before - leaf.notBefore.getTime();
        assert.ok(skewMs > 14 * 60_000 && skewMs < 16 * 60_000, `NotBefore back-dated ${skewMs}ms`);
        const ttlMs = leaf.notAfter.getTime() - before;
        assert.ok(Math.abs(ttlMs - 24 * 3_600_000) < 60_000, `lifetime ${ttlMs}ms`);
        assert.equal(Number(response.validUntil.seconds), leaf.notAfter.getTime() / 1000);
        // Serial: 128-bit random, unique.
        assert.ok(leaf.serialNumber.length >= 30, `serial ${leaf.serialNumber}`);
        assert.ok(!serials.has(leaf.serialNumber));
        serials.add(leaf.serialNumber);
        // The certified key is the CSR's key.
        const request = new x509.Pkcs10CertificateRequest(csr);
        assert.deepEqual(
          new Uint8Array(leaf.publicKey.rawData),
          new Uint8Array(request.publicKey.rawData),
        );
        // Trust anchors: one element holding all anchors.
        assert.equal(response.trustChainCertificates.length, 1);
        assert.equal(response.trustChainCertificates[0].toString().trim(), anchors.trim());
        // An independent verifier accepts it for both TLS roles.
        await verifyChain(work, anchors, chainPem, "sslserver");
        await verifyChain(work, anchors, chainPem, "sslclient");
      });
    }
  } finally {
    client.close();
    assert.equal(await sentry.stop(), 0, "graceful stop exits 0");
  }
});
