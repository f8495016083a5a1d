/**
 * src/server/oidc-server.ts on real sockets (port 0): the discovery document (fields, issuer
 * and jwks_uri with and without a path prefix, a fixed issuer, the jwks_uri override), HTTPS
 * with a certificate the client verifies and plain HTTP, Dapr's allowed-hosts check and its
 * X-Forwarded-Host rules (tests/integration/suite/sentry/oidc/custom.go and hostinjection/*),
 * 404/405/307 routing, a key set swapped while serving, start-up refusals, the wait for TLS
 * files, and close() freeing the port.
 */
import assert from "node:assert/strict";
import { request as httpRequest, type RequestOptions } from "node:http";
import { request as httpsRequest } from "node:https";
import { Buffer } from "node:buffer";
import { connect } from "node:net";
import { join } from "node:path";
import { opensslServerTls, type ServerTls } from "../helpers/openssl.ts";
import {
  hostAllowed,
  type OidcServer,
  type OidcServerOptions,
  splitHostPort,
  startOidcServer,
} from "../../src/server/oidc-server.ts";

const JWKS = '{"keys":[{"kty":"RSA","use":"sig","kid":"k1","alg":"RS256","n":"AQAB","e":"AQAB"}]}';
const DISCOVERY = "/.well-known/openid-configuration";

interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

interface Ask {
  method?: string;
  /** The Host header; default `localhost:<port>`. */
  host?: string;
  headers?: Record<string, string>;
  /** Speak HTTPS trusting this CA. */
  ca?: string;
}

/** One request on a fresh connection (no agent: nothing stays open for the sanitizers). */
function ask(server: OidcServer, path: string, options: Ask = {}): Promise<Reply> {
  const request = options.ca === undefined ? httpRequest : httpsRequest;
  const params: RequestOptions & { ca?: string; servername?: string } = {
    host: "127.0.0.1",
    port: server.port,
    path,
    method: options.method ?? "GET",
    agent: false,
    headers: { host: options.host ?? `localhost:${server.port}`, ...options.headers },
    ...(options.ca === undefined ? {} : { ca: options.ca, servername: "localhost" }),
  };
  return new Promise((resolve, reject) => {
    const req = request(params, (response) => {
      const chunks: Uint8Array[] = [];
      response.on("data", (chunk: Uint8Array) => chunks.push(chunk));
      response.on("end", () =>
        resolve({
          status: response.statusCode ?? 0,
          headers: response.headers,
          body: Buffer.concat(chunks).toString("utf8"),
        }));
      response.on("error", reject);
    });
    req.on("error", reject);
    req.end();
  });
}

/** Writes `text` on a raw connection and returns everything the server sent back. */
function raw(server: OidcServer, text: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(server.port, "127.0.0.1", () => socket.write(text));
    const chunks: Uint8Array[] = [];
    socket.on("data", (chunk: Uint8Array) => chunks.push(chunk));
    socket.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
    socket.on("error", reject);
  });
}

/** Starts a plain-HTTP server on 127.0.0.1:0 with `options`, runs `body`, always closes. */
async function withServer(
  options: Partial<OidcServerOptions>,
  body: (server: OidcServer) => Promise<void>,
): Promise<void> {
  const server = await startOidcServer({
    listenAddress: "127.0.0.1",
    port: 0,
    tlsEnabled: false,
    jwks: JWKS,
    signingAlgorithm: "RS256",
    ...options,
  });
  try {
    await body(server);
  } finally {
    await server.close();
  }
}

function json(reply: Reply): Record<string, unknown> {
  assert.equal(reply.status, 200, reply.body);
  return JSON.parse(reply.body);
}

let tlsMaterial: Promise<ServerTls> | undefined;
/** One openssl CA and server certificate for the whole file. */
function serverTls(): Promise<ServerTls> {
  return tlsMaterial ??= opensslServerTls("oidc-test-ca");
}

Deno.test("the discovery document has Dapr's fields, headers and encoding", async () => {
  await withServer({}, async (server) => {
    const reply = await ask(server, DISCOVERY);
    const base = `http://localhost:${server.port}`;
    assert.equal(reply.status, 200);
    assert.equal(reply.headers["content-type"], "application/json");
    assert.equal(reply.headers["cache-control"], "public, max-age=3600");
    assert.equal(
      reply.body,
      JSON.stringify({
        issuer: base,
        jwks_uri: `${base}/jwks.json`,
        response_types_supported: ["id_token"],
        subject_types_supported: ["public"],
        id_token_signing_alg_values_supported: ["RS256"],
        scopes_supported: ["openid"],
        claims_supported: ["sub", "iss", "aud", "exp", "iat", "nbf", "use"],
      }) + "\n",
      "Go's json.Encoder: compact, field order of Dapr's struct, trailing newline",
    );
    const keys = await ask(server, "/jwks.json");
    assert.equal(keys.status, 200);
    assert.equal(keys.body, JWKS, "the key set is served byte for byte");
    assert.equal(keys.headers["content-type"], "application/json");
    assert.equal(keys.headers["cache-control"], "public, max-age=3600");
  });
});

Deno.test("issuer and jwks_uri follow the prefix, a fixed issuer and the jwks_uri override", async (t) => {
  const cases: {
    name: string;
    options: Partial<OidcServerOptions>;
    path: string;
    issuer: (base: string) => string;
    jwksUri: (base: string) => string;
    jwksPath: string;
  }[] = [
    {
      name: "prefix: issuer from the host, jwks_uri with the prefix",
      options: { pathPrefix: "/auth" },
      path: "/auth" + DISCOVERY,
      issuer: (base) => base,
      jwksUri: (base) => `${base}/auth/jwks.json`,
      jwksPath: "/auth/jwks.json",
    },
    {
      name: "prefix with a trailing slash",
      options: { pathPrefix: "/auth/" },
      path: "/auth" + DISCOVERY,
      issuer: (base) => base,
      jwksUri: (base) => `${base}/auth/jwks.json`,
      jwksPath: "/auth/jwks.json",
    },
    {
      name: "prefix `/` is no prefix",
      options: { pathPrefix: "/" },
      path: DISCOVERY,
      issuer: (base) => base,
      jwksUri: (base) => `${base}/jwks.json`,
      jwksPath: "/jwks.json",
    },
    {
      name: "fixed issuer with the prefix in it (Dapr's custom.go): jwks_uri from its origin",
      options: { pathPrefix: "/auth", jwtIssuer: "https://localhost:9443/auth" },
      path: "/auth" + DISCOVERY,
      issuer: () => "https://localhost:9443/auth",
      jwksUri: () => "https://localhost:9443/auth/jwks.json",
      jwksPath: "/auth/jwks.json",
    },
    {
      name: "fixed issuer's own path is dropped from jwks_uri",
      options: { jwtIssuer: "https://auth.example.org/tenant/x" },
      path: DISCOVERY,
      issuer: () => "https://auth.example.org/tenant/x",
      jwksUri: () => "https://auth.example.org/jwks.json",
      jwksPath: "/jwks.json",
    },
    {
      name: 'empty issuer (Dapr passes a pointer to "") means derived',
      options: { jwtIssuer: "" },
      path: DISCOVERY,
      issuer: (base) => base,
      jwksUri: (base) => `${base}/jwks.json`,
      jwksPath: "/jwks.json",
    },
    {
      name: "jwks_uri override is served verbatim",
      options: { pathPrefix: "/auth", jwksUri: "https://external.example.com/jwks" },
      path: "/auth" + DISCOVERY,
      issuer: (base) => base,
      jwksUri: () => "https://external.example.com/jwks",
      jwksPath: "/auth/jwks.json",
    },
    {
      name: "issuer scheme lower-cased as Go's url.String",
      options: { jwtIssuer: "HTTPS://Auth.Example.org", jwksUri: "https://k.example/keys" },
      path: DISCOVERY,
      issuer: () => "https://Auth.Example.org",
      jwksUri: () => "https://k.example/keys",
      jwksPath: "/jwks.json",
    },
  ];
  for (const c of cases) {
    await t.step(c.name, async () => {
      await withServer(c.options, async (server) => {
        const base = `http://localhost:${server.port}`;
        const doc = json(await ask(server, c.path));
        assert.equal(doc.issuer, c.issuer(base));
        assert.equal(doc.jwks_uri, c.jwksUri(base));
        assert.equal((await ask(server, c.jwksPath)).body, JWKS);
        if (c.jwksPath !== "/jwks.json") {
          assert.equal((await ask(server, DISCOVERY)).status, 404, "outside the prefix");
          assert.equal((await ask(server, "/jwks.json")).status, 404, "outside the prefix");
        }
      });
    });
  }
});

Deno.test("TLS: the client verifies the served certificate; URLs say https", async (t) => {
  const tls = await serverTls();
  const dir = await Deno.makeTempDir({ prefix: "oidc-tls-" });
  try {
    const certFile = join(dir, "oidc.crt");
    const keyFile = join(dir, "oidc.key");
    await Deno.writeTextFile(certFile, tls.certPem);
    await Deno.writeTextFile(keyFile, tls.keyPem);
    const sources: { name: string; options: Partial<OidcServerOptions> }[] = [
      { name: "PEM text", options: { tlsCertPem: tls.certPem, tlsKeyPem: tls.keyPem } },
      { name: "files", options: { tlsCertFile: certFile, tlsKeyFile: keyFile } },
      {
        name: "files with tlsEnabled false (Dapr still serves TLS when both are given)",
        options: { tlsEnabled: false, tlsCertFile: certFile, tlsKeyFile: keyFile },
      },
    ];
    for (const source of sources) {
      await t.step(source.name, async () => {
        await withServer({ tlsEnabled: true, ...source.options }, async (server) => {
          assert.equal(server.tls, true);
          const base = `https://localhost:${server.port}`;
          const doc = json(await ask(server, DISCOVERY, { ca: tls.caPem }));
          assert.equal(doc.issuer, base);
          assert.equal(doc.jwks_uri, `${base}/jwks.json`);
          assert.equal((await ask(server, "/jwks.json", { ca: tls.caPem })).body, JWKS);
          const other = await opensslServerTls("oidc-other-ca");
          await assert.rejects(
            ask(server, DISCOVERY, { ca: other.caPem }),
            "a client not trusting the CA is refused by its own TLS check",
          );
          await assert.rejects(ask(server, DISCOVERY), "plain HTTP to the TLS port fails");
        });
      });
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("plain HTTP: URLs say http and X-Forwarded-Proto is ignored, as in Dapr", async () => {
  await withServer({}, async (server) => {
    assert.equal(server.tls, false);
    const doc = json(
      await ask(server, DISCOVERY, { headers: { "x-forwarded-proto": "https" } }),
    );
    assert.equal(doc.issuer, `http://localhost:${server.port}`);
  });
});

Deno.test("allowed hosts and X-Forwarded-Host, as Dapr's custom.go and hostinjection tests", async (t) => {
  const attacker = "attacker.example.com";
  const custom = ["localhost", "example.com", "api.example.com"];
  const cases: {
    name: string;
    options: Partial<OidcServerOptions>;
    host?: string;
    forwarded?: string;
    status: number;
    /** Expected issuer; `BASE` stands for http://localhost:<port>. */
    issuer?: string;
    jwksUri?: string;
  }[] = [
    {
      name: "no list: any host, issuer from Host",
      options: {},
      host: "any-domain.com",
      status: 200,
      issuer: "http://any-domain.com",
      jwksUri: "http://any-domain.com/jwks.json",
    },
    {
      name: "forwarded.go: no list, X-Forwarded-Host ignored",
      options: {},
      forwarded: attacker,
      status: 200,
      issuer: "BASE",
      jwksUri: "BASE/jwks.json",
    },
    {
      name: "wildcard.go: `*` lets it through but X-Forwarded-Host is ignored",
      options: { allowedHosts: ["*"] },
      forwarded: attacker,
      status: 200,
      issuer: "BASE",
      jwksUri: "BASE/jwks.json",
    },
    { name: "listed host", options: { allowedHosts: custom }, host: "localhost", status: 200 },
    {
      name: "listed host, issuer from it",
      options: { allowedHosts: custom },
      host: "example.com",
      status: 200,
      issuer: "http://example.com",
    },
    {
      name: "unlisted host",
      options: { allowedHosts: custom },
      host: "forbidden.com",
      status: 403,
    },
    {
      name: "listed host with a port",
      options: { allowedHosts: custom },
      host: "api.example.com:8443",
      status: 200,
      issuer: "http://api.example.com:8443",
      jwksUri: "http://api.example.com:8443/jwks.json",
    },
    {
      name: "listed X-Forwarded-Host wins over an unlisted Host and names the issuer",
      options: { allowedHosts: custom },
      host: "forbidden.com",
      forwarded: "example.com",
      status: 200,
      issuer: "http://example.com",
      jwksUri: "http://example.com/jwks.json",
    },
    {
      name: "unlisted X-Forwarded-Host is refused even with a listed Host",
      options: { allowedHosts: custom },
      host: "localhost",
      forwarded: "forbidden.com",
      status: 403,
    },
    {
      name: "fixed issuer: a listed X-Forwarded-Host changes neither issuer nor jwks_uri",
      options: { allowedHosts: custom, jwtIssuer: "https://issuer.example" },
      forwarded: "example.com",
      status: 200,
      issuer: "https://issuer.example",
      jwksUri: "https://issuer.example/jwks.json",
    },
    {
      name: "host:port entry matches exactly",
      options: { allowedHosts: ["example.com:8443"] },
      host: "example.com:8443",
      status: 200,
    },
    {
      name: "host:port entry does not match another port",
      options: { allowedHosts: ["example.com:8443"] },
      host: "example.com:9999",
      status: 403,
    },
    {
      name: "host:port entry does not match the bare host",
      options: { allowedHosts: ["example.com:8443"] },
      host: "example.com",
      status: 403,
    },
    {
      name: "matching is case-sensitive (Go's slices.Contains)",
      options: { allowedHosts: ["example.com"] },
      host: "EXAMPLE.com",
      status: 403,
    },
  ];
  for (const c of cases) {
    await t.step(c.name, async () => {
      await withServer(c.options, async (server) => {
        const base = `http://localhost:${server.port}`;
        for (const path of [DISCOVERY, "/jwks.json"]) {
          const reply = await ask(server, path, {
            host: c.host,
            headers: c.forwarded ? { "x-forwarded-host": c.forwarded } : {},
          });
          assert.equal(reply.status, c.status, `${path}: ${reply.body}`);
          if (c.status === 403) {
            assert.equal(reply.body, "Forbidden: unauthorized domain\n");
            assert.equal(reply.headers["content-type"], "text/plain; charset=utf-8");
          }
        }
        if (c.status !== 200) return;
        const doc = json(
          await ask(server, DISCOVERY, {
            host: c.host,
            headers: c.forwarded ? { "x-forwarded-host": c.forwarded } : {},
          }),
        );
        if (c.issuer) assert.equal(doc.issuer, c.issuer.replace("BASE", base));
        if (c.jwksUri) assert.equal(doc.jwks_uri, c.jwksUri.replace("BASE", base));
        if (c.forwarded === attacker) {
          assert.ok(!String(doc.issuer).includes(attacker));
          assert.ok(!String(doc.jwks_uri).includes(attacker));
        }
      });
    });
  }
});

Deno.test("routing: 404 elsewhere, 405 for every method but GET, 403 before 405", async (t) => {
  await withServer({ allowedHosts: ["localhost"] }, async (server) => {
    await t.step("paths", async () => {
      const paths: [string, number, string][] = [
        ["/", 404, "404 page not found\n"],
        ["/invalid-endpoint", 404, "404 page not found\n"],
        ["/.well-known/invalid", 404, "404 page not found\n"],
        ["/jwks.json/", 404, "404 page not found\n"],
        ["/jwks.json?x=1", 200, JWKS],
        ["/jwks%2Ejson", 200, JWKS],
        ["//jwks.json", 307, '<a href="/jwks.json">Temporary Redirect</a>.\n\n'],
        ["/a/../jwks.json?q=1", 307, '<a href="/jwks.json?q=1">Temporary Redirect</a>.\n\n'],
      ];
      for (const [path, status, body] of paths) {
        const reply = await ask(server, path, { host: "localhost" });
        assert.equal(reply.status, status, path);
        assert.equal(reply.body, body, path);
      }
      const moved = await ask(server, "//jwks.json", { host: "localhost" });
      assert.equal(moved.headers.location, "/jwks.json");
    });
    await t.step("methods", async () => {
      for (const path of [DISCOVERY, "/jwks.json"]) {
        for (const method of ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]) {
          const reply = await ask(server, path, { method, host: "localhost" });
          assert.equal(reply.status, 405, `${method} ${path}`);
          if (method !== "HEAD") assert.equal(reply.body, "Method not allowed\n");
          assert.equal(reply.headers["x-content-type-options"], "nosniff");
        }
        const refused = await ask(server, path, { method: "POST", host: "evil.example" });
        assert.equal(refused.status, 403, "the host check runs before the method check");
      }
    });
    await t.step("raw requests", async () => {
      const twoHosts = await raw(
        server,
        "GET /jwks.json HTTP/1.1\r\nHost: localhost\r\nHost: evil\r\nConnection: close\r\n\r\n",
      );
      assert.match(twoHosts, /^HTTP\/1\.1 400 /, "two Host headers: Go refuses");
      const star = await raw(
        server,
        "OPTIONS * HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
      );
      assert.match(star, /^HTTP\/1\.1 200 /, "Go's global OPTIONS answer");
    });
  });
});

Deno.test("prefix routing: an escaped slash is not a path separator", async () => {
  await withServer({ pathPrefix: "/auth" }, async (server) => {
    assert.equal((await ask(server, "/auth%2Fjwks.json")).status, 404);
    assert.equal((await ask(server, "/auth/jwks.json")).status, 200);
  });
});

Deno.test("the key set is swapped while serving; empty means 404 on both endpoints", async () => {
  await withServer({ jwks: undefined }, async (server) => {
    const none = await ask(server, "/jwks.json");
    assert.equal(none.status, 404);
    assert.equal(none.body, "JWKS not available\n");
    const noDoc = await ask(server, DISCOVERY);
    assert.equal(noDoc.status, 404);
    assert.equal(noDoc.body, "OIDC configuration not available\n");

    server.setJwks(JWKS);
    assert.equal((await ask(server, "/jwks.json")).body, JWKS);
    assert.equal((await ask(server, DISCOVERY)).status, 200);

    const next = '{"keys":[{"kid":"k2"}]}';
    server.setJwks(new TextEncoder().encode(next));
    assert.equal((await ask(server, "/jwks.json")).body, next, "the next request sees it");

    server.setJwks("");
    assert.equal((await ask(server, "/jwks.json")).status, 404);
  });
});

Deno.test("start-up refuses what Dapr refuses", async (t) => {
  const base: OidcServerOptions = {
    listenAddress: "127.0.0.1",
    port: 0,
    signingAlgorithm: "RS256",
  };
  const cases: { name: string; options: OidcServerOptions; message: RegExp }[] = [
    {
      name: "TLS on (Dapr's default) without a certificate",
      options: { ...base },
      message: /oidc-server-tls-cert-file is required/,
    },
    {
      name: "TLS on without a key",
      options: { ...base, tlsCertPem: "x" },
      message: /oidc-server-tls-key-file is required/,
    },
    {
      name: "no signing algorithm",
      options: { ...base, tlsEnabled: false, signingAlgorithm: "" },
      message: /signature algorithm is required/,
    },
    {
      name: "issuer Go's url.Parse refuses",
      options: { ...base, tlsEnabled: false, jwtIssuer: "https://a.example:x/" },
      message: /invalid JWT issuer/,
    },
    {
      name: "jwks_uri with a control character",
      options: { ...base, tlsEnabled: false, jwksUri: "https://a.example/\n" },
      message: /invalid JWKS URI/,
    },
    {
      name: "prefix without a leading slash",
      options: { ...base, tlsEnabled: false, pathPrefix: "auth" },
      message: /must start with "\/"/,
    },
    {
      name: "unreadable certificate",
      options: { ...base, tlsCertPem: "not a pem", tlsKeyPem: "not a pem" },
      message: /failed to load TLS certificate and key/,
    },
  ];
  const tls = await serverTls();
  const other = await opensslServerTls("oidc-mismatch-ca");
  cases.push({
    name: "key of another certificate (Go's LoadX509KeyPair checks the pair)",
    options: { ...base, tlsCertPem: tls.certPem, tlsKeyPem: other.keyPem },
    message: /failed to load TLS certificate and key: private key does not match/,
  });
  for (const c of cases) {
    await t.step(c.name, async () => {
      await assert.rejects(startOidcServer(c.options), c.message);
    });
  }
});

Deno.test("TLS files are waited for, as Dapr does, and the wait can be aborted", async () => {
  const tls = await serverTls();
  const dir = await Deno.makeTempDir({ prefix: "oidc-wait-" });
  try {
    const tlsCertFile = join(dir, "oidc.crt");
    const tlsKeyFile = join(dir, "oidc.key");
    const options: OidcServerOptions = {
      listenAddress: "127.0.0.1",
      port: 0,
      signingAlgorithm: "RS256",
      jwks: JWKS,
      tlsCertFile,
      tlsKeyFile,
      tlsFilePollMs: 10,
    };
    const aborter = new AbortController();
    const aborted = startOidcServer({ ...options, signal: aborter.signal });
    aborter.abort();
    await assert.rejects(aborted, /stopped waiting/);

    let started = false;
    const starting = startOidcServer(options).then((server) => {
      started = true;
      return server;
    });
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.equal(started, false, "not listening while the files are missing");
    await Deno.writeTextFile(tlsCertFile, tls.certPem);
    await Deno.writeTextFile(tlsKeyFile, tls.keyPem);
    const server = await starting;
    try {
      assert.equal((await ask(server, "/jwks.json", { ca: tls.caPem })).body, JWKS);
    } finally {
      await server.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("defaults: localhost is its IPv4 address, as Go listens", async () => {
  const server = await startOidcServer({ port: 0, tlsEnabled: false, signingAlgorithm: "RS256" });
  try {
    assert.equal(server.address, "127.0.0.1");
  } finally {
    await server.close();
  }
});

Deno.test("close() frees the port and stops answering", async () => {
  const first = await startOidcServer({
    listenAddress: "127.0.0.1",
    port: 0,
    tlsEnabled: false,
    signingAlgorithm: "RS256",
    jwks: JWKS,
  });
  const port = first.port;
  await first.close();
  await assert.rejects(ask(first, "/jwks.json"), "nothing listens after close()");
  const second = await startOidcServer({
    listenAddress: "127.0.0.1",
    port,
    tlsEnabled: false,
    signingAlgorithm: "RS256",
    jwks: JWKS,
  });
  try {
    assert.equal(second.port, port);
    assert.equal((await ask(second, "/jwks.json")).body, JWKS);
  } finally {
    await second.close();
  }
  await assert.rejects(
    (async () => {
      const blocker = await startOidcServer({
        listenAddress: "127.0.0.1",
        port: 0,
        tlsEnabled: false,
        signingAlgorithm: "RS256",
      });
      try {
        await startOidcServer({
          listenAddress: "127.0.0.1",
          port: blocker.port,
          tlsEnabled: false,
          signingAlgorithm: "RS256",
        });
      } finally {
        await blocker.close();
      }
    })(),
    /failed to listen on 127\.0\.0\.1:\d+ for OIDC/,
    "a port in use is a start-up error naming it",
  );
});

Deno.test("hostAllowed and splitHostPort follow Go's net.SplitHostPort", () => {
  const split: [string, string | undefined][] = [
    ["example.com:8443", "example.com"],
    ["example.com:", "example.com"],
    ["example.com", undefined],
    ["[::1]:80", "::1"],
    ["[::1]", undefined],
    ["a:b:c", undefined],
  ];
  for (const [input, expected] of split) assert.equal(splitHostPort(input), expected, input);
  assert.equal(hostAllowed([], "x"), true);
  assert.equal(hostAllowed(["*"], "x"), true);
  assert.equal(hostAllowed(["a.example"], "a.example:1"), true);
  assert.equal(hostAllowed(["a.example"], "b.example:1"), false);
  assert.equal(hostAllowed(["::1"], "[::1]:8080"), true);
});
