/**
 * End to end: the JWKS validator configured through `spec.mtls.tokenValidators` in a running
 * sentry. Configuring it turns INSECURE off and makes UNKNOWN the default (docs/compatibility.md#configuration); good
 * tokens get certificates, bad ones PERMISSION_DENIED; a rotated key file and a changed
 * Configuration reach the running server.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { exportJWK, generateKeyPair, SignJWT } from "jose";
import { SentryClient } from "../helpers/grpc_client.ts";
import { generateKey, makeCsr } from "../helpers/openssl.ts";
import { startSentry, tempDir } from "../helpers/sentry_process.ts";

const AUDIENCE = "spiffe://cluster.local/ns/dapr-system/dapr-sentry";

async function keyPair(kid: string) {
  const { privateKey, publicKey } = await generateKeyPair("ES256", { extractable: true });
  return {
    kid,
    privateKey,
    jwk: { ...(await exportJWK(publicKey)), kid, alg: "ES256", use: "sig" },
  };
}

type Key = Awaited<ReturnType<typeof keyPair>>;

function token(key: Key, claims: { sub?: string; aud?: string; expiresIn?: string } = {}) {
  return new SignJWT({})
    .setProtectedHeader({ alg: "ES256", kid: key.kid })
    .setSubject(claims.sub ?? "spiffe://public/ns/default/myapp")
    .setAudience(claims.aud ?? AUDIENCE)
    .setIssuedAt()
    .setExpirationTime(claims.expiresIn ?? "10m")
    .sign(key.privateKey);
}

const JWKS_CONFIG = (path: string) =>
  `kind: Configuration\nspec:\n  mtls:\n    tokenValidators:\n      - name: jwks\n        options:\n` +
  `          source: ${path}\n`;

Deno.test("JWKS validator in a running sentry, with hot-reloaded keys and configuration", async (t) => {
  const work = await tempDir();
  const keys = join(work, "jwks.json");
  const first = await keyPair("first");
  await Deno.writeTextFile(keys, JSON.stringify({ keys: [first.jwk] }));
  const config = join(work, "config.yaml");
  await Deno.writeTextFile(config, JWKS_CONFIG(keys));
  const sentry = await startSentry({
    args: ["--trust-domain", "cluster.local", "--config", config],
    env: { NAMESPACE: "dapr-system" },
  });
  const client = new SentryClient(
    sentry.grpcPort,
    await Deno.readTextFile(join(sentry.dir, "ca.crt")),
  );
  const csr = await makeCsr(work, await generateKey("ed25519"));
  const sign = (tokenValue: string, tokenValidator: number, id = "myapp") =>
    client.sign({
      id,
      namespace: "default",
      token: tokenValue,
      tokenValidator,
      certificateSigningRequest: csr,
    });
  const refused = async (call: Promise<unknown>, code: number, details: RegExp) => {
    await assert.rejects(call, (error: { code: number; details: string }) => {
      assert.equal(error.code, code, error.details);
      assert.match(error.details, details);
      return true;
    });
  };
  try {
    await t.step("a good token gets a certificate for its subject", async () => {
      const response = await sign(await token(first), 3);
      assert.match(response.workloadCertificate.toString(), /BEGIN CERTIFICATE/);
    });
    await t.step(
      "configuring a validator makes callers name one, and turns INSECURE off",
      async () => {
        await refused(
          sign(await token(first), 0),
          3,
          /a validator name must be specified in this environment/,
        );
        await refused(sign("", 1), 3, /the requested validator is not enabled/);
      },
    );
    await t.step("bad tokens are PERMISSION_DENIED", async () => {
      await refused(
        sign(await token(first, { aud: "spiffe://other/ns/x/dapr-sentry" }), 3),
        7,
        /audience/,
      );
      await refused(sign(await token(first), 3, "otherapp"), 7, /subject/);
      await refused(sign(await token(first, { expiresIn: "-1h" }), 3), 7, /expired/);
      await refused(sign(await token(await keyPair("stranger")), 3), 7, /kid "stranger"/);
      await refused(sign("not-a-jwt", 3), 7, /./);
    });
    await t.step("a rotated key file is used without a restart", async () => {
      const second = await keyPair("second");
      const temporary = join(work, "jwks.json.tmp");
      await Deno.writeTextFile(temporary, JSON.stringify({ keys: [second.jwk] }));
      await Deno.rename(temporary, keys);
      const deadline = Date.now() + 8000;
      while (true) {
        try {
          await sign(await token(second), 3);
          break;
        } catch (error) {
          if (Date.now() > deadline) throw error;
          await new Promise((resolve) => setTimeout(resolve, 100));
        }
      }
      await refused(sign(await token(first), 3), 7, /kid "first"/);
    });
    await t.step("removing the validator from the Configuration brings INSECURE back", async () => {
      await Deno.writeTextFile(
        config,
        "kind: Configuration\nspec:\n  mtls:\n    workloadCertTTL: 1h\n",
      );
      const deadline = Date.now() + 8000;
      while (true) {
        try {
          await sign("", 0);
          break;
        } catch (error) {
          if (Date.now() > deadline) throw error;
          await new Promise((resolve) => setTimeout(resolve, 100));
        }
      }
    });
    await t.step(
      "a configuration naming an unusable key source is rejected; the previous stays",
      async () => {
        await Deno.writeTextFile(config, JWKS_CONFIG(join(work, "missing.json")));
        const deadline = Date.now() + 8000;
        while (!/configuration not reloaded: token validator/.test(sentry.logs())) {
          if (Date.now() > deadline) throw new Error("rejection not logged");
          await new Promise((resolve) => setTimeout(resolve, 100));
        }
        await sign("", 0); // still the insecure default
      },
    );
  } finally {
    client.close();
    await sentry.stop();
  }
});
