/**
 * Dapr's certificate profiles (docs/compatibility.md#certificate-profiles) as generateBundle and the signer write them,
 * checked with two independent readers: @peculiar/x509 and the openssl CLI (`x509 -text`,
 * `verify -x509_strict`). Time is moved with a fixed `now`.
 */
import "reflect-metadata";
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { createPublicKey, generateKeyPairSync, webcrypto } from "node:crypto";
import { join } from "node:path";
import * as x509 from "@peculiar/x509";
import {
  type BundlePem,
  generateBundle,
  type TrustBundle,
  validateBundle,
} from "../../src/ca/bundle.ts";
import type { CaKeyAlgorithm } from "../../src/x509/keys.ts";
import { createWorkloadCertificate } from "../../src/ca/profiles.ts";
import { issueWorkloadCertificate, SigningError } from "../../src/ca/signer.ts";
import { SpiffeId } from "../../src/ca/spiffe.ts";
import { openssl, verifyChain } from "../helpers/openssl.ts";

x509.cryptoProvider.set(webcrypto as unknown as Crypto);

const SECOND = 1000;
const MINUTE = 60 * SECOND;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;
const TD = "cluster.local";
const NS = "dapr-system";
const SKEW = 15 * MINUTE;
const CA_TTL = 365 * DAY;
/** Whole seconds, so that the expected X.509 times are exact. */
const NOW = new Date("2031-03-04T05:06:07Z");
const ALGORITHMS: readonly CaKeyAlgorithm[] = ["ecdsa-p256", "ed25519"];

const OID = {
  keyUsage: "2.5.29.15",
  basicConstraints: "2.5.29.19",
  subjectKeyId: "2.5.29.14",
  authorityKeyId: "2.5.29.35",
  extKeyUsage: "2.5.29.37",
  subjectAltName: "2.5.29.17",
  serverAuth: "1.3.6.1.5.5.7.3.1",
  clientAuth: "1.3.6.1.5.5.7.3.2",
};

const work = await Deno.makeTempDir({ prefix: "sentry-profiles-test-" });
globalThis.addEventListener("unload", () => Deno.removeSync(work, { recursive: true }));

async function writeTemp(name: string, content: string): Promise<string> {
  const path = join(work, `${crypto.randomUUID()}-${name}`);
  await Deno.writeTextFile(path, content);
  return path;
}

async function opensslText(pem: string): Promise<string> {
  return await openssl(["x509", "-in", await writeTemp("cert.pem", pem), "-noout", "-text"]);
}

/** `openssl verify -x509_strict` at a given time; returns stdout, throws when verification fails. */
async function verifyAt(
  anchorsPem: string,
  chainPem: string,
  at: Date,
  purpose?: "sslserver" | "sslclient",
): Promise<string> {
  const blocks = chainPem.match(
    /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----\n?/g,
  )!;
  const args = ["verify", "-x509_strict", "-attime", String(Math.floor(at.getTime() / 1000))];
  if (purpose) args.push("-purpose", purpose);
  args.push("-CAfile", await writeTemp("anchors.pem", anchorsPem));
  if (blocks.length > 1) {
    args.push("-untrusted", await writeTemp("chain.pem", blocks.slice(1).join("")));
  }
  return await openssl([...args, await writeTemp("leaf.pem", blocks[0])]);
}

function hex(bytes: ArrayBuffer | Uint8Array): string {
  return Buffer.from(bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes)).toString("hex");
}

/** @peculiar/x509 certificate from DER bytes (copied into a plain ArrayBuffer). */
function parseX509(der: Uint8Array): x509.X509Certificate {
  return new x509.X509Certificate(new Uint8Array(der));
}

function extensionOids(cert: x509.X509Certificate): string[] {
  return Array.from(cert.extensions, (extension) => extension.type).sort();
}

function assertSerial128(cert: x509.X509Certificate): void {
  // 16 bytes of magnitude, top bit clear: a positive 128-bit DER INTEGER without padding.
  assert.match(cert.serialNumber, /^[0-9a-f]{32}$/i, cert.serialNumber);
  const first = parseInt(cert.serialNumber.slice(0, 2), 16);
  assert.ok(first >= 0x01 && first <= 0x7f, `serial ${cert.serialNumber} is not positive/128-bit`);
}

function makeBundle(algorithm: CaKeyAlgorithm, keepRootKey = false): BundlePem {
  return generateBundle({
    trustDomain: TD,
    namespace: NS,
    algorithm,
    now: NOW,
    ttlMs: CA_TTL,
    skewMs: SKEW,
    keepRootKey,
  });
}

const SIGNATURE_TEXT: Record<CaKeyAlgorithm, RegExp> = {
  "ecdsa-p256": /Signature Algorithm: ecdsa-with-SHA256/,
  "ed25519": /Signature Algorithm: ED25519/,
};

for (const algorithm of ALGORITHMS) {
  Deno.test(`${algorithm}: root profile`, async () => {
    const pem = makeBundle(algorithm);
    const root = new x509.X509Certificate(pem.caCrt);
    assert.equal(root.subject, `O=${TD}`);
    assert.equal(root.issuer, root.subject);
    assert.ok(await root.verify({ publicKey: root.publicKey, signatureOnly: true }));
    assert.deepEqual(
      extensionOids(root),
      [OID.subjectKeyId, OID.keyUsage, OID.basicConstraints].sort(),
    );

    const bc = root.getExtension(x509.BasicConstraintsExtension)!;
    assert.equal(bc.critical, true);
    assert.equal(bc.ca, true);
    assert.equal(bc.pathLength, undefined);

    const ku = root.getExtension(x509.KeyUsagesExtension)!;
    assert.equal(ku.critical, true);
    assert.equal(ku.usages, x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyCertSign);

    const ski = root.getExtension(x509.SubjectKeyIdentifierExtension)!;
    assert.equal(ski.critical, false);
    assert.equal(ski.keyId, hex(await root.publicKey.getKeyIdentifier("SHA-1")));

    assert.equal(root.notBefore.getTime(), NOW.getTime() - SKEW);
    assert.equal(root.notAfter.getTime(), NOW.getTime() + CA_TTL);
    assert.equal(root.notAfter.getTime() - NOW.getTime(), 365 * DAY);
    assertSerial128(root);

    const text = await opensslText(pem.caCrt);
    assert.match(text, /Version: 3 \(0x2\)/);
    assert.match(text, /Subject: O ?= ?cluster\.local\n/);
    assert.match(text, /X509v3 Basic Constraints: critical\s+CA:TRUE\n/);
    assert.doesNotMatch(text, /pathlen/);
    assert.match(text, /X509v3 Key Usage: critical\s+Digital Signature, Certificate Sign\n/);
    assert.match(text, /X509v3 Subject Key Identifier/);
    assert.doesNotMatch(text, /Extended Key Usage|Subject Alternative Name/);
    assert.match(text, SIGNATURE_TEXT[algorithm]);
    assert.match(await verifyAt(pem.caCrt, pem.caCrt, NOW), /OK/);
  });

  Deno.test(`${algorithm}: issuer profile`, async () => {
    const pem = makeBundle(algorithm);
    const root = new x509.X509Certificate(pem.caCrt);
    const issuer = new x509.X509Certificate(pem.issuerCrt);
    assert.equal(issuer.subject, `O=spiffe://${TD}/ns/${NS}/dapr-sentry`);
    assert.equal(issuer.issuer, root.subject);
    assert.ok(await issuer.verify({ publicKey: root.publicKey, signatureOnly: true }));
    assert.equal(await issuer.verify({ publicKey: issuer.publicKey, signatureOnly: true }), false);
    assert.deepEqual(
      extensionOids(issuer),
      [OID.subjectKeyId, OID.keyUsage, OID.basicConstraints, OID.authorityKeyId].sort(),
    );

    const bc = issuer.getExtension(x509.BasicConstraintsExtension)!;
    assert.equal(bc.critical, true);
    assert.equal(bc.ca, true);
    assert.equal(bc.pathLength, undefined);

    const ku = issuer.getExtension(x509.KeyUsagesExtension)!;
    assert.equal(ku.critical, true);
    assert.equal(
      ku.usages,
      x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyCertSign |
        x509.KeyUsageFlags.cRLSign,
    );

    const ski = issuer.getExtension(x509.SubjectKeyIdentifierExtension)!;
    assert.equal(ski.keyId, hex(await issuer.publicKey.getKeyIdentifier("SHA-1")));
    const aki = issuer.getExtension(x509.AuthorityKeyIdentifierExtension)!;
    assert.equal(aki.critical, false);
    assert.equal(aki.keyId, root.getExtension(x509.SubjectKeyIdentifierExtension)!.keyId);
    assert.notEqual(aki.keyId, ski.keyId);

    assert.equal(issuer.notBefore.getTime(), NOW.getTime() - SKEW);
    assert.equal(issuer.notAfter.getTime(), NOW.getTime() + CA_TTL);
    assertSerial128(issuer);
    assert.notEqual(issuer.serialNumber, root.serialNumber);

    // The issuer key: PKCS#8, and the public half of the issuer certificate.
    assert.match(pem.issuerKey, /^-----BEGIN PRIVATE KEY-----\n/);
    const spki = createPublicKey(pem.issuerKey).export({ type: "spki", format: "der" });
    assert.equal(hex(spki), hex(issuer.publicKey.rawData));
    assert.equal(pem.caKey, undefined);

    const text = await opensslText(pem.issuerCrt);
    assert.match(text, /Subject: O ?= ?spiffe:\/\/cluster\.local\/ns\/dapr-system\/dapr-sentry\n/);
    assert.match(text, /Issuer: O ?= ?cluster\.local\n/);
    assert.match(text, /X509v3 Basic Constraints: critical\s+CA:TRUE\n/);
    assert.match(
      text,
      /X509v3 Key Usage: critical\s+Digital Signature, Certificate Sign, CRL Sign\n/,
    );
    assert.match(text, /X509v3 Authority Key Identifier/);
    assert.doesNotMatch(text, /pathlen|Extended Key Usage|Subject Alternative Name/);
    assert.match(text, SIGNATURE_TEXT[algorithm]);
    assert.match(await verifyAt(pem.caCrt, pem.issuerCrt, NOW), /OK/);
  });

  Deno.test(`${algorithm}: keepRootKey returns the root's PKCS#8 key`, () => {
    const pem = makeBundle(algorithm, true);
    assert.ok(pem.caKey);
    assert.match(pem.caKey, /^-----BEGIN PRIVATE KEY-----\n/);
    const root = new x509.X509Certificate(pem.caCrt);
    const spki = createPublicKey(pem.caKey).export({ type: "spki", format: "der" });
    assert.equal(hex(spki), hex(root.publicKey.rawData));
  });

  Deno.test(`${algorithm}: workload profile`, async (t) => {
    const pem = makeBundle(algorithm);
    const trust = validateBundle(pem, NOW);
    const issuer = new x509.X509Certificate(pem.issuerCrt);
    const issuerSki = issuer.getExtension(x509.SubjectKeyIdentifierExtension)!.keyId;
    const id = SpiffeId.forWorkload(TD, "default", "myapp");
    const workloadKeys = {
      "ec-p256": generateKeyPairSync("ec", { namedCurve: "P-256" }),
      "ed25519": generateKeyPairSync("ed25519"),
      "rsa-2048": generateKeyPairSync("rsa", { modulusLength: 2048 }),
    };
    for (const [keyType, pair] of Object.entries(workloadKeys)) {
      await t.step(`${keyType} workload key`, async () => {
        const spki = pair.publicKey.export({ type: "spki", format: "der" });
        const validity = {
          notBefore: new Date(NOW.getTime() - SKEW),
          notAfter: new Date(NOW.getTime() + DAY),
        };
        const der = createWorkloadCertificate(id, spki, trust.issuer, validity);
        const cert = parseX509(der);

        assert.equal(cert.subject, "");
        assert.equal(cert.issuer, issuer.subject);
        assert.ok(await cert.verify({ publicKey: issuer.publicKey, signatureOnly: true }));
        assert.equal(hex(cert.publicKey.rawData), hex(spki));
        assert.equal(cert.notBefore.getTime(), validity.notBefore.getTime());
        assert.equal(cert.notAfter.getTime(), validity.notAfter.getTime());
        assertSerial128(cert);
        assert.deepEqual(
          extensionOids(cert),
          [OID.keyUsage, OID.extKeyUsage, OID.subjectAltName, OID.authorityKeyId].sort(),
        );
        assert.equal(cert.getExtension(OID.basicConstraints), null);

        const san = cert.getExtension(x509.SubjectAlternativeNameExtension)!;
        assert.equal(san.critical, true);
        assert.deepEqual(
          san.names.items.map((name) => [name.type, name.value]),
          [["url", "spiffe://cluster.local/ns/default/myapp"]],
        );

        const ku = cert.getExtension(x509.KeyUsagesExtension)!;
        assert.equal(ku.critical, true);
        assert.equal(ku.usages, x509.KeyUsageFlags.digitalSignature);

        const eku = cert.getExtension(x509.ExtendedKeyUsageExtension)!;
        assert.deepEqual([...eku.usages].sort(), [OID.serverAuth, OID.clientAuth].sort());

        const aki = cert.getExtension(x509.AuthorityKeyIdentifierExtension)!;
        assert.equal(aki.keyId, issuerSki);

        const leafPem = cert.toString("pem") + "\n";
        const text = await opensslText(leafPem);
        assert.match(text, /Subject: *\n/);
        assert.match(
          text,
          /X509v3 Subject Alternative Name: critical\s+URI:spiffe:\/\/cluster\.local\/ns\/default\/myapp\n/,
        );
        assert.match(text, /X509v3 Key Usage: critical\s+Digital Signature\n/);
        assert.match(
          text,
          /X509v3 Extended Key Usage: *\n\s+TLS Web Server Authentication, TLS Web Client Authentication\n/,
        );
        assert.doesNotMatch(text, /Basic Constraints/);
        assert.match(text, SIGNATURE_TEXT[algorithm]);
        for (const purpose of ["sslserver", "sslclient"] as const) {
          assert.match(await verifyAt(pem.caCrt, leafPem + pem.issuerCrt, NOW, purpose), /OK/);
        }
      });
    }
  });

  Deno.test(`${algorithm}: DNS names join the URI SAN only when asked (serving certificate)`, () => {
    const trust = validateBundle(makeBundle(algorithm), NOW);
    const spki = generateKeyPairSync("ed25519").publicKey.export({ type: "spki", format: "der" });
    const id = SpiffeId.forWorkload(TD, NS, "dapr-sentry");
    const validity = { notBefore: NOW, notAfter: new Date(NOW.getTime() + HOUR) };
    const der = createWorkloadCertificate(id, spki, trust.issuer, validity, [
      "localhost",
      "sentry.local",
    ]);
    const san = parseX509(der).getExtension(x509.SubjectAlternativeNameExtension)!;
    assert.equal(san.critical, true);
    assert.deepEqual(san.names.items.map((name) => [name.type, name.value]).sort(), [
      ["dns", "localhost"],
      ["dns", "sentry.local"],
      ["url", "spiffe://cluster.local/ns/dapr-system/dapr-sentry"],
    ]);
  });
}

Deno.test("validity past 2049 is written as GeneralizedTime and read back exactly", async () => {
  const now = new Date("2049-12-01T00:00:00Z");
  const pem = generateBundle({
    trustDomain: TD,
    namespace: NS,
    algorithm: "ecdsa-p256",
    now,
    ttlMs: CA_TTL,
    skewMs: SKEW,
  });
  const root = new x509.X509Certificate(pem.caCrt);
  assert.equal(root.notBefore.getTime(), now.getTime() - SKEW);
  assert.equal(root.notAfter.getTime(), now.getTime() + CA_TTL);
  const trust = validateBundle(pem, now);
  assert.equal(trust.issuerNotAfter.getTime(), now.getTime() + CA_TTL);
  assert.match(await opensslText(pem.caCrt), /Not After : Dec {2}1 00:00:00 2050 GMT/);
  assert.match(await verifyAt(pem.caCrt, pem.issuerCrt, new Date("2050-06-01T00:00:00Z")), /OK/);
});

// ---- the signer ----

const TIMING = { ttlMs: DAY, skewMs: SKEW };
const trustBundles = new Map<CaKeyAlgorithm, TrustBundle>(
  ALGORITHMS.map((algorithm) => [algorithm, validateBundle(makeBundle(algorithm), NOW)]),
);
const workloadSpki = generateKeyPairSync("ec", { namedCurve: "P-256" }).publicKey.export({
  type: "spki",
  format: "der",
});
const MYAPP = SpiffeId.forWorkload(TD, "default", "myapp");

function pemBlocks(pem: string): string[] {
  return pem.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----\n/g) ?? [];
}

for (const algorithm of ALGORITHMS) {
  const trust = trustBundles.get(algorithm)!;

  Deno.test(`${algorithm} signer: NotBefore = now - skew, NotAfter = now + ttl, whole seconds`, async () => {
    const now = new Date(NOW.getTime() + 3 * HOUR + 456); // not a whole second
    const issued = issueWorkloadCertificate(trust, MYAPP, workloadSpki, TIMING, now);
    const expectedBefore = Math.floor((now.getTime() - SKEW) / SECOND) * SECOND;
    const expectedAfter = Math.floor((now.getTime() + DAY) / SECOND) * SECOND;
    assert.equal(issued.notBefore.getTime(), expectedBefore);
    assert.equal(issued.notAfter.getTime(), expectedAfter);
    assert.equal(issued.notAfter.getTime() % SECOND, 0); // valid_until has whole seconds

    const leaf = parseX509(issued.leafDer);
    assert.equal(leaf.notBefore.getTime(), issued.notBefore.getTime());
    assert.equal(leaf.notAfter.getTime(), issued.notAfter.getTime());
    assert.equal(
      leaf.getExtension(x509.SubjectAlternativeNameExtension)!.names.items[0].value,
      MYAPP.toString(),
    );

    // chainPem: the leaf, then the issuer chain (without the root).
    const blocks = pemBlocks(issued.chainPem);
    assert.equal(blocks.length, 2);
    assert.equal(hex(new x509.X509Certificate(blocks[0]).rawData), hex(issued.leafDer));
    assert.equal(
      hex(new x509.X509Certificate(blocks[1]).rawData),
      hex(new x509.X509Certificate(trust.pem.issuerCrt).rawData),
    );
    for (const purpose of ["sslserver", "sslclient"] as const) {
      assert.match(await verifyAt(trust.anchorsPem, issued.chainPem, now, purpose), /OK/);
    }
  });

  Deno.test(`${algorithm} signer: TTL and skew come from the timing`, () => {
    const now = new Date(NOW.getTime() + DAY);
    const issued = issueWorkloadCertificate(trust, MYAPP, workloadSpki, {
      ttlMs: 25 * SECOND,
      skewMs: 0,
    }, now);
    assert.equal(issued.notBefore.getTime(), now.getTime());
    assert.equal(issued.notAfter.getTime(), now.getTime() + 25 * SECOND);
  });

  Deno.test(`${algorithm} signer: NotAfter is clamped to the issuer's NotAfter`, async () => {
    const now = new Date(trust.issuerNotAfter.getTime() - HOUR);
    const issued = issueWorkloadCertificate(trust, MYAPP, workloadSpki, TIMING, now);
    assert.equal(issued.notAfter.getTime(), trust.issuerNotAfter.getTime());
    const leaf = parseX509(issued.leafDer);
    const issuer = new x509.X509Certificate(trust.pem.issuerCrt);
    assert.equal(leaf.notAfter.getTime(), issuer.notAfter.getTime());
    assert.match(await verifyAt(trust.anchorsPem, issued.chainPem, now, "sslclient"), /OK/);
  });

  Deno.test(`${algorithm} signer: NotBefore is not earlier than the issuer's NotBefore`, () => {
    const now = new Date(trust.issuerNotBefore.getTime() + MINUTE);
    const issued = issueWorkloadCertificate(trust, MYAPP, workloadSpki, TIMING, now);
    assert.equal(issued.notBefore.getTime(), trust.issuerNotBefore.getTime());
  });

  Deno.test(`${algorithm} signer: an expired or not yet valid issuer refuses to sign`, () => {
    assert.throws(
      () =>
        issueWorkloadCertificate(
          trust,
          MYAPP,
          workloadSpki,
          TIMING,
          new Date(trust.issuerNotAfter.getTime() + SECOND),
        ),
      (error: Error) => {
        assert.ok(error instanceof SigningError);
        assert.match(error.message, /expired/);
        assert.ok(error.message.includes(trust.issuerNotAfter.toISOString()));
        return true;
      },
    );
    assert.throws(
      () =>
        issueWorkloadCertificate(
          trust,
          MYAPP,
          workloadSpki,
          TIMING,
          new Date(NOW.getTime() + 2 * CA_TTL),
        ),
      SigningError,
    );
    assert.throws(
      () =>
        issueWorkloadCertificate(
          trust,
          MYAPP,
          workloadSpki,
          TIMING,
          new Date(trust.issuerNotBefore.getTime() - SECOND),
        ),
      (error: Error) => {
        assert.ok(error instanceof SigningError);
        assert.match(error.message, /not valid until/);
        assert.ok(error.message.includes(trust.issuerNotBefore.toISOString()));
        return true;
      },
    );
  });

  Deno.test(`${algorithm} signer: the validity bounds of the issuer are inclusive`, () => {
    const first = issueWorkloadCertificate(
      trust,
      MYAPP,
      workloadSpki,
      TIMING,
      trust.issuerNotBefore,
    );
    assert.equal(first.notBefore.getTime(), trust.issuerNotBefore.getTime());
    const last = issueWorkloadCertificate(trust, MYAPP, workloadSpki, TIMING, trust.issuerNotAfter);
    assert.equal(last.notAfter.getTime(), trust.issuerNotAfter.getTime());
  });

  Deno.test(`${algorithm} signer: serials are positive 128-bit and unique over 100 certificates`, () => {
    const serials = new Set<string>();
    for (let i = 0; i < 100; i++) {
      const issued = issueWorkloadCertificate(trust, MYAPP, workloadSpki, TIMING, NOW);
      const cert = parseX509(issued.leafDer);
      assertSerial128(cert);
      serials.add(cert.serialNumber);
    }
    assert.equal(serials.size, 100);
  });
}

Deno.test("signer output verifies with the shared openssl helper at the real current time", async () => {
  const now = new Date();
  const trust = validateBundle(
    generateBundle({
      trustDomain: "public",
      namespace: "default",
      algorithm: "ecdsa-p256",
      now,
      ttlMs: CA_TTL,
      skewMs: SKEW,
    }),
    now,
  );
  const id = SpiffeId.forWorkload("public", "default", "myapp");
  const issued = issueWorkloadCertificate(trust, id, workloadSpki, TIMING, now);
  for (const purpose of ["sslserver", "sslclient"] as const) {
    assert.match(await verifyChain(work, trust.anchorsPem, issued.chainPem, purpose), /OK/);
  }
});
