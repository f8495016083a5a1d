/**
 * End to end with the real Dapr sidecar and JWT-SVIDs: sentry with `--jwt-enabled`, daprd
 * v1.18.3 with `--sentry-request-jwt-audiences=aud1,aud2`.
 *
 * What daprd v1.18.3 lets us observe of the token it received:
 * - its security provider parses every token of the SignCertificate response before it accepts
 *   the identity (pkg/security/sentry.go: lestrrat jwx `jwt.Parse`, audience not empty, each
 *   per-audience token has exactly its audience; then dapr/kit crypto/spiffe: go-spiffe
 *   `jwtsvid.ParseInsecure` with the trust domain, resp. the audience, as expected audience);
 *   any failure fails the identity request and daprd never becomes healthy. On success it logs
 *   "Successfully received JWT SVID" and one "per-audience JWT SVID for audience <aud>" line.
 * - its JWT source (`JWTSVIDSource`, `security.FetchJWT`) is used by an `MCPServer` resource
 *   with `auth.spiffe.jwt`: daprd connects to the MCP server at start-up (tool discovery) and
 *   puts the token for the configured audience into the named header. A fake MCP server here
 *   records that header; the token daprd sends is checked by go-spiffe (tests/dapr/jwtcheck)
 *   against the jwks.json sentry wrote, so it is our token, signed by our key, for daprd's
 *   SPIFFE ID and the requested audience. (daprd then fails to register the MCP workflows, as
 *   there is no placement service here; `ignoreErrors: true` keeps it running. The token has
 *   been sent by then, during tool discovery.)
 * daprd does not verify the signature itself (Dapr's design: the token came over mTLS), so
 * "accepted" means parsed, audience-checked and handed out by its JWT source.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { startDaprd, WORKLOAD_TRUST_DOMAIN, writeDaprdConfig } from "../helpers/daprd.ts";
import { eventually } from "../helpers/eventually.ts";
import { metric, metricsText } from "../helpers/metrics.ts";
import { startSentry, tempDir } from "../helpers/sentry_process.ts";
import { jwtcheck } from "../helpers/jwtcheck.ts";

const TRUST_DOMAIN = "cluster.local";

/** A minimal MCP server (streamable HTTP, JSON answers) that records the headers it gets. */
function startFakeMcp() {
  const headers: Headers[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (request) => {
    headers.push(request.headers);
    if (request.method !== "POST") return new Response(null, { status: 405 });
    const message = await request.json() as {
      id?: number | string;
      method: string;
      params?: { protocolVersion?: string };
    };
    if (message.id === undefined) return new Response(null, { status: 202 });
    const result = message.method === "initialize"
      ? {
        protocolVersion: message.params?.protocolVersion ?? "2025-06-18",
        capabilities: { tools: {} },
        serverInfo: { name: "fake-mcp", version: "0.0.0" },
      }
      : message.method === "tools/list"
      ? { tools: [] }
      : {};
    return Response.json({ jsonrpc: "2.0", id: message.id, result });
  });
  return {
    url: `http://127.0.0.1:${server.addr.port}/mcp`,
    /** The values of `name` in the requests received so far. */
    values: (name: string) => headers.map((h) => h.get(name)).filter((v) => v !== null),
    close: () => server.shutdown(),
  };
}

/** An MCPServer resource whose requests carry daprd's SPIFFE JWT for `audience`. */
function mcpServerYaml(name: string, url: string, audience: string): string {
  return `apiVersion: dapr.io/v1alpha1
kind: MCPServer
metadata:
  name: ${name}
spec:
  ignoreErrors: true
  endpoint:
    streamableHTTP:
      url: ${url}
      auth:
        spiffe:
          jwt:
            header: Authorization
            headerValuePrefix: "Bearer "
            audience: ${audience}
`;
}

/** The JSON payload of a compact JWT, unverified. */
function payload(token: string): Record<string, unknown> {
  const part = token.split(".")[1].replaceAll("-", "+").replaceAll("_", "/");
  return JSON.parse(atob(part.padEnd(part.length + (4 - part.length % 4) % 4, "=")));
}

Deno.test("daprd --sentry-request-jwt-audiences: receives, parses and hands out sentry's JWT-SVIDs", async () => {
  const work = await tempDir();
  const resources = join(work, "resources");
  await Deno.mkdir(resources);
  const mcp1 = startFakeMcp();
  const mcp2 = startFakeMcp();
  await Deno.writeTextFile(join(resources, "mcp1.yaml"), mcpServerYaml("mcp1", mcp1.url, "aud1"));
  await Deno.writeTextFile(join(resources, "mcp2.yaml"), mcpServerYaml("mcp2", mcp2.url, "aud2"));
  const sentry = await startSentry({
    args: ["--trust-domain", TRUST_DOMAIN, "--jwt-enabled", "--jwt-issuer=https://sentry.test"],
  });
  let daprd: Awaited<ReturnType<typeof startDaprd>> | undefined;
  let failed = false;
  try {
    daprd = await startDaprd({
      appId: "jwtapp",
      sentryPort: sentry.grpcPort,
      trustAnchors: await Deno.readTextFile(join(sentry.dir, "ca.crt")),
      controlPlaneTrustDomain: TRUST_DOMAIN,
      config: await writeDaprdConfig(work, "jwtapp", {}),
      args: ["--sentry-request-jwt-audiences=aud1,aud2", "--resources-path", resources],
    });
    await daprd.waitHealthy(60_000);
    const logs = daprd.logs();
    assert.match(logs, /Security is initialized successfully/);
    assert.match(logs, /Successfully received JWT SVID with expiry/);
    // Sentry adds the trust domain to the requested audiences, as Dapr's sentry does.
    for (const audience of [WORKLOAD_TRUST_DOMAIN, "aud1"]) {
      assert.match(logs, new RegExp(`received per-audience JWT SVID for audience ${audience} `));
    }
    assert.match(logs, /Successfully received per-audience JWT SVID for audience aud2 /);

    const text = await metricsText(sentry.metricsPort);
    assert.equal(metric(text, "dapr_sentry_cert_sign_success_total"), 1);
    assert.doesNotMatch(text, /^dapr_sentry_cert_sign_failure_total\{/m);

    // The tokens daprd's JWT source handed to the MCP client, one per audience.
    const jwks = join(sentry.dir, "jwks.json");
    for (const [mcp, audience] of [[mcp1, "aud1"], [mcp2, "aud2"]] as const) {
      await eventually(
        `daprd sent its JWT to the ${audience} MCP server`,
        () => Promise.resolve(mcp.values("authorization").length > 0),
        30_000,
      );
      const header = mcp.values("authorization")[0]!;
      assert.match(header, /^Bearer [\w-]+\.[\w-]+\.[\w-]+$/);
      const token = header.slice("Bearer ".length);
      const claims = payload(token);
      assert.deepEqual([claims.aud].flat(), [audience]);
      assert.equal(claims.sub, `spiffe://${WORKLOAD_TRUST_DOMAIN}/ns/default/jwtapp`);
      assert.equal(claims.iss, "https://sentry.test");
      const verdict = await jwtcheck(token, jwks, { trustDomain: WORKLOAD_TRUST_DOMAIN, audience });
      assert.equal(verdict.spiffeId, `spiffe://${WORKLOAD_TRUST_DOMAIN}/ns/default/jwtapp`);
    }
  } catch (error) {
    failed = true;
    throw error;
  } finally {
    await daprd?.stop();
    assert.equal(await sentry.stop(), 0);
    await mcp1.close();
    await mcp2.close();
    if (failed) {
      console.error(`--- sentry ---\n${sentry.logs()}\n--- daprd ---\n${daprd?.logs()}`);
    }
  }
});
