/**
 * End to end: gap-free JWT key rotation on the real program. sentry runs with `--jwt-enabled`
 * and a short `--jwt-ttl`; `sentry renew --jwt` with a short publication delay publishes a new
 * key, which sentry signs with once the delay has passed. Tokens issued before, during and after
 * the switch are checked by Dapr's Go side (go-spiffe's jwtsvid, tests/dapr/jwtcheck) against the
 * jwks.json of that moment, every unexpired token at every step: not one verification fails. The
 * old key leaves the JWKS (`sentry renew --jwt-prune`) only after its last token expired.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { decodeJwt, decodeProtectedHeader } from "jose";
import { SentryClient } from "../helpers/grpc_client.ts";
import { generateKey, makeCsr } from "../helpers/openssl.ts";
import { runSentry, startSentry, tempDir } from "../helpers/sentry_process.ts";
import { jwtcheck } from "../helpers/jwtcheck.ts";

const TD = "public";

/** A token's kid and expiry (seconds). */
function decode(token: string): { kid: string; exp: number } {
  return { kid: decodeProtectedHeader(token).kid!, exp: decodeJwt(token).exp! };
}

const kidsOf = (jwks: string) => (JSON.parse(jwks).keys as { kid: string }[]).map((k) => k.kid);
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

Deno.test("renew --jwt: tokens before, during and after the switch all verify; old key pruned after expiry", async () => {
  const work = await tempDir();
  const TTL_S = 12;
  const sentry = await startSentry({ args: ["--jwt-enabled", `--jwt-ttl=${TTL_S}s`] });
  const anchors = await Deno.readTextFile(join(sentry.dir, "ca.crt"));
  const client = new SentryClient(sentry.grpcPort, anchors);
  const jwksFile = join(sentry.dir, "jwks.json");
  const csr = await makeCsr(work, await generateKey("ec-p256"));
  const issued: { token: string; kid: string; exp: number; at: number }[] = [];
  let verifications = 0;
  const failures: string[] = [];

  async function issue() {
    const response = await client.sign({
      id: "myapp",
      namespace: "default",
      trustDomain: TD,
      certificateSigningRequest: csr,
      tokenValidator: 1,
      jwtAudiences: [],
    });
    const token = response.jwt!.value;
    issued.push({ token, ...decode(token), at: Date.now() });
  }

  /** Every token not about to expire verifies against the JWKS on disk now. */
  async function verifyAll(step: string) {
    const snapshot = join(work, "jwks-snapshot.json");
    await Deno.copyFile(jwksFile, snapshot);
    for (const { token, kid, exp } of issued) {
      if (exp * 1000 - Date.now() < 1500) continue; // expired or expiring during the check
      verifications++;
      try {
        await jwtcheck(token, snapshot, { trustDomain: TD, audience: TD });
      } catch (error) {
        failures.push(`${step}: token with kid ${kid}: ${(error as Error).message}`);
      }
    }
  }

  const sentryCli = async (args: string[]) => {
    const result = await runSentry([
      "renew",
      "--issuer-credentials",
      sentry.dir,
      "--json",
      ...args,
    ]);
    assert.equal(result.code, 0, result.stderr);
    return { report: JSON.parse(result.stdout), stderr: result.stderr };
  };

  try {
    const oldKid = kidsOf(await Deno.readTextFile(jwksFile))[0];
    await issue();
    await verifyAll("before the rotation");

    const { report, stderr } = await sentryCli([
      "--jwt",
      "--jwt-publish-delay=4s",
      "--jwt-allow-short-delay",
    ]);
    assert.match(stderr, /warning: --jwt-publish-delay 4s is shorter/);
    const newKid: string = report.newKeyId;
    const switchAt = Date.parse(report.signsFrom);
    assert.deepEqual(kidsOf(await Deno.readTextFile(jwksFile)), [oldKid, newKid]);

    // Before, during and after the switch, every 400 ms: issue, then verify all live tokens.
    while (Date.now() < switchAt + 3000) {
      await issue();
      await verifyAll(
        `at switch${Date.now() - switchAt >= 0 ? "+" : ""}${Date.now() - switchAt}ms`,
      );
      await sleep(400);
    }
    const before = issued.filter((t) => t.at < switchAt - 200);
    const after = issued.filter((t) => t.at > switchAt + 200);
    assert.ok(before.length >= 3 && after.length >= 3, "tokens on both sides of the switch");
    assert.ok(before.every((t) => t.kid === oldKid), "the current key signs until the switch");
    assert.ok(after.every((t) => t.kid === newKid), "the next key signs after the switch");

    // Pruning right after the switch promotes the next key but keeps the old one published.
    const early = await sentryCli(["--jwt-prune", `--jwt-ttl=${TTL_S}s`, "--jwt-clock-skew=1s"]);
    assert.equal(early.report.promoted, true);
    assert.deepEqual(early.report.removedKeys, []);
    assert.deepEqual(kidsOf(await Deno.readTextFile(jwksFile)), [oldKid, newKid]);
    await issue();
    await verifyAll("after the promotion");
    assert.equal(issued.at(-1)!.kid, newKid, "the promoted key keeps signing");

    // Once the old key's last token expired (+ skew), pruning removes it.
    const lastOld = Math.max(...issued.filter((t) => t.kid === oldKid).map((t) => t.exp * 1000));
    while (Date.now() < switchAt + TTL_S * 1000 + 1500) {
      await verifyAll("while old tokens expire");
      await sleep(1000);
    }
    assert.ok(Date.now() > lastOld, "the old key's tokens have expired");
    const late = await sentryCli(["--jwt-prune", `--jwt-ttl=${TTL_S}s`, "--jwt-clock-skew=1s"]);
    assert.deepEqual(late.report.removedKeys, [oldKid]);
    assert.deepEqual(kidsOf(await Deno.readTextFile(jwksFile)), [newKid]);
    await issue();
    await verifyAll("after pruning");

    assert.deepEqual(failures, []);
    assert.ok(verifications >= 20, `${verifications} verifications`);
  } finally {
    client.close();
    assert.equal(await sentry.stop(), 0);
  }
});
