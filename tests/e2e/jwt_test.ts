/**
 * End to end: sentry started with `--jwt-enabled` on an empty directory writes `jwt.key` (0600)
 * and `jwks.json` beside the bundle, answers SignCertificate over real gRPC with `jwt` and
 * `per_audience_jwts`, and Dapr's Go side (go-spiffe's jwtsvid, in tests/dapr/jwtcheck) accepts
 * the tokens against the jwks.json sentry wrote. Without the flag, no tokens and no JWT files.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { SentryClient } from "../helpers/grpc_client.ts";
import { generateKey, makeCsr } from "../helpers/openssl.ts";
import { startSentry, tempDir } from "../helpers/sentry_process.ts";
import { jwtcheck } from "../helpers/jwtcheck.ts";

const TD = "public";

Deno.test("--jwt-enabled: tokens in the response, valid for Dapr against the jwks.json written", async () => {
  const work = await tempDir();
  const sentry = await startSentry({
    args: ["--jwt-enabled", "--jwt-ttl=1h", "--jwt-issuer=https://sentry.example"],
  });
  const anchors = await Deno.readTextFile(join(sentry.dir, "ca.crt"));
  const client = new SentryClient(sentry.grpcPort, anchors);
  try {
    assert.equal((await Deno.stat(join(sentry.dir, "jwt.key"))).mode! & 0o777, 0o600);
    const jwks = join(sentry.dir, "jwks.json");
    const response = await client.sign({
      id: "myapp",
      namespace: "default",
      trustDomain: TD,
      certificateSigningRequest: await makeCsr(work, await generateKey("ec-p256")),
      tokenValidator: 1,
      jwtAudiences: ["api://resource"],
    });
    const all = response.jwt?.value;
    assert.ok(all, "jwt is set");
    for (const audience of [TD, "api://resource"]) {
      const report = await jwtcheck(all, jwks, { trustDomain: TD, audience });
      assert.equal(report.spiffeId, "spiffe://public/ns/default/myapp");
      assert.deepEqual(report.audience, [TD, "api://resource"]);
    }
    assert.deepEqual(Object.keys(response.perAudienceJwts ?? {}).sort(), ["api://resource", TD]);
    for (const [audience, token] of Object.entries(response.perAudienceJwts!)) {
      assert.deepEqual(
        (await jwtcheck(token.value, jwks, { trustDomain: TD, audience })).audience,
        [audience],
      );
    }
  } finally {
    client.close();
    assert.equal(await sentry.stop(), 0);
  }
});

Deno.test("without --jwt-enabled: no tokens and no JWT files", async () => {
  const work = await tempDir();
  const sentry = await startSentry();
  const client = new SentryClient(
    sentry.grpcPort,
    await Deno.readTextFile(join(sentry.dir, "ca.crt")),
  );
  try {
    const response = await client.sign({
      id: "myapp",
      namespace: "default",
      trustDomain: TD,
      certificateSigningRequest: await makeCsr(work, await generateKey("ec-p256")),
      tokenValidator: 1,
      jwtAudiences: ["api://resource"],
    });
    assert.ok(!response.jwt);
    assert.deepEqual(response.perAudienceJwts ?? {}, {});
    await assert.rejects(Deno.stat(join(sentry.dir, "jwt.key")), Deno.errors.NotFound);
  } finally {
    client.close();
    assert.equal(await sentry.stop(), 0);
  }
});
