/**
 * The JWT signing key and JWKS (src/ca/jwt-keys.ts): the key Dapr generates and the JWKS it
 * writes, the PEM forms Dapr accepts, the kid (standard base64 of the RFC 7638 thumbprint,
 * checked against the RFC's own example), the algorithm/key-type rules, and every refusal of a
 * key, a JWKS or a kid with a message naming the file and the check.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { createHash, generateKeyPairSync, type KeyObject } from "node:crypto";
import {
  buildJwks,
  checkAlgorithmForKey,
  defaultJwtKeyId,
  generateJwtKeyMaterial,
  generateJwtSigningKey,
  JWT_SIGNING_ALGORITHMS,
  JwtKeyError,
  parseJwtSigningKey,
  prepareJwtSigningKey,
  verifyJwks,
} from "../../src/ca/jwt-keys.ts";
import { describeKey } from "../../src/x509/keys.ts";
import { openssl } from "../helpers/openssl.ts";

const rsa = (bits = 2048) => generateKeyPairSync("rsa", { modulusLength: bits }).privateKey;
const ec = (namedCurve: string) => generateKeyPairSync("ec", { namedCurve }).privateKey;
const ed25519 = () => generateKeyPairSync("ed25519").privateKey;
const pem = (key: KeyObject, type: "pkcs8" | "pkcs1" | "sec1" = "pkcs8") =>
  key.export({ type, format: "pem" }).toString();

const RSA = rsa();
const P256 = ec("P-256");
const ED = ed25519();
/** Go's x509 cannot parse RSA-PSS PKCS#8 keys (and Deno cannot export them): made by openssl. */
const RSA_PSS_PEM = await openssl([
  "genpkey",
  "-algorithm",
  "RSA-PSS",
  "-pkeyopt",
  "rsa_keygen_bits:2048",
]);

/** The RFC 7638 thumbprint input, built by hand, hashed, in standard base64. */
function expectedKid(key: KeyObject): string {
  const jwk = key.export({ format: "jwk" });
  const canonical = jwk.kty === "RSA"
    ? `{"e":"${jwk.e}","kty":"RSA","n":"${jwk.n}"}`
    : jwk.kty === "EC"
    ? `{"crv":"${jwk.crv}","kty":"EC","x":"${jwk.x}","y":"${jwk.y}"}`
    : `{"crv":"${jwk.crv}","kty":"OKP","x":"${jwk.x}"}`;
  return createHash("sha256").update(canonical).digest("base64");
}

/** A one-key JWKS for `key`, with extra members. */
function jwksOf(key: KeyObject, extra: Record<string, unknown> = {}): string {
  const { d: _d, p: _p, q: _q, dp: _dp, dq: _dq, qi: _qi, ...pub } = key.export({ format: "jwk" });
  return JSON.stringify({ keys: [{ ...pub, ...extra }] });
}

function throwsJwtKeyError(fn: () => unknown, ...fragments: string[]): void {
  assert.throws(fn, (error: Error) => {
    assert.ok(error instanceof JwtKeyError, `${error.name}: ${error.message}`);
    for (const fragment of fragments) assert.match(error.message, new RegExp(escape(fragment)));
    return true;
  });
}

async function rejectsJwtKeyError(promise: Promise<unknown>, ...fragments: string[]) {
  await assert.rejects(promise, (error: Error) => {
    assert.ok(error instanceof JwtKeyError, `${error.name}: ${error.message}`);
    for (const fragment of fragments) assert.match(error.message, new RegExp(escape(fragment)));
    return true;
  });
}

const escape = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

Deno.test("generated key material is Dapr's: RSA 2048 in PKCS#8, RS256, JWKS with sorted members", async () => {
  const generated = await generateJwtKeyMaterial();
  assert.match(generated.keyPem, /^-----BEGIN PRIVATE KEY-----\n/);
  const key = parseJwtSigningKey(generated.keyPem);
  assert.equal(describeKey(key), "rsa-2048");
  assert.equal(key.asymmetricKeyDetails?.publicExponent, 65537n);
  const jwks = JSON.parse(generated.jwksJson);
  assert.equal(jwks.keys.length, 1);
  assert.deepEqual(Object.keys(jwks.keys[0]), ["alg", "e", "kid", "kty", "n", "use"]);
  assert.equal(jwks.keys[0].alg, "RS256");
  assert.equal(jwks.keys[0].use, "sig");
  assert.equal(jwks.keys[0].kty, "RSA");
  assert.equal(jwks.keys[0].kid, expectedKid(key));
  assert.ok(!generated.jwksJson.includes(" ") && !generated.jwksJson.includes("\n"));
  assert.equal(generated.signingKey.algorithm, "RS256");
  assert.equal(generated.signingKey.keyId, expectedKid(key));
  // What Dapr's next start does with the stored files.
  const loaded = await prepareJwtSigningKey({
    keyPem: generated.keyPem,
    jwksJson: generated.jwksJson,
    algorithm: "RS256",
  });
  assert.equal(loaded.keyId, generated.signingKey.keyId);
  assert.equal(loaded.keyIdInJwks, true);
});

Deno.test("generateJwtSigningKey: RSA 2048 by default, and a key that suits each algorithm", async () => {
  assert.equal(describeKey(await generateJwtSigningKey()), "rsa-2048");
  for (const algorithm of JWT_SIGNING_ALGORITHMS) {
    const key = await generateJwtSigningKey(algorithm);
    checkAlgorithmForKey(key, algorithm); // the type and curve suit the algorithm
    if (/^(RS|PS)/.test(algorithm)) assert.equal(describeKey(key), "rsa-2048", algorithm);
  }
});

Deno.test("a configured kid is written to the generated JWKS, so the next start accepts it", async () => {
  const generated = await generateJwtKeyMaterial({ keyId: "key-1" });
  assert.equal(JSON.parse(generated.jwksJson).keys[0].kid, "key-1");
  assert.equal(generated.signingKey.keyId, "key-1");
  const loaded = await prepareJwtSigningKey({
    keyPem: generated.keyPem,
    jwksJson: generated.jwksJson,
    algorithm: "RS256",
    keyId: "key-1",
  });
  assert.equal(loaded.keyId, "key-1");
});

Deno.test("default kid: standard base64 of the SHA-256 thumbprint of RFC 7638's example key", async () => {
  // RFC 7638 §3.1: the thumbprint is NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs (base64url).
  const { createPublicKey } = await import("node:crypto");
  const key = createPublicKey({
    format: "jwk",
    key: {
      kty: "RSA",
      e: "AQAB",
      n: "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSo" +
        "c_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65Y" +
        "GjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrd" +
        "kt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKn" +
        "qDKgw",
    },
  });
  assert.equal(await defaultJwtKeyId(key), "NzbLsXh8uDCcd+6MNwXF4W/7noWXFZAfHkxZsRGC9Xs=");
});

Deno.test("default kid of each key type matches a hand-built RFC 7638 thumbprint", async () => {
  for (const key of [RSA, P256, ec("P-384"), ec("P-521"), ED]) {
    assert.equal(await defaultJwtKeyId(key), expectedKid(key), describeKey(key));
  }
});

Deno.test("buildJwks: members per key type, alg and kid as asked", async () => {
  const cases: [KeyObject, "ES256" | "EdDSA" | "PS512", string[]][] = [
    [P256, "ES256", ["alg", "crv", "kid", "kty", "use", "x", "y"]],
    [ED, "EdDSA", ["alg", "crv", "kid", "kty", "use", "x"]],
    [RSA, "PS512", ["alg", "e", "kid", "kty", "n", "use"]],
  ];
  for (const [key, algorithm, members] of cases) {
    const { jwks, json } = await buildJwks(key, { algorithm, keyId: "k" });
    assert.deepEqual(Object.keys(jwks.keys[0]), members);
    assert.equal(jwks.keys[0].alg, algorithm);
    assert.equal(jwks.keys[0].kid, "k");
    assert.ok(!("d" in jwks.keys[0]), "no private member");
    assert.deepEqual(JSON.parse(json), jwks);
  }
  throwsJwtKeyError(() => checkAlgorithmForKey(P256, "RS256", "the key"), "the key:");
  await rejectsJwtKeyError(buildJwks(P256), "RS256 requires an RSA key");
});

Deno.test("parseJwtSigningKey accepts the PEM forms Dapr accepts", () => {
  const cases: [string, string, string][] = [
    ["RSA PKCS#8", pem(RSA), "rsa-2048"],
    ["RSA PKCS#1", pem(RSA, "pkcs1"), "rsa-2048"],
    ["EC PKCS#8", pem(P256), "ec-p256"],
    ["EC SEC 1", pem(P256, "sec1"), "ec-p256"],
    ["P-521 SEC 1", pem(ec("P-521"), "sec1"), "ec-p521"],
    ["Ed25519 PKCS#8", pem(ED), "ed25519"],
    ["text before the block", `comment\n${pem(P256)}`, "ec-p256"],
    ["two blocks: the first counts", pem(ED) + pem(RSA), "ed25519"],
  ];
  for (const [name, text, kind] of cases) {
    assert.equal(describeKey(parseJwtSigningKey(text)), kind, name);
    assert.equal(describeKey(parseJwtSigningKey(new TextEncoder().encode(text))), kind, name);
  }
});

Deno.test("parseJwtSigningKey refuses, naming the file and the reason", () => {
  const garbageDer = "-----BEGIN PRIVATE KEY-----\nAAECAwQ=\n-----END PRIVATE KEY-----\n";
  const encrypted = RSA.export({
    type: "pkcs8",
    format: "pem",
    cipher: "aes-256-cbc",
    passphrase: "x",
  }).toString();
  const publicPem = generateKeyPairSync("ed25519").publicKey.export({ type: "spki", format: "pem" })
    .toString();
  const cases: [string, string, string][] = [
    ["garbage", "not a key at all", "is not PEM encoded"],
    ["empty", "", "is not PEM encoded"],
    ["encrypted", encrypted, 'unsupported PEM block type "ENCRYPTED PRIVATE KEY"'],
    ["public key", publicPem, 'unsupported PEM block type "PUBLIC KEY"'],
    ["bad DER", garbageDer, "the PRIVATE KEY block cannot be parsed"],
    ["PKCS#1 label on PKCS#8", pem(RSA).replaceAll("PRIVATE KEY", "RSA PRIVATE KEY"), "cannot be"],
    ["X25519", pem(generateKeyPairSync("x25519").privateKey), "cannot sign JWTs"],
    ["Ed448", pem(generateKeyPairSync("ed448").privateKey), "cannot sign JWTs"],
    ["RSA-PSS", RSA_PSS_PEM, "cannot sign JWTs"],
  ];
  for (const [name, text, reason] of cases) {
    throwsJwtKeyError(
      () => parseJwtSigningKey(text, "/etc/sentry/jwt.key"),
      "/etc/sentry/jwt.key: ",
      reason,
    );
    assert.ok(name);
  }
});

Deno.test("checkAlgorithmForKey: RS*/PS* need RSA, ES* the matching curve, EdDSA Ed25519", () => {
  const ok: [KeyObject, string][] = [
    ...["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"].map((a) =>
      [RSA, a] as [KeyObject, string]
    ),
    [rsa(3072), "RS256"],
    [P256, "ES256"],
    [ec("P-384"), "ES384"],
    [ec("P-521"), "ES512"],
    [ED, "EdDSA"],
  ];
  for (const [key, algorithm] of ok) checkAlgorithmForKey(key, algorithm);
  const refused: [KeyObject, string, string][] = [
    [P256, "RS256", "RS256 requires an RSA key, but the key is ec-p256"],
    [ED, "PS256", "PS256 requires an RSA key, but the key is ed25519"],
    [P256, "ES384", "ES384 requires a ec-p384 key, but the key is ec-p256"],
    [ec("P-384"), "ES256", "ES256 requires a ec-p256 key, but the key is ec-p384"],
    [RSA, "ES256", "ES256 requires an ECDSA key, but the key is rsa-2048"],
    [RSA, "EdDSA", "EdDSA requires an Ed25519 key, but the key is rsa-2048"],
    [P256, "EdDSA", "EdDSA requires an Ed25519 key"],
    [rsa(1024), "RS256", "at least 2048 bits, not 1024"],
    [RSA, "HS256", 'unsupported signature algorithm "HS256"'],
    [RSA, "rs256", 'unsupported signature algorithm "rs256"'],
    [RSA, "none", 'unsupported signature algorithm "none"'],
  ];
  for (const [key, algorithm, reason] of refused) {
    throwsJwtKeyError(
      () => checkAlgorithmForKey(key, algorithm, "k.pem"),
      `k.pem: JWT signing key is incompatible with algorithm ${algorithm}: `,
      reason,
    );
  }
});

Deno.test("verifyJwks accepts a JWKS holding the key's public part", () => {
  const other = jwksOf(P256, { kid: "other" });
  const cases: [string, string, string | undefined][] = [
    ["the key alone", jwksOf(RSA), undefined],
    ["a single JWK, not a set", JSON.stringify(JSON.parse(jwksOf(RSA)).keys[0]), undefined],
    [
      "among other keys",
      JSON.stringify({
        keys: [JSON.parse(other).keys[0], JSON.parse(jwksOf(RSA, { kid: "mine" })).keys[0]],
      }),
      undefined,
    ],
    ["with private members", JSON.stringify({ keys: [RSA.export({ format: "jwk" })] }), undefined],
    ["use sig", jwksOf(RSA, { use: "sig", kid: "a" }), "a"],
    ["configured kid", jwksOf(RSA, { kid: "mine" }), "mine"],
    [
      "an oct key beside it",
      JSON.stringify({
        keys: [{ kty: "oct", k: "AAAA", kid: "s" }, JSON.parse(jwksOf(ED)).keys[0]],
      }),
      undefined,
    ],
  ];
  for (const [name, jwks, keyId] of cases) {
    const key = name === "an oct key beside it" ? ED : RSA;
    verifyJwks(key, jwks, { keyId });
    verifyJwks(key, new TextEncoder().encode(jwks), { keyId });
  }
});

Deno.test("verifyJwks refuses, naming both files and the failed check", () => {
  const names = { key: "/k/jwt.key", jwks: "/k/jwks.json" };
  const twoWithKid = JSON.stringify({
    keys: [
      JSON.parse(jwksOf(P256, { kid: "mine" })).keys[0],
      JSON.parse(jwksOf(RSA, { kid: "theirs" })).keys[0],
    ],
  });
  const cases: [string, string, string | undefined, string][] = [
    ["not JSON", "{nope", undefined, "/k/jwks.json: failed to parse JWKS"],
    ["no keys", `{"keys":[]}`, undefined, "/k/jwks.json: JWKS doesn't contain any keys"],
    ["keys not an array", `{"keys":{}}`, undefined, '"keys" is not an array'],
    [
      "another key",
      jwksOf(P256),
      undefined,
      "/k/jwks.json doesn't contain a matching public key for the JWT signing key /k/jwt.key",
    ],
    [
      "the key for encryption",
      jwksOf(RSA, { use: "enc" }),
      undefined,
      "doesn't contain a matching",
    ],
    [
      "unknown kid",
      jwksOf(RSA, { kid: "a" }),
      "b",
      '/k/jwks.json doesn\'t contain a key with the configured key ID "b"',
    ],
    [
      "kid names another key",
      twoWithKid,
      "mine",
      'contains a key with the configured key ID "mine" but it is not the public key of the ' +
      "JWT signing key /k/jwt.key",
    ],
    [
      "RSA without n",
      `{"keys":[{"kty":"RSA","e":"AQAB"}]}`,
      undefined,
      "key #1 is not a valid RSA key",
    ],
    [
      "unknown kty",
      `{"keys":[{"kty":"XYZ"}]}`,
      undefined,
      "key #1 has an unsupported key type (kty) XYZ",
    ],
    ["a string", `{"keys":["x"]}`, undefined, "key #1 is not a JSON object"],
  ];
  for (const [name, jwks, keyId, reason] of cases) {
    assert.ok(name);
    throwsJwtKeyError(() => verifyJwks(RSA, jwks, { keyId, names }), reason);
  }
});

Deno.test("prepareJwtSigningKey runs Dapr's checks in order and picks the kid", async () => {
  const material = { keyPem: pem(P256, "sec1"), jwksJson: jwksOf(P256, { kid: "named" }) };
  const prepared = await prepareJwtSigningKey({ ...material, algorithm: "ES256" });
  assert.equal(prepared.algorithm, "ES256");
  assert.equal(prepared.keyId, expectedKid(P256), "no kid configured: the thumbprint, as Dapr");
  assert.equal(prepared.keyIdInJwks, false, "the JWKS names the key otherwise");
  assert.equal(prepared.jwksJson, material.jwksJson);
  const named = await prepareJwtSigningKey({ ...material, algorithm: "ES256", keyId: "named" });
  assert.equal(named.keyId, "named");
  assert.equal(named.keyIdInJwks, true);

  const names = { key: "a.key", jwks: "a.json" };
  await rejectsJwtKeyError(
    prepareJwtSigningKey({ keyPem: "junk", jwksJson: "junk", algorithm: "", names }),
    "a.key: JWT signing key is not PEM encoded",
  );
  await rejectsJwtKeyError(
    prepareJwtSigningKey({ keyPem: pem(RSA), jwksJson: jwksOf(P256), algorithm: "", names }),
    "a.json doesn't contain a matching public key",
  );
  await rejectsJwtKeyError(
    prepareJwtSigningKey({ ...material, algorithm: "", names }),
    "JWT signing algorithm required",
  );
  await rejectsJwtKeyError(
    prepareJwtSigningKey({ ...material, algorithm: "RS256", names }),
    "a.key: JWT signing key is incompatible with algorithm RS256: RS256 requires an RSA key",
  );
  await rejectsJwtKeyError(
    prepareJwtSigningKey({ ...material, algorithm: "ES256", keyId: "nope", names }),
    'a.json doesn\'t contain a key with the configured key ID "nope"',
  );
});

Deno.test("parsed keys keep their public key (the JWKS of a parsed key verifies)", async () => {
  for (const [key, type] of [[RSA, "pkcs1"], [P256, "sec1"], [ED, "pkcs8"]] as const) {
    const parsed = parseJwtSigningKey(pem(key, type));
    const { json } = await buildJwks(parsed, {
      algorithm: key === RSA ? "RS256" : key === ED ? "EdDSA" : "ES256",
    });
    verifyJwks(key, json);
    assert.equal(
      Buffer.from(JSON.parse(json).keys[0].kid, "base64").length,
      32,
      "SHA-256 sized kid",
    );
  }
});
