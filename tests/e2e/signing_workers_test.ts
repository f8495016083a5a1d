/**
 * End to end: requests that arrive together are verified and signed on the signing worker
 * threads (`--signing-workers`), and what they return is exactly what the main thread returns:
 * valid chains for good CSRs of every key type, INVALID_ARGUMENT naming the problem for bad
 * ones, unique serials, each answer matched to its own request. With `--signing-workers 0`
 * the same burst is served on the main thread.
 */
import "reflect-metadata";
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { webcrypto } from "node:crypto";
import { join } from "node:path";
import * as x509 from "@peculiar/x509";
import { type GrpcError, SentryClient } from "../helpers/grpc_client.ts";
import { generateKey, KEY_TYPES, type KeyType, makeCsr, verifyChain } from "../helpers/openssl.ts";
import { metric, metricsText } from "../helpers/metrics.ts";
import { startSentry, tempDir } from "../helpers/sentry_process.ts";

x509.cryptoProvider.set(webcrypto as unknown as Crypto);

const BURST = 96;

/** The CSR with one bit of its signature (the last bytes of the DER) flipped. */
function tamper(csrPem: string): string {
  const der = Buffer.from(csrPem.replace(/-----[A-Z ]+-----|\s/g, ""), "base64");
  der[der.length - 2] ^= 0x01;
  return `-----BEGIN CERTIFICATE REQUEST-----\n${
    der.toString("base64")
  }\n-----END CERTIFICATE REQUEST-----\n`;
}

/**
 * The P-256 CSR with its public point moved off the curve (one bit of Y flipped): the key
 * import must refuse it, on whichever path the runtime's OpenSSL takes (JWK or DER).
 */
function offCurve(csrPem: string): string {
  const der = Buffer.from(csrPem.replace(/-----[A-Z ]+-----|\s/g, ""), "base64");
  // BIT STRING of 66 bytes, no unused bits, uncompressed point: 03 42 00 04 || X || Y.
  const point = der.indexOf(Buffer.from([0x03, 0x42, 0x00, 0x04]));
  assert.ok(point > 0, "a P-256 CSR");
  der[point + 4 + 63] ^= 0x01;
  return `-----BEGIN CERTIFICATE REQUEST-----\n${
    der.toString("base64")
  }\n-----END CERTIFICATE REQUEST-----\n`;
}

async function burst(workers: number): Promise<void> {
  const work = await tempDir();
  const sentry = await startSentry({ args: [`--signing-workers=${workers}`] });
  const anchors = await Deno.readTextFile(join(sentry.dir, "ca.crt"));
  const keyTypes = Object.keys(KEY_TYPES) as KeyType[];
  const csrs = await Promise.all(
    keyTypes.map(async (type) => ({ type, pem: await makeCsr(work, await generateKey(type)) })),
  );
  // A CSR whose signature does not match its key, and one whose key is not a point of its
  // curve: the worker must refuse them, not crash.
  const tampered = tamper(csrs[0].pem);
  const p256 = csrs.find((csr) => csr.type === "ec-p256");
  assert.ok(p256, "KEY_TYPES has P-256");
  const notOnCurve = offCurve(p256.pem);
  const client = new SentryClient(sentry.grpcPort, anchors);
  try {
    if (workers > 0) {
      assert.match(sentry.logs(), new RegExp(`on ${workers} worker threads`));
    } else {
      assert.match(sentry.logs(), /signing on the main thread \(--signing-workers 0\)/);
    }
    const results = await Promise.all(
      Array.from({ length: BURST }, async (_, i) => {
        const bad = i % 8 === 7;
        const csr = !bad ? csrs[i % csrs.length].pem : i % 16 === 7 ? tampered : notOnCurve;
        try {
          const response = await client.sign({
            id: `app${i}`,
            namespace: "default",
            certificateSigningRequest: csr,
          });
          return { i, bad, pem: response.workloadCertificate.toString(), csr };
        } catch (error) {
          return { i, bad, error: error as GrpcError, csr };
        }
      }),
    );
    const serials = new Set<string>();
    for (const result of results) {
      if (result.bad) {
        assert.ok(result.error, `request ${result.i} with a bad CSR must fail`);
        assert.equal(result.error.code, 3, result.error.details); // INVALID_ARGUMENT
        // Each refused for its own reason: the bad point at the key's import, before any
        // signature work; the tampered request at the signature check.
        assert.match(
          result.error.details,
          result.csr === notOnCurve
            ? /^failed to parse certificate signing request: /
            : /^invalid signature$/,
        );
        continue;
      }
      assert.ok(result.pem, `request ${result.i}: ${result.error?.details}`);
      const leaf = new x509.X509Certificate(result.pem);
      // Each answer belongs to its own request: its SAN and its key.
      const san = leaf.getExtension(x509.SubjectAlternativeNameExtension)!;
      assert.deepEqual(san.names.toJSON(), [
        { type: "url", value: `spiffe://public/ns/default/app${result.i}` },
      ]);
      const request = new x509.Pkcs10CertificateRequest(result.csr);
      assert.deepEqual(
        new Uint8Array(leaf.publicKey.rawData),
        new Uint8Array(request.publicKey.rawData),
      );
      assert.ok(!serials.has(leaf.serialNumber), "serials are unique");
      serials.add(leaf.serialNumber);
    }
    // The worker threads did the signing, or none did.
    const onWorkers = metric(
      await metricsText(sentry.metricsPort),
      "dapr_sentry_cert_sign_worker_total",
    );
    if (workers > 0) assert.ok(onWorkers > 0, "some of the burst was signed on the workers");
    else assert.equal(onWorkers, 0);
    // A sample of the chains verifies with openssl (-x509_strict).
    for (const result of results.filter((r) => r.pem).slice(0, 6)) {
      await verifyChain(work, anchors, result.pem!, "sslclient");
    }
  } finally {
    client.close();
    assert.equal(await sentry.stop(), 0);
  }
}

Deno.test("a burst is signed on the worker threads, each answer matching its request", async () => {
  await burst(2);
});

Deno.test("--signing-workers 0 serves the same burst on the main thread", async () => {
  await burst(0);
});

Deno.test("control-plane services get Dapr's DNS names, inline and on the workers (openssl reads them)", async () => {
  const work = await tempDir();
  const sentry = await startSentry({
    args: ["--signing-workers=1", "--trust-domain=cluster.local"],
    env: { NAMESPACE: "dapr-system" },
  });
  const client = new SentryClient(
    sentry.grpcPort,
    await Deno.readTextFile(join(sentry.dir, "ca.crt")),
  );
  try {
    const csr = await makeCsr(work, await generateKey("ed25519"));
    const sign = (id: string, namespace: string) =>
      client.sign({ id, namespace, certificateSigningRequest: csr });
    const sanText = async (pem: string) => {
      const path = join(work, `cert-${crypto.randomUUID()}.pem`);
      await Deno.writeTextFile(path, pem);
      return await opensslText(path);
    };
    // A lone call is signed inline; calls that arrive together go to the worker.
    const [lone] = [await sign("dapr-injector", "dapr-system")];
    const together = await Promise.all(
      Array.from({ length: 8 }, () => sign("dapr-scheduler", "dapr-system")),
    );
    const other = await sign("dapr-injector", "default");
    assert.match(
      await sanText(lone.workloadCertificate.toString()),
      /DNS:dapr-sidecar-injector\.dapr-system\.svc/,
    );
    for (const response of together) {
      const text = await sanText(response.workloadCertificate.toString());
      for (const ordinal of [0, 1, 2]) {
        assert.match(
          text,
          new RegExp(
            `DNS:dapr-scheduler-server-${ordinal}\\.dapr-scheduler-server\\.dapr-system\\.svc\\.cluster\\.local`,
          ),
        );
      }
      assert.match(text, /URI:spiffe:\/\/public\/ns\/dapr-system\/dapr-scheduler/);
    }
    assert.doesNotMatch(await sanText(other.workloadCertificate.toString()), /DNS:/);
    assert.ok(
      metric(await metricsText(sentry.metricsPort), "dapr_sentry_cert_sign_worker_total") > 0,
    );
  } finally {
    client.close();
    await sentry.stop();
  }
});

async function opensslText(path: string): Promise<string> {
  const out = await new Deno.Command("openssl", {
    args: ["x509", "-in", path, "-noout", "-ext", "subjectAltName"],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.ok(out.success, new TextDecoder().decode(out.stderr));
  return new TextDecoder().decode(out.stdout);
}
