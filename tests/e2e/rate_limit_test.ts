/**
 * End to end: `--identity-rate-limit` lets each workload identity sign its minute's worth,
 * then tells it to retry (RESOURCE_EXHAUSTED naming the identity and the limit), while other
 * identities are served as usual; the refusals are counted as `reason="rate_limited"`.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { type GrpcError, SentryClient } from "../helpers/grpc_client.ts";
import { metricsText } from "../helpers/metrics.ts";
import { generateKey, makeCsr } from "../helpers/openssl.ts";
import { startSentry, tempDir } from "../helpers/sentry_process.ts";

Deno.test("--identity-rate-limit: one identity is told to retry, the others are served", async () => {
  const work = await tempDir();
  const sentry = await startSentry({ args: ["--identity-rate-limit=3"] });
  const client = new SentryClient(
    sentry.grpcPort,
    await Deno.readTextFile(join(sentry.dir, "ca.crt")),
  );
  const csr = await makeCsr(work, await generateKey("ec-p256"));
  const sign = (id: string) =>
    client.sign({ id, namespace: "default", certificateSigningRequest: csr });
  try {
    for (let i = 0; i < 3; i++) await sign("noisy");
    for (let i = 0; i < 2; i++) {
      await assert.rejects(sign("noisy"), (error: GrpcError) => {
        assert.equal(error.code, 8); // RESOURCE_EXHAUSTED
        assert.match(
          error.details,
          /too many requests for spiffe:\/\/public\/ns\/default\/noisy: at most 3 a minute/,
        );
        return true;
      });
    }
    await sign("quiet");
    const text = await metricsText(sentry.metricsPort);
    assert.match(text, /dapr_sentry_cert_sign_failure_total\{reason="rate_limited"\} 2\b/);
    assert.match(text, /dapr_sentry_cert_sign_success_total 4\b/);
  } finally {
    client.close();
    assert.equal(await sentry.stop(), 0);
  }
});

Deno.test("--identity-rate-limit must not be negative", async () => {
  const sentry = startSentry({ args: ["--identity-rate-limit=-1"], readyTimeoutMs: 5_000 });
  await assert.rejects(sentry, /--identity-rate-limit must be 0 or more/);
});
