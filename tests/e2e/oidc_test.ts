/**
 * End to end: sentry started with `--jwt-enabled --oidc-enabled` serves OIDC discovery over
 * HTTPS (a test CA's certificate, from files); the served jwks.json is the store's, and a token
 * from SignCertificate verifies, in go-spiffe's jwtsvid (tests/dapr/jwtcheck), against the key
 * set fetched from the discovered `jwks_uri`. A JWT key rotated on disk (jwt.key and jwks.json,
 * made by Dapr's own code) is served within seconds, and the new tokens verify against it.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { eventually } from "../helpers/eventually.ts";
import { SentryClient } from "../helpers/grpc_client.ts";
import { generateKey, makeCsr, opensslServerTls } from "../helpers/openssl.ts";
import { freePort, runSentry, serveArgs, startSentry, tempDir } from "../helpers/sentry_process.ts";
import { daprJwtKey, jwtcheck } from "../helpers/jwtcheck.ts";

const TD = "public";

/** go-spiffe's verdict on `token` against the JWKS text (written to a file in `work`). */
async function check(token: string, jwksJson: string, audience: string, work: string) {
  const jwks = join(work, `fetched-${crypto.randomUUID()}.json`);
  await Deno.writeTextFile(jwks, jwksJson);
  return await jwtcheck(token, jwks, { trustDomain: TD, audience });
}

Deno.test("--oidc-enabled: discovery over HTTPS, the store's JWKS, tokens verify; a rotated JWT key is served", async () => {
  const work = await tempDir();
  const tls = await opensslServerTls("oidc-test-ca");
  const certFile = join(work, "oidc.crt");
  const keyFile = join(work, "oidc.key");
  await Deno.writeTextFile(certFile, tls.certPem);
  await Deno.writeTextFile(keyFile, tls.keyPem);
  const oidcPort = await freePort();
  const base = `https://127.0.0.1:${oidcPort}`;
  const sentry = await startSentry({
    args: [
      "--jwt-enabled",
      `--jwt-issuer=${base}`,
      "--oidc-enabled",
      "--oidc-server-listen-address=127.0.0.1",
      `--oidc-server-listen-port=${oidcPort}`,
      `--oidc-server-tls-cert-file=${certFile}`,
      `--oidc-server-tls-key-file=${keyFile}`,
    ],
  });
  const http = Deno.createHttpClient({ caCerts: [tls.caPem] });
  const get = async (url: string) => {
    const response = await fetch(url, { client: http });
    assert.equal(response.status, 200, url);
    assert.equal(response.headers.get("content-type"), "application/json");
    return await response.text();
  };
  const client = new SentryClient(
    sentry.grpcPort,
    await Deno.readTextFile(join(sentry.dir, "ca.crt")),
  );
  const token = async () => {
    const response = await client.sign({
      id: "myapp",
      namespace: "default",
      trustDomain: TD,
      certificateSigningRequest: await makeCsr(work, await generateKey("ec-p256")),
      tokenValidator: 1,
      jwtAudiences: ["api://resource"],
    });
    assert.ok(response.jwt?.value, "jwt is set");
    return response.jwt.value;
  };
  try {
    assert.match(sentry.logs(), /Starting OIDC HTTP server/);
    const discovery = JSON.parse(await get(`${base}/.well-known/openid-configuration`));
    assert.equal(discovery.issuer, base);
    assert.equal(discovery.jwks_uri, `${base}/jwks.json`);
    assert.deepEqual(discovery.id_token_signing_alg_values_supported, ["RS256"]);

    const served = await get(discovery.jwks_uri);
    assert.equal(served, await Deno.readTextFile(join(sentry.dir, "jwks.json")));
    const report = await check(await token(), served, "api://resource", work);
    assert.equal(report.spiffeId, "spiffe://public/ns/default/myapp");
    assert.equal(report.claims.iss, base);

    // Rotation on disk: both files, as an operator would replace them.
    const next = await daprJwtKey(work, TD);
    assert.notEqual(next.jwksJson, served);
    await Deno.writeTextFile(join(sentry.dir, "jwks.json"), next.jwksJson);
    await Deno.writeTextFile(join(sentry.dir, "jwt.key"), next.keyPem);
    await eventually(
      "the rotated JWKS served",
      async () => await get(discovery.jwks_uri) === next.jwksJson,
      20_000,
    );
    const rotated = await get(discovery.jwks_uri);
    const after = await check(await token(), rotated, TD, work);
    assert.equal(after.spiffeId, "spiffe://public/ns/default/myapp");
    await assert.rejects(check(await token(), served, TD, work), "not with the old key set");
  } finally {
    client.close();
    http.close();
    assert.equal(await sentry.stop(), 0);
  }
});

Deno.test("--oidc-enabled without --jwt-enabled: no OIDC server, as Dapr", async () => {
  const oidcPort = await freePort();
  const sentry = await startSentry({
    args: [
      "--oidc-enabled",
      "--oidc-server-tls-enabled=false",
      "--oidc-server-listen-address=127.0.0.1",
      `--oidc-server-listen-port=${oidcPort}`,
    ],
  });
  try {
    assert.match(sentry.logs(), /OIDC HTTP server is disabled/);
    await assert.rejects(fetch(`http://127.0.0.1:${oidcPort}/jwks.json`));
  } finally {
    assert.equal(await sentry.stop(), 0);
  }
});

Deno.test("an OIDC server that cannot listen stops sentry with an error, as Dapr's", async () => {
  const taken = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  try {
    const dir = await tempDir();
    const ports = { grpc: await freePort(), health: await freePort(), metrics: await freePort() };
    const run = await runSentry([
      ...serveArgs(dir, ports),
      "--jwt-enabled",
      "--oidc-enabled",
      "--oidc-server-tls-enabled=false",
      "--oidc-server-listen-address=127.0.0.1",
      `--oidc-server-listen-port=${(taken.addr as Deno.NetAddr).port}`,
    ], { timeoutMs: 30_000 });
    assert.equal(run.code, 1, run.stdout + run.stderr);
    assert.match(run.stdout + run.stderr, /OIDC HTTP server.*EADDRINUSE/);
  } finally {
    taken.close();
  }
});
