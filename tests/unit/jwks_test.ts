/**
 * The JWKS token validator (docs/compatibility.md#token-validators): tokens signed by keys of a JSON Web Key Set, with
 * Dapr's claim rules (kid required, 5 min clock tolerance, sentry's SPIFFE ID in `aud`, the
 * requested SPIFFE ID as `sub`), and the key sources: inline JSON (plain or base64), a watched
 * file that is rotated in place, and an https URL (private CA, on-demand refetch limited by
 * minRefreshInterval, periodic refresh, last good set kept when the server is down).
 */
import assert from "node:assert/strict";
import { createServer, type Server } from "node:https";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import {
  type CryptoKey,
  exportJWK,
  generateKeyPair,
  type JSONWebKeySet,
  type JWK,
  SignJWT,
} from "jose";
import { JwksValidator, type JwksValidatorContext } from "../../src/identity/jwks.ts";
import { JwksSourceError, parseJwksSourceOptions } from "../../src/identity/jwks-options.ts";
import { type SignRequest, ValidationError, WireValidator } from "../../src/identity/validator.ts";
import { opensslServerTls, type ServerTls } from "../helpers/openssl.ts";

const SENTRY_TD = "cluster.local";
const SENTRY_NS = "dapr-system";
const AUDIENCE = `spiffe://${SENTRY_TD}/ns/${SENTRY_NS}/dapr-sentry`;
const CONTEXT: JwksValidatorContext = { sentryTrustDomain: SENTRY_TD, sentryNamespace: SENTRY_NS };
const NOW = () => Math.floor(Date.now() / 1000);

interface TestKey {
  kid: string;
  alg: "ES256" | "RS256";
  privateKey: CryptoKey;
  jwk: JWK;
}

async function makeKey(kid: string, alg: "ES256" | "RS256" = "ES256"): Promise<TestKey> {
  const { privateKey, publicKey } = await generateKeyPair(alg);
  const jwk = { ...(await exportJWK(publicKey)), kid, alg, use: "sig" };
  return { kid, alg, privateKey, jwk };
}

function keySet(...keys: TestKey[]): JSONWebKeySet {
  return { keys: keys.map((key) => key.jwk) };
}

interface TokenOptions {
  sub?: string | null;
  aud?: string | string[] | null;
  exp?: number | null;
  nbf?: number;
  iat?: number;
  kid?: string | null;
}

/** A token for app `myapp` in namespace `default`, trust domain `public`, unless overridden. */
function sign(key: TestKey, options: TokenOptions = {}): Promise<string> {
  const claims: Record<string, unknown> = {};
  const sub = options.sub === undefined ? "spiffe://public/ns/default/myapp" : options.sub;
  const aud = options.aud === undefined ? AUDIENCE : options.aud;
  if (sub !== null) claims.sub = sub;
  if (aud !== null) claims.aud = aud;
  claims.iat = options.iat ?? NOW();
  if (options.exp !== null) claims.exp = options.exp ?? NOW() + 600;
  if (options.nbf !== undefined) claims.nbf = options.nbf;
  const kid = options.kid === undefined ? key.kid : options.kid;
  return new SignJWT(claims)
    .setProtectedHeader(kid === null ? { alg: key.alg } : { alg: key.alg, kid })
    .sign(key.privateKey);
}

function request(token: string, overrides: Partial<SignRequest> = {}): SignRequest {
  return {
    id: "myapp",
    token,
    trustDomain: "",
    namespace: "default",
    csr: new Uint8Array([1]),
    tokenValidator: WireValidator.JWKS,
    jwtAudiences: [],
    ...overrides,
  };
}

async function assertDenied(
  validator: JwksValidator,
  req: SignRequest,
  pattern: RegExp,
): Promise<void> {
  await assert.rejects(validator.validate(req), (error: Error) => {
    assert.ok(error instanceof ValidationError, `not a ValidationError: ${error}`);
    assert.match(error.message, pattern);
    return true;
  });
}

async function assertCreateFails(
  options: Record<string, unknown>,
  ...patterns: RegExp[]
): Promise<void> {
  await assert.rejects(JwksValidator.create(options, CONTEXT), (error: Error) => {
    for (const pattern of patterns) assert.match(error.message, pattern);
    return true;
  });
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Retries `check` until it passes or `timeoutMs` elapses (then rethrows its last failure). */
async function eventually(check: () => Promise<void>, timeoutMs = 3000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await check();
    } catch (error) {
      if (Date.now() > deadline) throw error;
      await delay(100);
    }
  }
}

/** Writes `text` to `path` the way editors and rotation tools do: a temp file, then rename. */
async function replaceFile(path: string, text: string): Promise<void> {
  const temp = `${path}.tmp-${crypto.randomUUID()}`;
  await Deno.writeTextFile(temp, text);
  await Deno.rename(temp, path);
}

function base64(text: string): string {
  return btoa(String.fromCharCode(...new TextEncoder().encode(text)));
}

// ---------------------------------------------------------------------------------------------
// TLS material from the openssl CLI: a self-signed CA and a server certificate for 127.0.0.1.

let tlsMaterial: Promise<ServerTls> | undefined;

/** One test CA and server certificate, shared by this file's tests. */
function makeTls(): Promise<ServerTls> {
  tlsMaterial ??= opensslServerTls("jwks test CA");
  return tlsMaterial;
}

/** A JWKS server over https on 127.0.0.1 whose responses the test controls and counts. */
interface JwksServer {
  url: string;
  state: { body: string; status: number; requests: number; cacheControl?: string; hang: boolean };
  close(): Promise<void>;
}

async function startJwksServer(
  initial: JSONWebKeySet,
  cacheControl = "max-age=3600",
): Promise<JwksServer> {
  const tls = await makeTls();
  const state = {
    body: JSON.stringify(initial),
    status: 200,
    requests: 0,
    cacheControl,
    hang: false,
  };
  const server: Server = createServer({ key: tls.keyPem, cert: tls.certPem }, (req, res) => {
    state.requests++;
    if (state.hang) return; // never answers
    if (req.url === "/moved") {
      res.writeHead(302, { location: "/jwks.json" });
      res.end();
      return;
    }
    const headers: Record<string, string> = { "content-type": "application/json" };
    if (state.cacheControl) headers["cache-control"] = state.cacheControl;
    res.writeHead(state.status, headers);
    res.end(state.body);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  let closed = false;
  return {
    url: `https://127.0.0.1:${port}/jwks.json`,
    state,
    close: () => {
      if (closed) return Promise.resolve();
      closed = true;
      return new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Claims and signatures (inline source).

Deno.test("a good token is accepted and yields the requested identity", async () => {
  const es = await makeKey("es-1");
  const rs = await makeKey("rs-1", "RS256");
  const validator = await JwksValidator.create(
    { source: JSON.stringify(keySet(es, rs)) },
    CONTEXT,
  );
  try {
    assert.equal(validator.wire, WireValidator.JWKS);
    assert.equal(validator.audience, AUDIENCE);
    assert.deepEqual(await validator.validate(request(await sign(es))), {
      trustDomain: "public",
      namespace: "default",
      appId: "myapp",
    });
    assert.deepEqual(await validator.validate(request(await sign(rs))), {
      trustDomain: "public",
      namespace: "default",
      appId: "myapp",
    });
    // An explicit trust domain, and an audience list that includes sentry among others.
    const token = await sign(es, {
      sub: "spiffe://example.org/ns/prod/orders",
      aud: ["something-else", AUDIENCE],
    });
    assert.deepEqual(
      await validator.validate(
        request(token, { trustDomain: "example.org", namespace: "prod", id: "orders" }),
      ),
      { trustDomain: "example.org", namespace: "prod", appId: "orders" },
    );
  } finally {
    validator.close();
  }
});

Deno.test("aud must include sentry's SPIFFE ID", async () => {
  const key = await makeKey("k1");
  const validator = await JwksValidator.create({ source: JSON.stringify(keySet(key)) }, CONTEXT);
  try {
    await assertDenied(
      validator,
      request(await sign(key, { aud: "spiffe://cluster.local/ns/other/dapr-sentry" })),
      /token audience .*other\/dapr-sentry.* does not include "spiffe:\/\/cluster\.local\/ns\/dapr-system\/dapr-sentry"/,
    );
    await assertDenied(
      validator,
      request(await sign(key, { aud: ["a", "b"] })),
      /does not include/,
    );
    await assertDenied(validator, request(await sign(key, { aud: null })), /token has no audience/);
  } finally {
    validator.close();
  }
});

Deno.test("sub must be the SPIFFE ID the request asks for", async () => {
  const key = await makeKey("k1");
  const validator = await JwksValidator.create({ source: JSON.stringify(keySet(key)) }, CONTEXT);
  try {
    const token = await sign(key); // spiffe://public/ns/default/myapp
    await assertDenied(
      validator,
      request(token, { id: "otherapp" }),
      /token subject "spiffe:\/\/public\/ns\/default\/myapp" does not match .*"spiffe:\/\/public\/ns\/default\/otherapp"/,
    );
    await assertDenied(validator, request(token, { namespace: "prod" }), /does not match/);
    await assertDenied(validator, request(token, { trustDomain: "example.org" }), /does not match/);
    await assertDenied(validator, request(await sign(key, { sub: null })), /token has no subject/);
  } finally {
    validator.close();
  }
});

Deno.test("exp, nbf and iat are checked with 5 minutes of tolerance", async () => {
  const key = await makeKey("k1");
  const validator = await JwksValidator.create({ source: JSON.stringify(keySet(key)) }, CONTEXT);
  try {
    const now = NOW();
    await assertDenied(
      validator,
      request(await sign(key, { iat: now - 3600, exp: now - 10 * 60 })),
      /token expired/,
    );
    // Expired 2 minutes ago: within the tolerance.
    await validator.validate(request(await sign(key, { iat: now - 3600, exp: now - 2 * 60 })));
    await assertDenied(
      validator,
      request(await sign(key, { nbf: now + 10 * 60, exp: now + 3600 })),
      /token not valid yet/,
    );
    await validator.validate(request(await sign(key, { nbf: now + 2 * 60, exp: now + 3600 })));
    await assertDenied(
      validator,
      request(await sign(key, { iat: now + 10 * 60, exp: now + 3600 })),
      /token issued in the future/,
    );
    await validator.validate(request(await sign(key, { iat: now + 2 * 60, exp: now + 3600 })));
  } finally {
    validator.close();
  }
});

Deno.test("a token without exp is refused (as go-spiffe's jwtsvid; Dapr accepts it)", async () => {
  const key = await makeKey("k1");
  const validator = await JwksValidator.create({ source: JSON.stringify(keySet(key)) }, CONTEXT);
  try {
    await assertDenied(
      validator,
      request(await sign(key, { exp: null })),
      /^token validation failed: "exp" not satisfied: token has no expiry time \(exp\)/,
    );
  } finally {
    validator.close();
  }
});

Deno.test("tokens without kid, with an unknown kid, or signed by another key are refused", async () => {
  const key = await makeKey("k1");
  const impostor = await makeKey("k1"); // same kid, different key
  const stranger = await makeKey("k2");
  const validator = await JwksValidator.create({ source: JSON.stringify(keySet(key)) }, CONTEXT);
  try {
    await assertDenied(validator, request(await sign(key, { kid: null })), /token has no kid/);
    await assertDenied(
      validator,
      request(await sign(stranger)),
      /token kid "k2" \(alg "ES256"\) matches no key/,
    );
    await assertDenied(validator, request(await sign(impostor)), /token signature invalid/);
    // A tampered payload fails the signature too.
    const [header, , signature] = (await sign(key)).split(".");
    const forged = btoa(JSON.stringify({ sub: "spiffe://public/ns/default/myapp", aud: AUDIENCE }))
      .replace(/=+$/, "").replace(/\+/g, "-").replace(/\//g, "_");
    await assertDenied(
      validator,
      request(`${header}.${forged}.${signature}`),
      /token signature invalid/,
    );
    // An RS256 token whose kid names the ES256 key: no key matches that kid and alg.
    const rs = await makeKey("k1", "RS256");
    await assertDenied(validator, request(await sign(rs)), /matches no key/);
    await assertDenied(validator, request("not-a-jwt"), /token is not a valid JWT/);
    await assertDenied(validator, request(""), /does not contain a token/);
  } finally {
    validator.close();
  }
});

Deno.test("unsigned and HMAC tokens are refused", async () => {
  const key = await makeKey("k1");
  const validator = await JwksValidator.create({ source: JSON.stringify(keySet(key)) }, CONTEXT);
  try {
    const encode = (value: unknown) =>
      btoa(JSON.stringify(value)).replace(/=+$/, "").replace(/\+/g, "-").replace(/\//g, "_");
    const claims = { sub: "spiffe://public/ns/default/myapp", aud: AUDIENCE, exp: NOW() + 600 };
    const none = `${encode({ alg: "none", kid: "k1" })}.${encode(claims)}.`;
    await assertDenied(validator, request(none), /token algorithm "none" cannot be used/);
    const hs = await new SignJWT(claims)
      .setProtectedHeader({ alg: "HS256", kid: "k1" })
      .sign(new TextEncoder().encode("x".repeat(32)));
    await assertDenied(validator, request(hs), /token algorithm "HS256" cannot be used/);
  } finally {
    validator.close();
  }
});

Deno.test("several keys sharing a kid: any of them may verify the token", async () => {
  const first = await makeKey("shared");
  const second = await makeKey("shared");
  const validator = await JwksValidator.create(
    { source: JSON.stringify(keySet(first, second)) },
    CONTEXT,
  );
  try {
    await validator.validate(request(await sign(first)));
    await validator.validate(request(await sign(second)));
    await assertDenied(
      validator,
      request(await sign(second, { exp: NOW() - 3600, iat: NOW() - 7200 })),
      /token expired/,
    );
    await assertDenied(
      validator,
      request(await sign(await makeKey("shared"))),
      /signature invalid/,
    );
  } finally {
    validator.close();
  }
});

Deno.test("the common checks still apply", async () => {
  const key = await makeKey("k1");
  const validator = await JwksValidator.create({ source: JSON.stringify(keySet(key)) }, CONTEXT);
  try {
    const token = await sign(key);
    await assertDenied(
      validator,
      request(token, { id: "" }),
      /invalid request: parameter app-id cannot be empty/,
    );
    await assertDenied(validator, request(token, { id: "a.b" }), /cannot contain dots/);
    await assertDenied(validator, request(token, { namespace: "" }), /namespace is required/);
    await assertDenied(validator, request(token, { csr: new Uint8Array() }), /CSR is required/);
    await assertDenied(validator, request(token, { trustDomain: "Bad!" }), /trust domain/);
    await assertDenied(validator, request(token, { namespace: "a b" }), /invalid request/);
  } finally {
    validator.close();
  }
});

// ---------------------------------------------------------------------------------------------
// Inline sources and configuration errors.

Deno.test("inline JWKS as JSON and as base64 (standard, URL-safe, wrapped)", async () => {
  const key = await makeKey("k1");
  const json = JSON.stringify(keySet(key), null, 2);
  const std = base64(json);
  const urlSafe = std.replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  const wrapped = std.replace(/(.{76})/g, "$1\n");
  for (
    const [source, kind] of [[json, "inline JWKS"], [std, "inline JWKS (base64)"], [
      urlSafe,
      "inline JWKS (base64)",
    ], [wrapped, "inline JWKS (base64)"]]
  ) {
    const validator = await JwksValidator.create({ source }, CONTEXT);
    try {
      assert.equal(validator.source.kind, "inline");
      assert.equal(validator.source.description, kind);
      await validator.validate(request(await sign(key)));
      assert.equal(await validator.source.refresh(), false);
    } finally {
      validator.close();
    }
  }
});

Deno.test("a source that is not a usable key set makes the factory throw a clear error", async () => {
  const key = await makeKey("k1");
  await assertCreateFails(
    { source: '{"foo": 1}' },
    /inline JWKS: not a JSON Web Key Set/,
    /"keys"/,
  );
  await assertCreateFails({ source: '{"keys": [' }, /inline JWKS: not valid JSON/);
  await assertCreateFails(
    { source: base64('{"keys": {}}') },
    /inline JWKS \(base64\): not a JSON Web Key Set/,
  );
  await assertCreateFails({ source: '{"keys": [{"kid": "x"}]}' }, /key 0 has no "kty"/);
  const { privateKey } = await generateKeyPair("ES256", { extractable: true });
  const privateJwk = { ...(await exportJWK(privateKey)), kid: "leak" };
  await assertCreateFails(
    { source: JSON.stringify({ keys: [key.jwk, privateJwk] }) },
    /key 1 \(kid "leak"\) holds private or secret key material/,
  );
  await assertCreateFails(
    { source: "/nonexistent/dir/jwks.json" },
    /JWKS source "\/nonexistent\/dir\/jwks\.json": no such file, and not an http\(s\) URL/,
  );
  await assertCreateFails({}, /option "source" is required/);
  await assertCreateFails({ source: "  " }, /option "source" is required/);
  await assertCreateFails(
    { source: JSON.stringify(keySet(key)), minRefreshInterval: "10 minutes" },
    /option "minRefreshInterval": invalid duration/,
  );
  await assertCreateFails(
    { source: JSON.stringify(keySet(key)), requestTimeout: 30 },
    /option "requestTimeout": must be a duration string/,
  );
  await assertCreateFails(
    { source: JSON.stringify(keySet(key)), requestTimeout: "-1s" },
    /option "requestTimeout": must be zero or positive/,
  );
  const dir = await Deno.makeTempDir({ prefix: "jwks-" });
  try {
    await assertCreateFails({ source: dir }, /JWKS file .*: is a directory/);
    const file = join(dir, "jwks.json");
    await Deno.writeTextFile(file, "[]");
    await assertCreateFails(
      { source: file },
      new RegExp(`JWKS file ${file}: not a JSON Web Key Set`),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
  // Errors are JwksSourceErrors.
  await assert.rejects(JwksValidator.create({ source: "{}" }, CONTEXT), JwksSourceError);
  // A sentry identity that cannot form a SPIFFE ID.
  await assert.rejects(
    JwksValidator.create({ source: JSON.stringify(keySet(key)) }, {
      sentryTrustDomain: "Bad Domain",
      sentryNamespace: SENTRY_NS,
    }),
    /cannot form sentry's SPIFFE ID/,
  );
});

Deno.test("options: durations in Go syntax; empty or zero means the default", () => {
  assert.deepEqual(parseJwksSourceOptions({ source: " x " }), { source: "x" });
  assert.deepEqual(
    parseJwksSourceOptions({
      source: "https://a/jwks",
      caCertificate: "pem",
      minRefreshInterval: "1m30s",
      requestTimeout: "2s",
      unknownOption: true,
    }),
    {
      source: "https://a/jwks",
      caCertificate: "pem",
      minRefreshIntervalMs: 90_000,
      requestTimeoutMs: 2000,
    },
  );
  assert.deepEqual(
    parseJwksSourceOptions({ source: "x", minRefreshInterval: "0", requestTimeout: "" }),
    { source: "x" },
  );
});

Deno.test("minRefreshInterval defaults to 10m and is at least 1s", async () => {
  const source = JSON.stringify(keySet(await makeKey("k1")));
  for (
    const [minRefreshInterval, expected] of [[undefined, 600_000], ["100ms", 1000], [
      "2m",
      120_000,
    ]] as const
  ) {
    const validator = await JwksValidator.create({ source, minRefreshInterval }, CONTEXT);
    try {
      assert.equal(validator.source.minRefreshIntervalMs, expected);
    } finally {
      validator.close();
    }
  }
});

// ---------------------------------------------------------------------------------------------
// File source: watched, rotated by rename, broken files ignored.

Deno.test("a rotated JWKS file is picked up without restart; a broken one keeps the last set", async () => {
  const dir = await Deno.makeTempDir({ prefix: "jwks-file-" });
  const file = join(dir, "jwks.json");
  const oldKey = await makeKey("old");
  const newKey = await makeKey("new");
  await Deno.writeTextFile(file, JSON.stringify(keySet(oldKey)));
  const errors: Error[] = [];
  const updates: number[] = [];
  const validator = await JwksValidator.create({ source: file }, {
    ...CONTEXT,
    onError: (error) => errors.push(error),
    onUpdate: (set) => updates.push(set.keys.length),
  });
  try {
    assert.equal(validator.source.kind, "file");
    assert.equal(validator.source.description, `JWKS file ${file}`);
    const oldToken = await sign(oldKey);
    const newToken = await sign(newKey);
    await validator.validate(request(oldToken));
    await assertDenied(validator, request(newToken), /matches no key/);

    await replaceFile(file, JSON.stringify(keySet(newKey)));
    await eventually(async () => {
      await validator.validate(request(newToken));
    });
    await assertDenied(validator, request(oldToken), /matches no key/);
    assert.deepEqual(updates, [1]);

    // A broken file: reported, and the last good set stays in force.
    await replaceFile(file, '{"keys": [');
    await eventually(() => {
      assert.equal(errors.length, 1);
      return Promise.resolve();
    });
    assert.match(errors[0].message, new RegExp(`^JWKS file ${file}: not valid JSON`));
    await validator.validate(request(newToken));

    // In-place rewrite (no rename) with both keys.
    await Deno.writeTextFile(file, JSON.stringify(keySet(oldKey, newKey)));
    await eventually(async () => {
      await validator.validate(request(oldToken));
    });
    await validator.validate(request(newToken));
  } finally {
    validator.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a JWKS file behind a Kubernetes-style ..data symlink swap is reloaded", async () => {
  const dir = await Deno.makeTempDir({ prefix: "jwks-k8s-" });
  const oldKey = await makeKey("old");
  const newKey = await makeKey("new");
  // <dir>/jwks.json -> ..data/jwks.json, ..data -> ..v1
  await Deno.mkdir(join(dir, "..v1"));
  await Deno.writeTextFile(join(dir, "..v1", "jwks.json"), JSON.stringify(keySet(oldKey)));
  await Deno.symlink("..v1", join(dir, "..data"));
  await Deno.symlink(join("..data", "jwks.json"), join(dir, "jwks.json"));
  const validator = await JwksValidator.create({ source: join(dir, "jwks.json") }, CONTEXT);
  try {
    await validator.validate(request(await sign(oldKey)));
    await Deno.mkdir(join(dir, "..v2"));
    await Deno.writeTextFile(join(dir, "..v2", "jwks.json"), JSON.stringify(keySet(newKey)));
    await Deno.symlink("..v2", join(dir, "..data_tmp"));
    await Deno.rename(join(dir, "..data_tmp"), join(dir, "..data"));
    await Deno.remove(join(dir, "..v1"), { recursive: true });
    const newToken = await sign(newKey);
    await eventually(async () => {
      await validator.validate(request(newToken));
    });
    await assertDenied(validator, request(await sign(oldKey)), /matches no key/);
  } finally {
    validator.close();
    await Deno.remove(dir, { recursive: true });
  }
});

// ---------------------------------------------------------------------------------------------
// URL source over https with a private CA.

Deno.test("https source: private CA, unknown kid refetches once, minRefreshInterval limits refetches", async () => {
  const tls = await makeTls();
  const key1 = await makeKey("k1");
  const key2 = await makeKey("k2");
  const key3 = await makeKey("k3");
  const server = await startJwksServer(keySet(key1));
  const validator = await JwksValidator.create({
    source: server.url,
    caCertificate: tls.caPem,
    minRefreshInterval: "1s",
    requestTimeout: "5s",
  }, CONTEXT);
  try {
    assert.equal(validator.source.kind, "url");
    assert.equal(validator.source.description, `JWKS URL ${server.url}`);
    assert.equal(server.state.requests, 1);
    await validator.validate(request(await sign(key1)));
    assert.equal(server.state.requests, 1, "known kid: no fetch");

    // key2 is published; a token with it right after the initial fetch is refused without a
    // fetch (minRefreshInterval has not passed)...
    server.state.body = JSON.stringify(keySet(key1, key2));
    const token2 = await sign(key2);
    await assertDenied(validator, request(token2), /token kid "k2" .*matches no key/);
    assert.equal(server.state.requests, 1, "refetch within minRefreshInterval");

    // ...and accepted after it, with exactly one refetch.
    await delay(1100);
    await validator.validate(request(token2));
    assert.equal(server.state.requests, 2, "one refetch for the unknown kid");
    await validator.validate(request(token2));
    assert.equal(server.state.requests, 2);

    // Another unknown kid right away: no refetch, refused.
    server.state.body = JSON.stringify(keySet(key1, key2, key3));
    const token3 = await sign(key3);
    await Promise.all([
      assertDenied(validator, request(token3), /matches no key/),
      assertDenied(validator, request(token3), /matches no key/),
    ]);
    assert.equal(server.state.requests, 2, "minRefreshInterval limits refetches");

    // Concurrent tokens with an unknown kid share one refetch.
    await delay(1100);
    await Promise.all([
      validator.validate(request(token3)),
      validator.validate(request(token3)),
      validator.validate(request(token3)),
    ]);
    assert.equal(server.state.requests, 3);
  } finally {
    validator.close();
    await server.close();
  }
});

Deno.test("https source: when the server goes down the last good set keeps working", async () => {
  const tls = await makeTls();
  const key1 = await makeKey("k1");
  const key2 = await makeKey("k2");
  const server = await startJwksServer(keySet(key1));
  const errors: Error[] = [];
  const validator = await JwksValidator.create({
    source: server.url,
    caCertificate: tls.caPem,
    minRefreshInterval: "1s",
  }, { ...CONTEXT, onError: (error) => errors.push(error) });
  try {
    await server.close();
    await delay(1100);
    // The unknown kid triggers a refresh, which fails: reported, and the old set still works.
    await assertDenied(validator, request(await sign(key2)), /matches no key/);
    assert.equal(errors.length, 1);
    assert.match(errors[0].message, new RegExp(`^JWKS URL ${server.url}: `));
    await validator.validate(request(await sign(key1)));
  } finally {
    validator.close();
  }
});

Deno.test("https source: a failed refresh (bad document, HTTP error) keeps the last good set", async () => {
  const tls = await makeTls();
  const key1 = await makeKey("k1");
  const server = await startJwksServer(keySet(key1));
  const errors: string[] = [];
  const validator = await JwksValidator.create({
    source: server.url,
    caCertificate: tls.caPem,
    minRefreshInterval: "1s",
  }, { ...CONTEXT, onError: (error) => errors.push(error.message) });
  try {
    const unknown = await sign(await makeKey("k9"));
    server.state.body = '{"not": "a set"}';
    await delay(1100);
    await assertDenied(validator, request(unknown), /matches no key/);
    server.state.status = 503;
    await delay(1100);
    await assertDenied(validator, request(unknown), /matches no key/);
    assert.deepEqual(errors, [
      `JWKS URL ${server.url}: not a JSON Web Key Set: expected an object with a "keys" array`,
      `JWKS URL ${server.url}: HTTP 503 Service Unavailable`,
    ]);
    await validator.validate(request(await sign(key1)));
    assert.equal(server.state.requests, 3);
  } finally {
    validator.close();
    await server.close();
  }
});

Deno.test("https source: refreshed periodically, so a removed key stops working", async () => {
  const tls = await makeTls();
  const key1 = await makeKey("k1");
  const key2 = await makeKey("k2");
  // No Cache-Control: the set is refreshed every minRefreshInterval.
  const server = await startJwksServer(keySet(key1, key2), "");
  const updates: number[] = [];
  const validator = await JwksValidator.create({
    source: server.url,
    caCertificate: tls.caPem,
    minRefreshInterval: "1s",
  }, { ...CONTEXT, onUpdate: (set) => updates.push(set.keys.length) });
  try {
    const token1 = await sign(key1);
    await validator.validate(request(token1));
    server.state.body = JSON.stringify(keySet(key2)); // key1 revoked
    await eventually(() => assertDenied(validator, request(token1), /matches no key/), 4000);
    assert.ok(server.state.requests >= 2);
    assert.deepEqual(updates, [1]);
    await validator.validate(request(await sign(key2)));
  } finally {
    validator.close();
    await server.close();
  }
});

Deno.test("https source: the CA must be trusted; caCertificate may be a file; redirects are followed", async () => {
  const tls = await makeTls();
  const key = await makeKey("k1");
  const server = await startJwksServer(keySet(key));
  const dir = await Deno.makeTempDir({ prefix: "jwks-ca-" });
  try {
    // Without the CA the server's certificate is not trusted.
    await assertCreateFails(
      { source: server.url },
      new RegExp(`^JWKS URL ${server.url}: .*cert`, "i"),
    );
    await assertCreateFails(
      {
        source: server.url,
        caCertificate: "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
      },
      /option "caCertificate" is not a valid PEM certificate/,
    );
    await assertCreateFails(
      { source: server.url, caCertificate: join(dir, "missing.pem") },
      /option "caCertificate" is neither a PEM certificate nor a readable file \(file not found\)/,
    );
    const caFile = join(dir, "ca.pem");
    await Deno.writeTextFile(caFile, tls.caPem);
    const moved = server.url.replace("/jwks.json", "/moved");
    const validator = await JwksValidator.create({ source: moved, caCertificate: caFile }, CONTEXT);
    try {
      await validator.validate(request(await sign(key)));
    } finally {
      validator.close();
    }
    // A 404 at start is an error naming the URL.
    server.state.status = 404;
    await assertCreateFails({ source: server.url, caCertificate: tls.caPem }, /: HTTP 404/);
  } finally {
    await server.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("https source: requestTimeout bounds a server that does not answer", async () => {
  const tls = await makeTls();
  const server = await startJwksServer({ keys: [] });
  server.state.hang = true;
  try {
    const started = Date.now();
    await assertCreateFails(
      { source: server.url, caCertificate: tls.caPem, requestTimeout: "300ms" },
      new RegExp(`^JWKS URL ${server.url}: request timed out after 300ms$`),
    );
    assert.ok(Date.now() - started < 3000);
  } finally {
    await server.close();
  }
});

Deno.test("closing a validator while its URL source is fetching settles cleanly", async () => {
  const tls = await makeTls();
  const key1 = await makeKey("k1");
  const server = await startJwksServer(keySet(key1));
  const errors: Error[] = [];
  const validator = await JwksValidator.create({
    source: server.url,
    caCertificate: tls.caPem,
    minRefreshInterval: "1s",
  }, { ...CONTEXT, onError: (error) => errors.push(error) });
  try {
    server.state.hang = true;
    await delay(1100);
    const pending = assertDenied(
      validator,
      request(await sign(await makeKey("k2"))),
      /matches no key/,
    );
    await delay(200);
    validator.close();
    await pending;
    assert.deepEqual(errors, []);
  } finally {
    validator.close();
    await server.close();
  }
});

Deno.test("token times are read against the validator's clock, not the system's", async () => {
  const key = await makeKey("k1");
  const yearAgo = NOW() - 365 * 86_400;
  // Issued and expiring a year ago: good by a clock set then, expired by the system clock.
  const token = await sign(key, { iat: yearAgo, exp: yearAgo + 600 });
  const then = await JwksValidator.create(
    { source: JSON.stringify(keySet(key)) },
    { ...CONTEXT, now: () => new Date((yearAgo + 60) * 1000) },
  );
  const today = await JwksValidator.create({ source: JSON.stringify(keySet(key)) }, CONTEXT);
  try {
    await then.validate(request(token));
    await assertDenied(today, request(token), /"exp" not satisfied: token expired/);
    // A token issued "now" is from the future for the clock set a year back.
    await assertDenied(then, request(await sign(key)), /not satisfied/);
  } finally {
    then.close();
    today.close();
  }
});

Deno.test("a key set cached for a year is not fetched again at once (timer limit)", async () => {
  // Node fires a timer of more than 2^31-1 ms (24.8 days) after 1 ms: a max-age of a year
  // used to refresh the key set in a tight loop.
  const tls = await makeTls();
  const key = await makeKey("k1");
  const server = await startJwksServer(keySet(key), "max-age=31536000");
  const validator = await JwksValidator.create({
    source: server.url,
    caCertificate: tls.caPem,
    minRefreshInterval: "1s",
  }, CONTEXT);
  try {
    assert.equal(server.state.requests, 1);
    await delay(300);
    assert.equal(server.state.requests, 1, "no refresh within 300 ms of a one-year max-age");
    await validator.validate(request(await sign(key)));
  } finally {
    validator.close();
    await server.close();
  }
});
