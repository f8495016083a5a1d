/**
 * End to end: an independent OIDC relying party, coreos/go-oidc (tests/dapr/oidccheck), trusts
 * sentry's OIDC server: discovery over HTTPS (issuer and URL agree), the key set from the
 * discovered jwks_uri, tokens from SignCertificate verified with go-oidc's IDTokenVerifier
 * (issuer, expiry, signature; `aud` must hold the requested audience). Then a JWT key rotation
 * on disk while one long-running oidccheck keeps verifying, in a loop, a token issued before
 * the rotation and a fresh token each round: go-oidc caches the key set and refetches it on a
 * token it cannot verify. Fresh tokens signed with the key published at that moment must all
 * verify; the failures of the pre-rotation token (its key leaves the JWKS at once in today's
 * sentry) are counted and printed, not asserted: that is Dapr's gap.
 *
 * Then the gap-free rotation (`sentry renew --jwt`, issue 13) seen by the same relying party: with
 * a short `--jwt-ttl`, one long-running oidccheck verifies every ~300 ms the newest token and
 * every earlier token that has not expired yet, before the new key is published, while it is
 * published but not yet signing, after the switch, after the old tokens expired and after
 * `sentry renew --jwt-prune` removed the old key: not one verification fails.
 *
 * Also the OIDC server's refusals, and that it keeps serving after them: 403 for a Host not in
 * `--oidc-allowed-hosts`, 404 outside `--oidc-path-prefix`.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { createLocalJWKSet, decodeJwt, decodeProtectedHeader, jwtVerify } from "jose";
import { daprBinaries } from "../helpers/dapr_binaries.ts";
import { SentryClient } from "../helpers/grpc_client.ts";
import { generateKey, makeCsr, opensslServerTls } from "../helpers/openssl.ts";
import {
  freePort,
  type RunningSentry,
  runSentry,
  startSentry,
  tempDir,
} from "../helpers/sentry_process.ts";
import { daprJwtKey } from "../helpers/jwtcheck.ts";

const TD = "public";
const AUDIENCE = "api://resource";

/** One line of oidccheck's output. */
interface Verdict {
  ok: boolean;
  err?: string;
  sub?: string;
  aud?: string[];
  kid?: string;
}

/** A long-running oidccheck: one token in, one verdict out. */
async function startOidccheck(issuer: string, caFile: string) {
  const { oidccheck } = await daprBinaries();
  const child = new Deno.Command(oidccheck, {
    args: ["-issuer", issuer, "-ca", caFile, "-audience", AUDIENCE],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const writer = child.stdin.getWriter();
  const lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let buffered = "";
  const nextLine = async (): Promise<string> => {
    while (!buffered.includes("\n")) {
      const { value, done } = await lines.read();
      if (done) {
        const stderr = await new Response(child.stderr).text();
        throw new Error(`oidccheck ended: ${stderr}`);
      }
      buffered += value;
    }
    const at = buffered.indexOf("\n");
    const line = buffered.slice(0, at);
    buffered = buffered.slice(at + 1);
    return line;
  };
  return {
    async verify(token: string): Promise<Verdict> {
      await writer.write(new TextEncoder().encode(token + "\n"));
      return JSON.parse(await nextLine());
    },
    async close() {
      await writer.close();
      lines.releaseLock();
      await child.stdout.cancel().catch(() => {});
      await child.stderr.cancel().catch(() => {});
      return (await child.status).code;
    },
  };
}

/** Sentry with JWTs and an HTTPS OIDC server on 127.0.0.1, plus what talks to it. */
async function oidcSentry(work: string, extra: string[] = []) {
  const tls = await opensslServerTls("oidc-rp-ca");
  const certFile = join(work, "oidc.crt");
  const keyFile = join(work, "oidc.key");
  const caFile = join(work, "oidc-ca.crt");
  await Deno.writeTextFile(certFile, tls.certPem);
  await Deno.writeTextFile(keyFile, tls.keyPem);
  await Deno.writeTextFile(caFile, tls.caPem);
  const port = await freePort();
  const base = `https://127.0.0.1:${port}`;
  const sentry = await startSentry({
    args: [
      "--jwt-enabled",
      `--jwt-issuer=${base}`,
      "--oidc-enabled",
      "--oidc-server-listen-address=127.0.0.1",
      `--oidc-server-listen-port=${port}`,
      `--oidc-server-tls-cert-file=${certFile}`,
      `--oidc-server-tls-key-file=${keyFile}`,
      ...extra,
    ],
  });
  return { sentry, base, caFile, caPem: tls.caPem };
}

/** A SignCertificate client and a function that returns a fresh token for {@link AUDIENCE}. */
async function tokens(sentry: RunningSentry, work: string) {
  const client = new SentryClient(
    sentry.grpcPort,
    await Deno.readTextFile(join(sentry.dir, "ca.crt")),
  );
  const csr = await makeCsr(work, await generateKey("ec-p256"));
  return {
    client,
    async token(): Promise<string> {
      const response = await client.sign({
        id: "myapp",
        namespace: "default",
        trustDomain: TD,
        certificateSigningRequest: csr,
        tokenValidator: 1,
        jwtAudiences: [AUDIENCE],
      });
      assert.ok(response.jwt?.value, "jwt is set");
      return response.jwt.value;
    },
  };
}

Deno.test("go-oidc relying party: discovery, JWKS and tokens verify; across a JWT key rotation", async () => {
  const work = await tempDir();
  const { sentry, base, caFile, caPem } = await oidcSentry(work);
  const http = Deno.createHttpClient({ caCerts: [caPem] });
  const servedJwks = async () => {
    const response = await fetch(`${base}/jwks.json`, { client: http });
    assert.equal(response.status, 200);
    return await response.text();
  };
  const { client, token } = await tokens(sentry, work);
  const rp = await startOidccheck(base, caFile);
  try {
    const first = await token();
    const verdict = await rp.verify(first);
    assert.equal(verdict.ok, true, verdict.err ?? "");
    assert.equal(verdict.sub, `spiffe://${TD}/ns/default/myapp`);
    assert.ok(verdict.aud?.includes(AUDIENCE));
    const oldKid = verdict.kid;

    // A tampered token is refused by the signature check.
    const [h, p, s] = first.split(".");
    const tampered = `${h}.${p}.${s.slice(0, -4)}${s.endsWith("AAAA") ? "BBBB" : "AAAA"}`;
    assert.equal((await rp.verify(tampered)).ok, false);

    // Rotation on disk, while the relying party keeps verifying.
    const oldJwks = await servedJwks();
    const next = await daprJwtKey(work, TD);
    await Deno.writeTextFile(join(sentry.dir, "jwks.json"), next.jwksJson);
    await Deno.writeTextFile(join(sentry.dir, "jwt.key"), next.keyPem);
    const started = performance.now();
    let rounds = 0;
    let roundsAfterSwap = 0;
    let oldFailures = 0;
    let oldFailureSample = "";
    let fresh = 0;
    let freshCurrent = 0;
    let freshCurrentFailures = 0;
    let freshUnpublished = 0;
    const kids = new Set<string>();
    while (roundsAfterSwap < 25) {
      assert.ok(performance.now() - started < 30_000, "the rotated JWKS is served in time");
      rounds++;
      const oldVerdict = await rp.verify(first);
      if (!oldVerdict.ok) {
        oldFailures++;
        oldFailureSample ||= oldVerdict.err ?? "";
      }
      const newToken = await token();
      const jwksNow = await servedJwks();
      fresh++;
      const newVerdict = await rp.verify(newToken);
      if (newVerdict.kid) kids.add(newVerdict.kid);
      // Signed with the key published right now (checked by jose, independently)?
      const published = await jwtVerify(newToken, createLocalJWKSet(JSON.parse(jwksNow)))
        .then(() => true, () => false);
      if (published) {
        freshCurrent++;
        if (!newVerdict.ok) freshCurrentFailures++;
      } else {
        freshUnpublished++;
      }
      if (jwksNow === next.jwksJson) roundsAfterSwap++;
      else assert.equal(jwksNow, oldJwks, "only the old or the new key set is served");
    }
    const seconds = ((performance.now() - started) / 1000).toFixed(1);
    console.log(
      `rotation: ${rounds} rounds in ${seconds} s (${roundsAfterSwap} after the swap); ` +
        `pre-rotation token (kid ${oldKid}) failed ${oldFailures}/${rounds}` +
        (oldFailureSample ? ` (${oldFailureSample})` : "") +
        `; fresh tokens: ${fresh}, ${freshCurrent} signed with the published key, ` +
        `${freshCurrentFailures} of them failed, ${freshUnpublished} signed with an unpublished ` +
        `key; kids seen: ${[...kids].join(", ")}`,
    );
    assert.equal(freshCurrentFailures, 0, "tokens signed with the published key verify");
    assert.ok(freshCurrent >= 25);
    // After the swap go-oidc has refetched the key set: a fresh token verifies, the old one
    // (its key no longer published) does not.
    assert.equal((await rp.verify(await token())).ok, true);
    assert.equal((await rp.verify(first)).ok, false);
  } finally {
    assert.equal(await rp.close(), 0);
    client.close();
    http.close();
    assert.equal(await sentry.stop(), 0);
  }
});

const kidsOf = (jwks: string) => (JSON.parse(jwks).keys as { kid: string }[]).map((k) => k.kid);
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

Deno.test("go-oidc relying party: renew --jwt, no failed verification before, during and after the switch and the prune", async () => {
  const work = await tempDir();
  const TTL_S = 10;
  const { sentry, base, caFile, caPem } = await oidcSentry(work, [`--jwt-ttl=${TTL_S}s`]);
  const http = Deno.createHttpClient({ caCerts: [caPem] });
  const servedKids = async () => {
    const response = await fetch(`${base}/jwks.json`, { client: http });
    assert.equal(response.status, 200);
    return kidsOf(await response.text());
  };
  /** Polls the served JWKS until it names exactly `kids` (the watcher picked the store up). */
  const awaitServed = async (kids: string[]) => {
    const until = performance.now() + 5000;
    while (JSON.stringify(await servedKids()) !== JSON.stringify(kids)) {
      assert.ok(performance.now() < until, `the served JWKS names ${kids.join(", ")}`);
      await sleep(100);
    }
  };
  const sentryCli = async (args: string[]) => {
    const result = await runSentry([
      "renew",
      "--issuer-credentials",
      sentry.dir,
      "--json",
      ...args,
    ]);
    assert.equal(result.code, 0, result.stderr);
    return JSON.parse(result.stdout);
  };
  const { client, token } = await tokens(sentry, work);
  const rp = await startOidccheck(base, caFile);
  const issued: { token: string; kid: string; exp: number; at: number }[] = [];
  const started = performance.now();
  let rounds = 0;
  let checks = 0;
  let skipped = 0;
  const failures: string[] = [];
  const checksBy = new Map<string, number>();

  /** Issues a token, then has go-oidc verify it and every earlier token not about to expire. */
  async function round(phase: string) {
    const value = await token();
    issued.push({
      token: value,
      kid: decodeProtectedHeader(value).kid!,
      exp: decodeJwt(value).exp!,
      at: Date.now(),
    });
    rounds++;
    for (const t of issued) {
      // Expired, or expiring while it is checked (exp has a one-second resolution).
      if (t.exp * 1000 - Date.now() < 1000) {
        skipped++;
        continue;
      }
      checks++;
      checksBy.set(phase, (checksBy.get(phase) ?? 0) + 1);
      const verdict = await rp.verify(t.token);
      if (!verdict.ok || verdict.kid !== t.kid) {
        failures.push(`${phase}: token of kid ${t.kid}: ${verdict.err ?? `kid ${verdict.kid}`}`);
      }
    }
  }

  try {
    const [oldKid] = await servedKids();
    for (let i = 0; i < 3; i++) {
      await round("before the rotation");
      await sleep(300);
    }

    const report = await sentryCli([
      "--jwt",
      "--jwt-publish-delay=4s",
      "--jwt-allow-short-delay",
      `--jwt-ttl=${TTL_S}s`,
    ]);
    const newKid: string = report.newKeyId;
    const switchAt = Date.parse(report.signsFrom);
    assert.notEqual(newKid, oldKid);

    // Published, then signing, then the old tokens expire: until the old key may be pruned.
    const prunable = switchAt + TTL_S * 1000 + 1500;
    while (Date.now() < prunable) {
      await round(
        Date.now() < switchAt
          ? "published, not signing yet"
          : Date.now() < switchAt + TTL_S * 1000
          ? "after the switch"
          : "after the old tokens' expiry",
      );
      await sleep(300);
    }
    assert.deepEqual(
      failures,
      [],
      `no verification of an unexpired token fails (${failures.length} of ${checks} did)`,
    );
    assert.deepEqual(await servedKids(), [oldKid, newKid], "both keys published until the prune");

    const pruned = await sentryCli(["--jwt-prune", `--jwt-ttl=${TTL_S}s`, "--jwt-clock-skew=1s"]);
    assert.deepEqual(pruned.removedKeys, [oldKid]);
    await awaitServed([newKid]);
    for (let i = 0; i < 3; i++) {
      await round("after the prune");
      await sleep(300);
    }

    const before = issued.filter((t) => t.at < switchAt - 200);
    const after = issued.filter((t) => t.at > switchAt + 200);
    const seconds = ((performance.now() - started) / 1000).toFixed(1);
    console.log(
      `gap-free rotation: ${rounds} rounds in ${seconds} s, ${checks} verifications ` +
        `(${[...checksBy].map(([phase, n]) => `${n} ${phase}`).join(", ")}), ` +
        `${failures.length} failed, ${skipped} skipped as expired; tokens: ${before.length} ` +
        `before the switch (kid ${oldKid}), ${after.length} after (kid ${newKid})`,
    );
    assert.deepEqual(failures, [], "no verification of an unexpired token fails");
    assert.ok(checks >= 20, `${checks} verifications`);
    assert.ok(before.length >= 5 && after.length >= 5, "tokens on both sides of the switch");
    assert.ok(before.every((t) => t.kid === oldKid), "the old key signs until the switch");
    assert.ok(after.every((t) => t.kid === newKid), "the new key signs after the switch");
    assert.ok(
      (checksBy.get("after the switch") ?? 0) > after.length,
      "old tokens were verified after the switch",
    );
  } finally {
    assert.equal(await rp.close(), 0);
    client.close();
    http.close();
    assert.equal(await sentry.stop(), 0);
  }
});

/** The status of `url` with a Host header of `host`, by curl (fetch cannot set Host). */
async function statusFor(url: string, caFile: string, host?: string): Promise<number> {
  const out = await new Deno.Command("curl", {
    args: [
      "-sS",
      "-o",
      "/dev/null",
      "-w",
      "%{http_code}",
      "--cacert",
      caFile,
      ...(host ? ["-H", `Host: ${host}`] : []),
      url,
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.ok(out.success, new TextDecoder().decode(out.stderr));
  return Number(new TextDecoder().decode(out.stdout));
}

Deno.test("OIDC server: 403 for a host not allowed, 404 outside the path prefix, serving on", async () => {
  const work = await tempDir();
  const { sentry, base, caFile } = await oidcSentry(work, [
    "--oidc-allowed-hosts=127.0.0.1,good.example",
    "--oidc-path-prefix=/oidc",
  ]);
  try {
    const jwks = `${base}/oidc/jwks.json`;
    const discovery = `${base}/oidc/.well-known/openid-configuration`;
    assert.equal(await statusFor(jwks, caFile), 200);
    assert.equal(await statusFor(discovery, caFile), 200);
    assert.equal(await statusFor(jwks, caFile, "evil.example"), 403);
    assert.equal(await statusFor(discovery, caFile, "evil.example:443"), 403);
    assert.equal(await statusFor(jwks, caFile, "good.example"), 200);
    assert.equal(await statusFor(`${base}/jwks.json`, caFile), 404);
    assert.equal(await statusFor(`${base}/.well-known/openid-configuration`, caFile), 404);
    assert.equal(await statusFor(`${base}/other/jwks.json`, caFile), 404);
    // Still serving after the refusals.
    assert.equal(await statusFor(jwks, caFile), 200);
    assert.equal(await statusFor(discovery, caFile), 200);
    assert.equal(sentry.child.pid > 0 && (await statusFor(jwks, caFile)), 200);
  } finally {
    assert.equal(await sentry.stop(), 0);
  }
});
