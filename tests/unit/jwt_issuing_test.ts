/**
 * JWT-SVID issuing wired into the server: start-up generates the JWT key with a new bundle, or
 * adds one beside a stored X.509 bundle (compare-and-swap, adopting a concurrent writer's key),
 * validates a stored key as Dapr does (RS256 when sentry generated the key); the
 * SignCertificate handler fills `jwt` and `per_audience_jwts`; the `--jwt-*` and `--oidc-*`
 * flags are checked with Dapr's messages.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { decodeJwt, decodeProtectedHeader } from "jose";
import { generateBundle } from "../../src/ca/bundle.ts";
import { generateJwtKeyMaterial, JwtKeyError } from "../../src/ca/jwt-keys.ts";
import { DEFAULT_SETTINGS } from "../../src/config/configuration.ts";
import { type SignRequest, WireValidator } from "../../src/identity/validator.ts";
import { Logger } from "../../src/observability/logger.ts";
import { SentryMetrics } from "../../src/observability/metrics.ts";
import { signCertificate, SignFailure } from "../../src/server/ca-service.ts";
import { CaState } from "../../src/server/ca-state.ts";
import { loadOrCreateBundle } from "../../src/server/credentials.ts";
import { FsCredentialStore } from "../../src/stores/fs.ts";
import { StoreConflictError } from "../../src/stores/store.ts";
import { parseFlags } from "../../src/cli/flags.ts";
import { SERVE_FLAGS } from "../../src/cli/serve.ts";
import { jwtOptionsFromFlags, oidcOptionsFromFlags } from "../../src/cli/jwt-flags.ts";

const NOW = new Date("2031-07-01T00:00:00Z");
const GENERATE = {
  trustDomain: "example.org",
  namespace: "sentry-ns",
  algorithm: "ecdsa-p256" as const,
  ttlMs: 365 * 86_400_000,
  skewMs: 0,
};
const RETRY = { timeoutMs: 0, maxDelayMs: 1 };
const quiet = new Logger({ level: "fatal", json: false, scope: "t", version: "0", sink: () => {} });

async function fsStore() {
  const directory = join(await Deno.makeTempDir({ prefix: "sentry-jwt-issuing-" }), "certs");
  return new FsCredentialStore({
    directory,
    caFilename: "ca.crt",
    issuerCertFilename: "issuer.crt",
    issuerKeyFilename: "issuer.key",
  });
}

function start(store: FsCredentialStore, algorithm = "RS256", keyId?: string) {
  return loadOrCreateBundle(store, GENERATE, () => NOW, quiet, RETRY, { algorithm, keyId });
}

Deno.test("an empty store gets a bundle with a JWT key; the next start loads the same key", async () => {
  const store = await fsStore();
  const first = await start(store);
  assert.equal(first.jwt?.algorithm, "RS256");
  assert.ok(first.jwt?.keyIdInJwks);
  const second = await start(store);
  assert.equal(second.jwt?.keyId, first.jwt?.keyId);
  assert.equal(second.pem.jwt?.keyPem, first.pem.jwt?.keyPem);
});

Deno.test("a stored X.509 bundle without a JWT key gets one added, the bundle untouched", async () => {
  const store = await fsStore();
  const stored = await store.create(generateBundle({ ...GENERATE, now: NOW }));
  const bundle = await start(store, "ES256", "my-kid");
  assert.equal(bundle.pem.caCrt, stored.caCrt);
  assert.equal(bundle.jwt?.keyId, "my-kid");
  assert.equal(bundle.jwt?.algorithm, "RS256", "Dapr signs with RS256 with a key it generated");
  assert.deepEqual((await store.load())?.jwt, bundle.pem.jwt);
  // The next start validates the stored RSA key against the configured algorithm, as Dapr does.
  await assert.rejects(start(store, "ES256", "my-kid"), JwtKeyError);
});

Deno.test("a concurrent writer's JWT key is adopted; a store that lost it is refused", async () => {
  const store = await fsStore();
  await store.create(generateBundle({ ...GENERATE, now: NOW }));
  const theirs = await generateJwtKeyMaterial();
  const replace = store.replace.bind(store);
  store.replace = async (_bundle, expected) => {
    await replace(
      { ...expected, jwt: { keyPem: theirs.keyPem, jwksJson: theirs.jwksJson } },
      expected,
    );
    throw new StoreConflictError("changed");
  };
  const bundle = await start(store);
  assert.equal(bundle.pem.jwt?.keyPem, theirs.keyPem);
});

Deno.test("a stored JWT key that its JWKS does not hold is refused, naming the files", async () => {
  const store = await fsStore();
  const a = await generateJwtKeyMaterial();
  const b = await generateJwtKeyMaterial();
  await store.create({
    ...generateBundle({ ...GENERATE, now: NOW }),
    jwt: { keyPem: a.keyPem, jwksJson: b.jwksJson },
  });
  await assert.rejects(start(store), /jwks\.json doesn't contain a matching public key/);
});

const REQUEST: SignRequest = {
  id: "app",
  token: "",
  trustDomain: "",
  namespace: "ns",
  csr: new Uint8Array(),
  tokenValidator: WireValidator.INSECURE,
  jwtAudiences: ["api://one", "api://two"],
};

async function serviceDeps(withKey = true) {
  const store = await fsStore();
  const bundle = await start(store);
  const state = new CaState(withKey ? bundle : { ...bundle, jwt: undefined }, DEFAULT_SETTINGS, {
    defaultWire: WireValidator.INSECURE,
    enabled: new Map([[WireValidator.INSECURE, {
      wire: WireValidator.INSECURE,
      validate: () => Promise.resolve({ trustDomain: "public", namespace: "ns", appId: "app" }),
    }]]),
  });
  return {
    state,
    metrics: new SentryMetrics(),
    logger: quiet,
    now: () => NOW,
    issuer: {
      issue: () => Promise.resolve({ chain: new TextEncoder().encode("chain"), notAfter: NOW }),
    },
    namespace: "dapr-system",
    clusterDomain: "cluster.local",
    jwt: { ttlMs: 3_600_000, issuer: "https://issuer.example" },
  };
}

Deno.test("the response carries jwt (trust domain + audiences) and one token per audience", async () => {
  const response = await signCertificate(REQUEST, await serviceDeps());
  const claims = decodeJwt(response.jwt!.value);
  assert.deepEqual(claims.aud, ["public", "api://one", "api://two"]);
  assert.equal(claims.sub, "spiffe://public/ns/ns/app");
  assert.equal(claims.iss, "https://issuer.example");
  assert.equal(claims.exp! - claims.iat!, 3600);
  assert.equal(claims.iat! - claims.nbf!, DEFAULT_SETTINGS.allowedClockSkewMs / 1000);
  assert.equal(decodeProtectedHeader(response.jwt!.value).alg, "RS256");
  assert.deepEqual(Object.keys(response.perAudienceJwts!), ["public", "api://one", "api://two"]);
  for (const [audience, token] of Object.entries(response.perAudienceJwts!)) {
    assert.deepEqual(decodeJwt(token.value).aud, [audience]);
  }
  const off = await serviceDeps();
  const plain = await signCertificate(REQUEST, { ...off, jwt: undefined });
  assert.equal(plain.jwt, undefined);
  assert.equal(plain.perAudienceJwts, undefined);
});

Deno.test("a token that cannot be signed answers INTERNAL", async () => {
  await assert.rejects(
    signCertificate(REQUEST, await serviceDeps(false)),
    (error: Error) =>
      error instanceof SignFailure && error.code === 13 &&
      /failed to generate JWT/.test(error.message),
  );
});

const flags = (...argv: string[]) => parseFlags(SERVE_FLAGS, argv);

Deno.test("--jwt-* flags: Dapr's defaults and checks", () => {
  assert.equal(jwtOptionsFromFlags(flags()), undefined);
  const on = jwtOptionsFromFlags(flags("--jwt-enabled"))!;
  assert.deepEqual(on, {
    algorithm: "RS256",
    keyId: undefined,
    issuer: undefined,
    ttlMs: 86_400_000,
    names: { key: "jwt.key", jwks: "jwks.json" },
  });
  assert.equal(jwtOptionsFromFlags(flags("--jwt-enabled", "--jwt-issuer="))!.issuer, "");
  assert.equal(jwtOptionsFromFlags(flags("--jwt-enabled", "--jwt-ttl", "1h30m"))!.ttlMs, 5_400_000);
  assert.throws(
    () => jwtOptionsFromFlags(flags("--jwt-issuer", "x")),
    /^UsageError: jwt-issuer cannot be set when jwt-enabled is false$/,
  );
  assert.throws(() => jwtOptionsFromFlags(flags("--jwt-enabled", "--jwt-ttl", "1d")), /--jwt-ttl/);
  assert.throws(() => jwtOptionsFromFlags(flags("--jwt-enabled", "--jwt-ttl", "0s")), /positive/);
});

Deno.test("--oidc-* flags: accepted, checked as Dapr checks them, passed through", () => {
  assert.equal(oidcOptionsFromFlags(flags()), undefined);
  assert.throws(
    () => oidcOptionsFromFlags(flags("--oidc-enabled")),
    /oidc-server-tls-cert-file is required when OIDC HTTP server is enabled/,
  );
  assert.throws(
    () => oidcOptionsFromFlags(flags("--oidc-server-tls-cert-file", "c.pem")),
    /both OIDC TLS certificate and key must be provided/,
  );
  const oidc = oidcOptionsFromFlags(
    flags("--oidc-enabled", "--oidc-server-tls-enabled=false", "--oidc-allowed-hosts", "a,b"),
  );
  assert.deepEqual(oidc, {
    listen: { address: "localhost", port: 9080 },
    tlsEnabled: false,
    tlsCertFile: undefined,
    tlsKeyFile: undefined,
    jwksUri: undefined,
    pathPrefix: undefined,
    allowedHosts: ["a", "b"],
  });
});
