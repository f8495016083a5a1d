/**
 * JWT-SVIDs (src/ca/jwt-svid.ts): Dapr's header and claims byte for byte in order, the times
 * (`nbf` = now - clock skew, `exp` = now + TTL, whole seconds), `iss` only when set, a fresh
 * `jti`, the per-audience tokens, tokens clamped to a key's `notAfter`, signatures verified by
 * jose for every algorithm, and the refusals of incomplete requests.
 */
import assert from "node:assert/strict";
import { createLocalJWKSet, decodeProtectedHeader, jwtVerify } from "jose";
import {
  buildJwks,
  generateJwtKeyMaterial,
  generateJwtSigningKey,
  JWT_SIGNING_ALGORITHMS,
  type JwtSigningAlgorithm,
  type JwtSigningKey,
} from "../../src/ca/jwt-keys.ts";
import {
  daprJwtAudiences,
  jwtSvidClaims,
  JwtSvidError,
  type JwtSvidOptions,
  type JwtSvidRequest,
  signJwtSvid,
  signPerAudienceJwtSvids,
} from "../../src/ca/jwt-svid.ts";
import { SpiffeIdError } from "../../src/ca/spiffe.ts";

const HOUR = 3_600_000;
const NOW = new Date("2030-01-02T03:04:05.999Z");
const NOW_S = Math.floor(NOW.getTime() / 1000);
const REQUEST: JwtSvidRequest = {
  trustDomain: "public",
  namespace: "default",
  appId: "myapp",
  audiences: ["public", "api://x"],
};
const OPTIONS: JwtSvidOptions = { ttlMs: 24 * HOUR, allowedClockSkewMs: 15 * 60_000, now: NOW };

async function signingKey(algorithm: JwtSigningAlgorithm): Promise<JwtSigningKey> {
  const privateKey = await generateJwtSigningKey(algorithm);
  const { json } = await buildJwks(privateKey, { algorithm, keyId: `kid-${algorithm}` });
  return { privateKey, algorithm, keyId: `kid-${algorithm}`, keyIdInJwks: true, jwksJson: json };
}

const ED_KEY = await signingKey("EdDSA");

/** The header and payload JSON texts of a compact token. */
function parts(token: string): [string, string] {
  const [header, payload] = token.split(".");
  const text = (part: string) =>
    new TextDecoder().decode(Uint8Array.fromBase64(part, { alphabet: "base64url" }));
  return [text(header), text(payload)];
}

Deno.test("a token has Dapr's header and claims, in Dapr's order", async () => {
  const token = await signJwtSvid(ED_KEY, REQUEST, { ...OPTIONS, issuer: "https://oidc.example" });
  const [header, payload] = parts(token);
  assert.equal(header, '{"alg":"EdDSA","kid":"kid-EdDSA","typ":"JWT"}');
  const claims = JSON.parse(payload);
  assert.deepEqual(Object.keys(claims), ["aud", "exp", "iat", "iss", "jti", "nbf", "sub", "use"]);
  assert.deepEqual(claims.aud, ["public", "api://x"]);
  assert.equal(claims.iat, NOW_S, "whole seconds, truncated");
  assert.equal(claims.nbf, NOW_S - 15 * 60, "now minus the allowed clock skew");
  assert.equal(claims.exp, NOW_S + 24 * 3600, "now plus the TTL");
  assert.equal(claims.iss, "https://oidc.example");
  assert.match(claims.jti, /^[0-9a-f]{32}$/);
  assert.equal(claims.sub, "spiffe://public/ns/default/myapp");
  assert.equal(claims.use, "sig");
});

Deno.test("iss is written only when configured (an empty one is written, as Dapr does)", () => {
  const cases: [string | undefined, boolean][] = [[undefined, false], ["", true], ["x", true]];
  for (const [issuer, present] of cases) {
    const claims = jwtSvidClaims({}, REQUEST, { ...OPTIONS, issuer });
    assert.equal("iss" in claims, present, JSON.stringify(issuer));
    if (present) assert.equal(claims.iss, issuer);
  }
});

Deno.test("each token gets its own jti; aud is an array even for one audience", () => {
  const ids = new Set(Array.from({ length: 50 }, () => jwtSvidClaims({}, REQUEST, OPTIONS).jti));
  assert.equal(ids.size, 50);
  assert.deepEqual(jwtSvidClaims({}, { ...REQUEST, audiences: ["public"] }, OPTIONS).aud, [
    "public",
  ]);
});

Deno.test("times follow the TTL and skew, and never pass the key's notAfter", () => {
  const cases: [string, Partial<JwtSvidOptions>, Date | undefined, number, number][] = [
    ["no skew", { allowedClockSkewMs: 0 }, undefined, NOW_S, NOW_S + 24 * 3600],
    ["short TTL", { ttlMs: 90_000 }, undefined, NOW_S - 900, NOW_S + 90],
    ["key outlives the TTL", {}, new Date(NOW.getTime() + 48 * HOUR), NOW_S - 900, NOW_S + 86400],
    [
      "key ends first",
      {},
      new Date("2030-01-02T05:00:00.500Z"),
      NOW_S - 900,
      Math.floor(Date.parse("2030-01-02T05:00:00Z") / 1000),
    ],
  ];
  for (const [name, options, notAfter, nbf, exp] of cases) {
    const claims = jwtSvidClaims({ notAfter }, REQUEST, { ...OPTIONS, ...options });
    assert.equal(claims.nbf, nbf, name);
    assert.equal(claims.exp, exp, name);
  }
  assert.throws(
    () => jwtSvidClaims({ notAfter: new Date(NOW.getTime() - 1) }, REQUEST, OPTIONS),
    (error: Error) => error instanceof JwtSvidError && /no longer valid/.test(error.message),
  );
});

Deno.test("incomplete requests are refused with Dapr's reasons", () => {
  const cases: [string, Partial<JwtSvidRequest>, string][] = [
    ["trust domain", { trustDomain: "" }, "trust domain cannot be empty"],
    ["audiences", { audiences: [] }, "audience cannot be empty"],
    ["namespace", { namespace: "" }, "namespace cannot be empty"],
    ["app ID", { appId: "" }, "app ID cannot be empty"],
  ];
  for (const [name, change, reason] of cases) {
    assert.throws(
      () => jwtSvidClaims({}, { ...REQUEST, ...change }, OPTIONS),
      (error: Error) => error instanceof JwtSvidError && error.message === reason,
      name,
    );
  }
  assert.throws(() => jwtSvidClaims({}, { ...REQUEST, appId: "a/b" }, OPTIONS), SpiffeIdError);
  assert.throws(
    () => jwtSvidClaims({}, { ...REQUEST, trustDomain: "UPPER" }, OPTIONS),
    SpiffeIdError,
  );
});

Deno.test("the response's audiences: the trust domain first, then the requested ones", () => {
  assert.deepEqual(daprJwtAudiences("public", []), ["public"]);
  assert.deepEqual(daprJwtAudiences("public", ["a", "b"]), ["public", "a", "b"]);
});

Deno.test("per-audience tokens: one per distinct audience, each for that audience alone", async () => {
  const tokens = await signPerAudienceJwtSvids(
    ED_KEY,
    { ...REQUEST, audiences: ["public", "a", "b", "a"] },
    OPTIONS,
  );
  assert.deepEqual([...tokens.keys()], ["public", "a", "b"]);
  const jtis = new Set<string>();
  for (const [audience, token] of tokens) {
    const claims = JSON.parse(parts(token)[1]);
    assert.deepEqual(claims.aud, [audience]);
    assert.equal(claims.sub, "spiffe://public/ns/default/myapp");
    jtis.add(claims.jti);
  }
  assert.equal(jtis.size, 3);
  await assert.rejects(
    signPerAudienceJwtSvids(ED_KEY, { ...REQUEST, audiences: [] }, OPTIONS),
    JwtSvidError,
  );
});

Deno.test("tokens of every algorithm verify with jose against the published JWKS", async () => {
  for (const algorithm of JWT_SIGNING_ALGORITHMS) {
    const key = await signingKey(algorithm);
    const token = await signJwtSvid(key, REQUEST, { ttlMs: HOUR, allowedClockSkewMs: 60_000 });
    assert.equal(decodeProtectedHeader(token).alg, algorithm);
    const jwks = createLocalJWKSet(JSON.parse(key.jwksJson));
    const { payload } = await jwtVerify(token, jwks, {
      audience: "api://x",
      subject: "spiffe://public/ns/default/myapp",
      typ: "JWT",
      algorithms: [algorithm],
    });
    assert.equal(payload.use, "sig", algorithm);
  }
});

Deno.test("a token of Dapr's generated key (RS256) verifies; another key's does not", async () => {
  const generated = await generateJwtKeyMaterial();
  const other = await generateJwtKeyMaterial();
  const jwks = createLocalJWKSet(JSON.parse(generated.jwksJson));
  const good = await signJwtSvid(generated.signingKey, REQUEST, {
    ttlMs: HOUR,
    allowedClockSkewMs: 0,
  });
  await jwtVerify(good, jwks, { audience: "public" });
  const forged = await signJwtSvid(
    { ...other.signingKey, keyId: generated.signingKey.keyId },
    REQUEST,
    { ttlMs: HOUR, allowedClockSkewMs: 0 },
  );
  await assert.rejects(jwtVerify(forged, jwks), /signature verification failed/);
});
