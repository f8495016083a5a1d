/**
 * End to end: sentry's own TLS identity as seen by openssl s_client — the SPIFFE ID daprd
 * expects plus DNS names, a chain to the anchors, TLS >= 1.2 with ALPN h2, and renewal at half
 * its life without closing the port.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { openssl } from "../helpers/openssl.ts";
import { startSentry, tempDir } from "../helpers/sentry_process.ts";

/** Runs s_client against the port; returns its output (stdin closed at once). */
async function sClient(port: number, extra: string[]): Promise<{ code: number; out: string }> {
  const output = await new Deno.Command("openssl", {
    args: ["s_client", "-connect", `127.0.0.1:${port}`, "-servername", "localhost", ...extra],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decoder = new TextDecoder();
  return { code: output.code, out: decoder.decode(output.stdout) + decoder.decode(output.stderr) };
}

async function servingCertificate(port: number, anchors: string): Promise<string> {
  const { code, out } = await sClient(port, [
    "-alpn",
    "h2",
    "-CAfile",
    anchors,
    "-verify_return_error",
  ]);
  assert.equal(code, 0, out);
  assert.match(out, /ALPN protocol: h2/);
  assert.match(out, /Verify return code: 0 \(ok\)/);
  return out.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/)![0];
}

Deno.test("the serving certificate carries sentry's SPIFFE ID and is renewed at half its life", async () => {
  const work = await tempDir();
  const config = join(work, "config.yaml");
  await Deno.writeTextFile(
    config,
    "kind: Configuration\nspec:\n  mtls:\n    workloadCertTTL: 4s\n    allowedClockSkew: 0s\n",
  );
  const sentry = await startSentry({
    args: ["--trust-domain", "cluster.local", "--config", config],
    env: { NAMESPACE: "dapr-system" },
  });
  const anchors = join(sentry.dir, "ca.crt");
  try {
    const first = await servingCertificate(sentry.grpcPort, anchors);
    const text = await openssl(["x509", "-noout", "-text"], first);
    assert.match(text, /URI:spiffe:\/\/cluster\.local\/ns\/dapr-system\/dapr-sentry/);
    for (
      const dns of [
        "localhost",
        "dapr-sentry",
        "dapr-sentry.dapr-system.svc",
        "dapr-sentry.dapr-system.svc.cluster.local",
      ]
    ) {
      assert.match(text, new RegExp(`DNS:${dns.replaceAll(".", "\\.")}(,|\\n)`));
    }
    assert.doesNotMatch(text, /CA:TRUE/);

    // TLS 1.1 is refused.
    const old = await sClient(sentry.grpcPort, ["-tls1_1"]);
    assert.notEqual(old.code, 0);

    // 4s lifetime: renewed after ~2s, on the same port.
    await new Promise((resolve) => setTimeout(resolve, 3000));
    const second = await servingCertificate(sentry.grpcPort, anchors);
    const serial = async (pem: string) =>
      (await openssl(["x509", "-noout", "-serial"], pem)).trim();
    assert.notEqual(
      await serial(second),
      await serial(first),
      "serving certificate was not renewed",
    );
    assert.match(sentry.logs(), /serving certificate rotated/);
    // Renewal at half-life, not constantly: about one rotation per 2 s.
    const rotations = sentry.logs().split("serving certificate rotated").length - 1;
    assert.ok(rotations >= 1 && rotations <= 2, `${rotations} rotations in 3 s`);
  } finally {
    await sentry.stop();
  }
});
