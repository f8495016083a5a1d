/**
 * Interop: JWT-SVIDs signed by our code (src/ca/jwt-svid.ts) and the JWKS we publish
 * (src/ca/jwt-keys.ts) are validated by Go, with go-spiffe's `jwtsvid.ParseAndValidate` over a
 * `jwtbundle` built from the JWKS (tests/dapr/jwtcheck; daprd parses its tokens with the same
 * package). RS*, PS* and ES* are accepted; EdDSA, which Dapr's sentry lets one configure, is
 * refused by go-spiffe whoever signs it (so daprd could not use such tokens), and checked with
 * go-jose instead. Wrong audience, expired tokens, foreign keys and trust domains are refused.
 * And Dapr's own code (bundle.GenerateJWT and its jwt issuer, run by `jwtcheck -dapr-issue`)
 * writes the same JWKS bytes for the same key and signs tokens of the same shape.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import {
  buildJwks,
  generateJwtKeyMaterial,
  generateJwtSigningKey,
  type JwtSigningAlgorithm,
  type JwtSigningKey,
} from "../../src/ca/jwt-keys.ts";
import {
  daprJwtAudiences,
  type JwtSvidOptions,
  type JwtSvidRequest,
  signJwtSvid,
  signPerAudienceJwtSvids,
} from "../../src/ca/jwt-svid.ts";
import { daprBinaries } from "../helpers/dapr_binaries.ts";
import { jwtcheck, type JwtCheckReport } from "../helpers/jwtcheck.ts";

const work = await Deno.makeTempDir({ prefix: "sentry-jwt-interop-" });
globalThis.addEventListener("unload", () => Deno.removeSync(work, { recursive: true }));

const TD = "public";
const REQUEST: JwtSvidRequest = {
  trustDomain: TD,
  namespace: "default",
  appId: "myapp",
  audiences: daprJwtAudiences(TD, ["api://resource"]),
};
const OPTIONS: JwtSvidOptions = { ttlMs: 3_600_000, allowedClockSkewMs: 15 * 60_000 };
const SUBJECT = "spiffe://public/ns/default/myapp";

/** Runs jwtcheck on the JWKS text (written to a file); its report, or a rejection with the reason. */
async function check(
  token: string,
  jwksJson: string,
  audience: string,
  extra: string[] = [],
): Promise<JwtCheckReport> {
  const jwks = join(work, `${crypto.randomUUID()}.json`);
  await Deno.writeTextFile(jwks, jwksJson);
  return await jwtcheck(token, jwks, { trustDomain: TD, audience, extra });
}

/** A signing key for `algorithm` with the default (thumbprint) kid, and its JWKS. */
async function signingKey(algorithm: JwtSigningAlgorithm): Promise<JwtSigningKey> {
  const privateKey = await generateJwtSigningKey(algorithm);
  const { jwks, json } = await buildJwks(privateKey, { algorithm });
  const keyId = jwks.keys[0].kid!;
  return { privateKey, algorithm, keyId, keyIdInJwks: true, jwksJson: json };
}

for (const algorithm of ["RS256", "RS512", "PS256", "PS512", "ES256", "ES384", "ES512"] as const) {
  Deno.test(`go-spiffe's jwtsvid accepts our ${algorithm} token for each audience`, async () => {
    const key = await signingKey(algorithm);
    const token = await signJwtSvid(key, REQUEST, OPTIONS);
    for (const audience of REQUEST.audiences) {
      const report = await check(token, key.jwksJson, audience);
      assert.equal(report.checker, "go-spiffe jwtsvid");
      assert.equal(report.spiffeId, SUBJECT);
      assert.deepEqual(report.audience, ["public", "api://resource"]);
      assert.deepEqual(report.header, { alg: algorithm, kid: key.keyId, typ: "JWT" });
      assert.equal(report.claims.use, "sig");
      assert.equal(report.claims.sub, SUBJECT);
      assert.equal(
        (report.claims.exp as number) - (report.claims.nbf as number),
        3600 + 15 * 60,
        "exp - nbf = TTL + clock skew",
      );
    }
  });
}

Deno.test("EdDSA: go-spiffe's jwtsvid refuses the algorithm; go-jose verifies our token", async () => {
  const key = await signingKey("EdDSA");
  const token = await signJwtSvid(key, REQUEST, OPTIONS);
  await assert.rejects(check(token, key.jwksJson, TD), /jwtsvid: unable to parse JWT token/);
  const report = await check(token, key.jwksJson, TD, ["-jose"]);
  assert.equal(report.checker, "go-jose");
  assert.equal(report.spiffeId, SUBJECT);
  assert.equal(report.header.alg, "EdDSA");
});

Deno.test("Dapr's generated key: the jwt and every per-audience token validate", async () => {
  const generated = await generateJwtKeyMaterial();
  const all = await signJwtSvid(generated.signingKey, REQUEST, OPTIONS);
  // daprd checks the `jwt` token for its own trust domain.
  assert.equal((await check(all, generated.jwksJson, TD)).spiffeId, SUBJECT);
  const perAudience = await signPerAudienceJwtSvids(generated.signingKey, REQUEST, OPTIONS);
  for (const [audience, token] of perAudience) {
    const report = await check(token, generated.jwksJson, audience);
    assert.deepEqual(report.audience, [audience]);
    assert.equal(report.header.kid, generated.signingKey.keyId);
  }
});

Deno.test("refused: wrong audience, expired, another key, another trust domain", async () => {
  const key = await signingKey("ES256");
  const other = await signingKey("ES256");
  const token = await signJwtSvid(key, REQUEST, OPTIONS);
  const cases: [string, () => Promise<JwtCheckReport>, RegExp][] = [
    ["wrong audience", () => check(token, key.jwksJson, "api://other"), /expected audience in/],
    [
      "expired",
      () =>
        signJwtSvid(key, REQUEST, { ...OPTIONS, now: new Date(Date.now() - 2 * 3_600_000) })
          .then((expired) => check(expired, key.jwksJson, TD)),
      /token has expired/,
    ],
    [
      "another key, same kid",
      () =>
        signJwtSvid({ ...other, keyId: key.keyId }, REQUEST, OPTIONS)
          .then((forged) => check(forged, key.jwksJson, TD)),
      /unable to get claims from token/,
    ],
    [
      "another key, its own kid",
      () => signJwtSvid(other, REQUEST, OPTIONS).then((forged) => check(forged, key.jwksJson, TD)),
      /no JWT authority .* found for trust domain "public"/,
    ],
    [
      "another trust domain",
      () =>
        signJwtSvid(key, { ...REQUEST, trustDomain: "elsewhere" }, OPTIONS)
          .then((foreign) => check(foreign, key.jwksJson, "api://resource")),
      /no bundle found for trust domain "elsewhere"/,
    ],
    [
      "expired, by go-jose",
      () =>
        signJwtSvid(key, REQUEST, { ...OPTIONS, now: new Date(Date.now() - 2 * 3_600_000) })
          .then((expired) => check(expired, key.jwksJson, TD, ["-jose"])),
      /expired/,
    ],
  ];
  for (const [name, check, reason] of cases) {
    await assert.rejects(check(), reason, name);
  }
});

/** The header and payload of a compact token, as JSON texts. */
function decodeParts(token: string): [string, string] {
  const [header, payload] = token.split(".").map((part) =>
    new TextDecoder().decode(Uint8Array.fromBase64(part, { alphabet: "base64url" }))
  );
  return [header, payload];
}

Deno.test("Dapr's own code writes the same JWKS bytes and signs tokens of the same shape", async () => {
  const generated = await generateJwtKeyMaterial();
  const keyFile = join(work, "jwt.key");
  await Deno.writeTextFile(keyFile, generated.keyPem);
  const { jwtcheck: binary } = await daprBinaries();
  const out = await new Deno.Command(binary, {
    args: ["-dapr-issue", keyFile, "-trust-domain", TD, "-audience", TD],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.ok(out.success, new TextDecoder().decode(out.stderr));
  const dapr: { jwks: string; token: string } = JSON.parse(new TextDecoder().decode(out.stdout));
  assert.equal(generated.jwksJson, dapr.jwks, "jwks.json byte for byte");

  const ours = await signJwtSvid(generated.signingKey, { ...REQUEST, audiences: [TD] }, {
    ttlMs: 3_600_000,
    allowedClockSkewMs: 15 * 60_000,
  });
  const [ourHeader, ourPayload] = decodeParts(ours);
  const [daprHeader, daprPayload] = decodeParts(dapr.token);
  assert.equal(ourHeader, daprHeader, "the header byte for byte");
  const a = JSON.parse(ourPayload);
  const b = JSON.parse(daprPayload);
  assert.deepEqual(Object.keys(a), Object.keys(b), "the same claims in the same order");
  for (const claim of ["aud", "sub", "use"]) assert.deepEqual(a[claim], b[claim], claim);
  assert.equal(a.exp - a.iat, b.exp - b.iat, "exp - iat");
  assert.equal(a.iat - a.nbf, b.iat - b.nbf, "iat - nbf");
  assert.ok(Math.abs(a.iat - b.iat) < 60, "issued at about the same time");
  assert.match(b.jti, /^[0-9a-f]{32}$/);
  // Dapr's token validates against the JWKS we wrote, as ours does.
  assert.equal((await check(dapr.token, generated.jwksJson, TD)).spiffeId, SUBJECT);
});
