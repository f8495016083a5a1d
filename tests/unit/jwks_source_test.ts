/**
 * src/identity/jwks-source.ts driven directly (not through JwksValidator), against real temp
 * files and real local `node:http` / `node:https` servers: every kind of source loads (inline
 * JSON, base64 and base64url, a file, http with a warning, https with a private CA as PEM or
 * file, through a redirect, with credentials kept out of messages); a source that cannot be
 * loaded at open is a JwksSourceError naming it (HTTP status, timeout, TLS, redirects,
 * refused connection, bad documents); a watched file's changes are picked up while broken,
 * private or missing files are reported and the last good set stays; a URL is re-fetched on a
 * timer after max(minRefreshInterval, Cache-Control max-age) with the 1 s floor, failed
 * refreshes are reported naming the URL and keep the last good set; `close()` stops the timer
 * and aborts a request in flight without reporting it.
 */
import assert from "node:assert/strict";
import {
  createServer as createHttpServer,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from "node:http";
import { createServer as createHttpsServer } from "node:https";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import type { JSONWebKeySet } from "jose";
import { JwksSource, MIN_REFRESH_FLOOR_MS } from "../../src/identity/jwks-source.ts";
import { JwksSourceError, type JwksSourceOptions } from "../../src/identity/jwks-options.ts";
import { eventually } from "../helpers/eventually.ts";
import { opensslServerTls, type ServerTls } from "../helpers/openssl.ts";

/**
 * A key set with one public key per kid. JwksSource checks a document's shape (kty, kid, no
 * private members), not the key material, so the coordinates only need to differ per kid.
 */
function keySet(...kids: string[]): JSONWebKeySet {
  return {
    keys: kids.map((kid) => ({
      kty: "OKP",
      crv: "Ed25519",
      kid,
      x: btoa(kid.padEnd(32, ".")).replace(/=+$/, ""),
    })),
  };
}

function base64(text: string): string {
  return btoa(String.fromCharCode(...new TextEncoder().encode(text)));
}

function escape(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Writes `text` to `path` the way editors and rotation tools do: a temp file, then rename. */
async function replaceFile(path: string, text: string): Promise<void> {
  const temp = `${path}.tmp-${crypto.randomUUID()}`;
  await Deno.writeTextFile(temp, text);
  await Deno.rename(temp, path);
}

/** What a source reported through its handlers. */
interface Reports {
  updates: { keySet: JSONWebKeySet; description: string }[];
  errors: Error[];
  warnings: string[];
}

async function openSource(options: JwksSourceOptions): Promise<[JwksSource, Reports]> {
  const reports: Reports = { updates: [], errors: [], warnings: [] };
  const source = await JwksSource.open(options, {
    onUpdate: (keySet, description) => reports.updates.push({ keySet, description }),
    onError: (error) => reports.errors.push(error),
    onWarning: (message) => reports.warnings.push(message),
  });
  return [source, reports];
}

// ---------------------------------------------------------------------------------------------
// A JWKS server on 127.0.0.1 whose answers the test controls.

let tlsMaterial: Promise<ServerTls> | undefined;

/** One test CA and server certificate for 127.0.0.1, shared by this file's tests. */
function makeTls(): Promise<ServerTls> {
  tlsMaterial ??= opensslServerTls("jwks source test CA");
  return tlsMaterial;
}

interface JwksServer {
  /** The set's URL, `<origin>/jwks.json`. */
  url: string;
  origin: string;
  /** How `/jwks.json` answers: with `body` and `status`, never, or by dropping the connection. */
  state: { body: string; status: number; cacheControl?: string; mode: "answer" | "hang" | "reset" };
  /** `performance.now()` of each request for `/jwks.json`. */
  requests: number[];
  /** Requests left unanswered (mode "hang") whose connection the client closed. */
  dropped: number;
  close(): Promise<void>;
}

/**
 * Serves `/jwks.json` as `state` says; `/moved` redirects to it, `/loop` to itself,
 * `/to-http` to plain http, `/hang` never answers, `/not-a-set` is JSON but not a key set,
 * anything else is a 404.
 */
async function startServer(
  protocol: "http" | "https",
  initial: JSONWebKeySet,
  cacheControl?: string,
): Promise<JwksServer> {
  const result: JwksServer = {
    url: "",
    origin: "",
    state: { body: JSON.stringify(initial), status: 200, cacheControl, mode: "answer" },
    requests: [],
    dropped: 0,
    close: () => Promise.resolve(),
  };
  const handler = (req: IncomingMessage, res: ServerResponse) => {
    const { state } = result;
    const redirect = (location: string) => {
      res.writeHead(302, { location });
      res.end();
    };
    switch (req.url) {
      case "/jwks.json": {
        result.requests.push(performance.now());
        if (state.mode === "hang") {
          res.on("close", () => result.dropped++);
          return;
        }
        if (state.mode === "reset") {
          req.socket.destroy();
          return;
        }
        const headers: Record<string, string> = { "content-type": "application/json" };
        if (state.cacheControl !== undefined) headers["cache-control"] = state.cacheControl;
        res.writeHead(state.status, headers);
        res.end(state.body);
        return;
      }
      case "/moved":
        return redirect("/jwks.json");
      case "/loop":
        return redirect("/loop");
      case "/to-http":
        return redirect(`http://127.0.0.1:1/jwks.json`);
      case "/hang":
        return;
      case "/not-a-set":
        res.writeHead(200, { "content-type": "application/json" });
        res.end('{"keys": {}}');
        return;
      default:
        res.writeHead(404);
        res.end();
    }
  };
  let server: Server;
  if (protocol === "https") {
    const tls = await makeTls();
    server = createHttpsServer({ key: tls.keyPem, cert: tls.certPem }, handler);
  } else {
    server = createHttpServer(handler);
  }
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  result.origin = `${protocol}://127.0.0.1:${port}`;
  result.url = `${result.origin}/jwks.json`;
  let closed: Promise<void> | undefined;
  result.close = () => {
    closed ??= new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    });
    return closed;
  };
  return result;
}

// ---------------------------------------------------------------------------------------------
// Loading.

Deno.test("every kind of source loads its key set: inline, base64, file, http, https", async () => {
  const tls = await makeTls();
  const dir = await Deno.makeTempDir({ prefix: "jwks-source-load-" });
  const https = await startServer("https", keySet("served-https"));
  const http = await startServer("http", keySet("served-http"));
  try {
    const file = join(dir, "jwks.json");
    await Deno.writeTextFile(file, JSON.stringify(keySet("from-file")));
    const caFile = join(dir, "ca.pem");
    await Deno.writeTextFile(caFile, tls.caPem);
    const withCredentials = https.url.replace("https://", "https://user:secret@");
    const b64url = base64(JSON.stringify(keySet("inline-b64url"))).replace(/\+/g, "-")
      .replace(/\//g, "_").replace(/=+$/, "");
    const rows: {
      name: string;
      options: JwksSourceOptions;
      kind: JwksSource["kind"];
      description: string;
      kids: string[];
      warning?: RegExp;
    }[] = [
      {
        name: "inline JSON (with surrounding blanks)",
        options: { source: `  ${JSON.stringify(keySet("inline-json", "second"))}\n` },
        kind: "inline",
        description: "inline JWKS",
        kids: ["inline-json", "second"],
      },
      {
        name: "inline base64, wrapped",
        options: {
          source: base64(JSON.stringify(keySet("inline-b64"))).replace(/(.{20})/g, "$1\n"),
        },
        kind: "inline",
        description: "inline JWKS (base64)",
        kids: ["inline-b64"],
      },
      {
        name: "inline base64url, unpadded",
        options: { source: b64url },
        kind: "inline",
        description: "inline JWKS (base64)",
        kids: ["inline-b64url"],
      },
      {
        name: "file",
        options: { source: file },
        kind: "file",
        description: `JWKS file ${file}`,
        kids: ["from-file"],
      },
      {
        name: "http URL (warned about)",
        options: { source: http.url },
        kind: "url",
        description: `JWKS URL ${http.url}`,
        kids: ["served-http"],
        warning: new RegExp(
          `^JWKS URL ${escape(http.url)}: loading a JWKS over plain HTTP .*not recommended`,
        ),
      },
      {
        name: "https URL, CA as PEM",
        options: { source: https.url, caCertificate: tls.caPem },
        kind: "url",
        description: `JWKS URL ${https.url}`,
        kids: ["served-https"],
      },
      {
        name: "https URL, CA as a file",
        options: { source: https.url, caCertificate: caFile },
        kind: "url",
        description: `JWKS URL ${https.url}`,
        kids: ["served-https"],
      },
      {
        name: "https URL that redirects",
        options: { source: `${https.origin}/moved`, caCertificate: tls.caPem },
        kind: "url",
        description: `JWKS URL ${https.origin}/moved`,
        kids: ["served-https"],
      },
      {
        name: "https URL with credentials (not shown)",
        options: { source: withCredentials, caCertificate: tls.caPem },
        kind: "url",
        description: `JWKS URL ${https.url.replace("https://", "https://***@")}`,
        kids: ["served-https"],
      },
    ];
    for (const row of rows) {
      const before = https.requests.length + http.requests.length;
      const [source, reports] = await openSource(row.options);
      try {
        assert.equal(source.kind, row.kind, row.name);
        assert.equal(source.description, row.description, row.name);
        assert.deepEqual(source.keySet, keySet(...row.kids), row.name);
        assert.equal(source.version, 1, row.name);
        const fetched = row.kind === "url" ? 1 : 0;
        assert.equal(https.requests.length + http.requests.length, before + fetched, row.name);
        // Right after loading, an on-demand refresh is within minRefreshInterval: no request.
        assert.equal(await source.refresh(), false, row.name);
        assert.equal(https.requests.length + http.requests.length, before + fetched, row.name);
        assert.equal(reports.warnings.length, row.warning ? 1 : 0, row.name);
        if (row.warning) assert.match(reports.warnings[0], row.warning, row.name);
        assert.deepEqual(reports.updates, [], `${row.name}: the first set is not an update`);
        assert.deepEqual(reports.errors, [], row.name);
      } finally {
        source.close();
      }
    }
  } finally {
    await https.close();
    await http.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a source that cannot be loaded at open is a JwksSourceError naming it", async () => {
  const tls = await makeTls();
  const dir = await Deno.makeTempDir({ prefix: "jwks-source-fail-" });
  const https = await startServer("https", keySet("k1"));
  const gone = await startServer("http", keySet("k1"));
  await gone.close();
  try {
    const broken = join(dir, "broken.json");
    await Deno.writeTextFile(broken, '{"keys": [');
    const ca = tls.caPem;
    const at = (path: string) => `${https.origin}${path}`;
    const rows: { name: string; options: JwksSourceOptions; message: RegExp }[] = [
      {
        name: "inline JSON that is not a key set",
        options: { source: '{"foo": 1}' },
        message: /^inline JWKS: not a JSON Web Key Set: expected an object with a "keys" array$/,
      },
      {
        name: "inline set with a private key",
        options: { source: JSON.stringify({ keys: [{ kty: "EC", kid: "p", d: "x" }] }) },
        message: /^inline JWKS: key 0 \(kid "p"\) holds private or secret key material \("d"\)/,
      },
      {
        name: "base64 of broken JSON",
        options: { source: base64('{"keys": [') },
        message: /^inline JWKS \(base64\): not valid JSON: /,
      },
      {
        name: "neither a file, a URL nor JSON",
        options: { source: "no-such-jwks.json" },
        message: /^JWKS source "no-such-jwks\.json": no such file, and not an http\(s\) URL/,
      },
      {
        name: "a directory",
        options: { source: dir },
        message: new RegExp(`^JWKS file ${escape(dir)}: is a directory, not a file$`),
      },
      {
        name: "a file with broken JSON",
        options: { source: broken },
        message: new RegExp(`^JWKS file ${escape(broken)}: not valid JSON: `),
      },
      {
        name: "an invalid URL",
        options: { source: "https://[::1/jwks" },
        message: /^JWKS URL "https:\/\/\[::1\/jwks" is not a valid URL$/,
      },
      {
        name: "an invalid caCertificate",
        options: { source: https.url, caCertificate: "-----BEGIN CERTIFICATE-----\nAAAA\n" },
        message: /option "caCertificate" is not a valid PEM certificate/,
      },
      {
        name: "HTTP 404",
        options: { source: at("/nothing-here"), caCertificate: ca },
        message: new RegExp(`^JWKS URL ${escape(at("/nothing-here"))}: HTTP 404 Not Found$`),
      },
      {
        name: "a JSON answer that is not a key set",
        options: { source: at("/not-a-set"), caCertificate: ca },
        message: new RegExp(`^JWKS URL ${escape(at("/not-a-set"))}: not a JSON Web Key Set`),
      },
      {
        name: "a server certificate from an untrusted CA",
        options: { source: https.url },
        message: new RegExp(`^JWKS URL ${escape(https.url)}: .*(self.signed|certificate)`, "i"),
      },
      {
        name: "a redirect loop",
        options: { source: at("/loop"), caCertificate: ca },
        message: new RegExp(`^JWKS URL ${escape(at("/loop"))}: more than 5 redirects$`),
      },
      {
        name: "a redirect from https to http",
        options: { source: at("/to-http"), caCertificate: ca },
        message: new RegExp(
          `^JWKS URL ${
            escape(at("/to-http"))
          }: HTTP 302 redirect from https to plain http refused$`,
        ),
      },
      {
        name: "no answer within requestTimeout",
        options: { source: at("/hang"), caCertificate: ca, requestTimeoutMs: 200 },
        message: new RegExp(`^JWKS URL ${escape(at("/hang"))}: request timed out after 200ms$`),
      },
      {
        name: "a refused connection",
        options: { source: gone.url },
        message: new RegExp(`^JWKS URL ${escape(gone.url)}: .*(ECONNREFUSED|refused)`, "i"),
      },
    ];
    for (const row of rows) {
      const started = performance.now();
      await assert.rejects(JwksSource.open(row.options), (error: Error) => {
        assert.ok(error instanceof JwksSourceError, `${row.name}: not a JwksSourceError: ${error}`);
        assert.match(error.message, row.message, row.name);
        return true;
      });
      assert.ok(performance.now() - started < 2000, `${row.name}: took too long`);
    }
  } finally {
    await https.close();
    await Deno.remove(dir, { recursive: true });
  }
});

// ---------------------------------------------------------------------------------------------
// A watched file.

Deno.test("a file source follows changes; broken, private and missing files keep the last set", async () => {
  const dir = await Deno.makeTempDir({ prefix: "jwks-source-file-" });
  const file = join(dir, "jwks.json");
  await Deno.writeTextFile(file, JSON.stringify(keySet("k1")));
  const [source, reports] = await openSource({ source: file });
  const description = `JWKS file ${file}`;
  try {
    assert.deepEqual(source.keySet, keySet("k1"));
    const steps: {
      name: string;
      change(): Promise<void>;
      /** The set in force afterwards, and its version. */
      kids: string[];
      version: number;
      /** The failure reported, when the change is not a usable set. */
      error?: RegExp;
    }[] = [
      {
        name: "a new set saved by rename",
        change: () => replaceFile(file, JSON.stringify(keySet("k2"))),
        kids: ["k2"],
        version: 2,
      },
      {
        name: "broken JSON written in place",
        change: () => Deno.writeTextFile(file, '{"keys": [{"kty": '),
        kids: ["k2"],
        version: 2,
        error: new RegExp(`^${escape(description)}: not valid JSON: `),
      },
      {
        name: "a set holding a private key",
        change: () =>
          replaceFile(file, JSON.stringify({ keys: [{ kty: "EC", kid: "k3", d: "" }] })),
        kids: ["k2"],
        version: 2,
        error: new RegExp(`^${escape(description)}: key 0 \\(kid "k3"\\) holds private`),
      },
      {
        name: "the file removed",
        change: () => Deno.remove(file),
        kids: ["k2"],
        version: 2,
        error: new RegExp(`^${escape(description)}: file not found$`),
      },
      {
        name: "a new set written in place",
        change: () => Deno.writeTextFile(file, JSON.stringify(keySet("k3", "k4"))),
        kids: ["k3", "k4"],
        version: 3,
      },
    ];
    for (const step of steps) {
      const updates = reports.updates.length;
      const errors = reports.errors.length;
      await step.change();
      if (step.error) {
        await eventually(`${step.name}: reported`, () => reports.errors.length > errors, 3000);
        assert.equal(reports.errors.length, errors + 1, step.name);
        assert.ok(reports.errors[errors] instanceof JwksSourceError, step.name);
        assert.match(reports.errors[errors].message, step.error, step.name);
        assert.equal(reports.updates.length, updates, `${step.name}: no update`);
      } else {
        await eventually(`${step.name}: in force`, () => source.version === step.version, 3000);
        assert.deepEqual(
          reports.updates.slice(updates),
          [{ keySet: keySet(...step.kids), description }],
          step.name,
        );
        assert.equal(reports.errors.length, errors, `${step.name}: no error`);
      }
      assert.deepEqual(source.keySet, keySet(...step.kids), step.name);
      assert.equal(source.version, step.version, step.name);
    }
  } finally {
    source.close();
    await Deno.remove(dir, { recursive: true });
  }
});

// ---------------------------------------------------------------------------------------------
// URL sources over time. Each scenario needs the 1 s minimum refresh interval to pass, so they
// run side by side, each with its own server and source.

interface Scenario {
  name: string;
  cacheControl?: string;
  minRefreshIntervalMs?: number;
  requestTimeoutMs?: number;
  run(server: JwksServer, source: JwksSource, reports: Reports): Promise<void>;
}

/** The time between the first request (the initial load) and the second (the first refresh). */
async function firstRefreshGap(server: JwksServer): Promise<number> {
  await eventually("a refresh", () => server.requests.length >= 2, 4000);
  return server.requests[1] - server.requests[0];
}

/** A refresh timer that fires after `min` ms (the initial fetch's max-age or the interval). */
function refreshedAfter(name: string, minMs: number, maxMs: number): Scenario["run"] {
  return async (server, source, reports) => {
    server.state.body = JSON.stringify(keySet("v2"));
    const gap = await firstRefreshGap(server);
    assert.ok(gap >= minMs - 20 && gap < maxMs, `${name}: refreshed after ${gap} ms`);
    await eventually("the new set in force", () => source.version === 2, 2000);
    assert.deepEqual(source.keySet, keySet("v2"));
    assert.deepEqual(reports.updates, [{ keySet: keySet("v2"), description: source.description }]);
    assert.deepEqual(reports.errors, []);
  };
}

/** A refresh that fails after `breakServer`: reported, last set kept; the next one recovers. */
function failedRefresh(breakServer: (server: JwksServer) => void, reason: RegExp): Scenario["run"] {
  return async (server, source, reports) => {
    breakServer(server);
    await eventually("the failure reported", () => reports.errors.length > 0, 4000);
    const [error] = reports.errors;
    assert.ok(error instanceof JwksSourceError, `not a JwksSourceError: ${error}`);
    assert.match(error.message, new RegExp(`^JWKS URL ${escape(server.url)}: `));
    assert.match(error.message, reason);
    assert.deepEqual(source.keySet, keySet("v1"), "the last good set stays");
    assert.equal(source.version, 1);
    assert.deepEqual(reports.updates, []);

    server.state = { body: JSON.stringify(keySet("v2")), status: 200, mode: "answer" };
    await eventually("the next good set in force", () => source.version === 2, 4000);
    assert.deepEqual(source.keySet, keySet("v2"));
    assert.equal(reports.updates.length, 1);
    assert.equal(reports.errors.length, 1, "the failure is reported once");
  };
}

Deno.test("URL sources: refreshed after max(max-age, minRefreshInterval), failures keep the last set, close() stops", async () => {
  const tls = await makeTls();
  const scenarios: Scenario[] = [
    {
      name: "no Cache-Control: refreshed every minRefreshInterval (1s)",
      minRefreshIntervalMs: 1000,
      run: refreshedAfter("no Cache-Control", 1000, 1900),
    },
    {
      name: "max-age=0 and minRefreshInterval 200ms: raised to the 1s floor",
      cacheControl: "max-age=0",
      minRefreshIntervalMs: 200,
      run: async (server, source, reports) => {
        assert.equal(source.minRefreshIntervalMs, MIN_REFRESH_FLOOR_MS);
        await refreshedAfter("max-age=0", 1000, 1900)(server, source, reports);
      },
    },
    {
      name: "max-age=2, longer than minRefreshInterval 1s: refreshed after 2s",
      cacheControl: "public, max-age=2",
      minRefreshIntervalMs: 1000,
      run: refreshedAfter("max-age=2", 2000, 2900),
    },
    {
      name: "a refresh answered with HTTP 503",
      minRefreshIntervalMs: 1000,
      run: failedRefresh(
        (server) => server.state.status = 503,
        /: HTTP 503 Service Unavailable$/,
      ),
    },
    {
      name: "a refresh answered with a document that is not JSON",
      minRefreshIntervalMs: 1000,
      run: failedRefresh(
        (server) => server.state.body = "<html>maintenance</html>",
        /: not valid JSON: /,
      ),
    },
    {
      name: "a refresh answered with a private key",
      minRefreshIntervalMs: 1000,
      run: failedRefresh(
        (server) => server.state.body = JSON.stringify({ keys: [{ kty: "RSA", kid: "r", p: "" }] }),
        /: key 0 \(kid "r"\) holds private or secret key material \("p"\)/,
      ),
    },
    {
      name: "a refresh not answered within requestTimeout",
      minRefreshIntervalMs: 1000,
      requestTimeoutMs: 300,
      run: failedRefresh(
        (server) => server.state.mode = "hang",
        /: request timed out after 300ms$/,
      ),
    },
    {
      name: "a refresh whose connection is dropped",
      minRefreshIntervalMs: 1000,
      run: failedRefresh(
        (server) => server.state.mode = "reset",
        /: .*(socket hang up|ECONNRESET|closed|reset)/i,
      ),
    },
    {
      name: "close() right after open: no request afterwards",
      minRefreshIntervalMs: 1000,
      run: async (server, source, reports) => {
        source.close();
        await delay(1500);
        assert.equal(await source.refresh(), false);
        assert.equal(server.requests.length, 1, "no request after close()");
        assert.deepEqual(source.keySet, keySet("v1"), "the set stays readable");
        assert.deepEqual(reports.errors, []);
      },
    },
    {
      name: "close() while a refresh hangs: aborted at once, not reported, not rescheduled",
      minRefreshIntervalMs: 1000,
      requestTimeoutMs: 10_000,
      run: async (server, source, reports) => {
        server.state.mode = "hang";
        await eventually("the timer's refresh", () => server.requests.length === 2, 3000);
        const pending = source.refresh(); // joins the request in flight
        assert.equal(server.requests.length, 2, "refresh() shares the request in flight");
        const closing = performance.now();
        source.close();
        assert.equal(await pending, false);
        const took = performance.now() - closing;
        assert.ok(took < 1000, `the request was not aborted (settled after ${took} ms)`);
        await eventually("the connection closed", () => server.dropped === 1, 2000);
        await delay(1200);
        assert.equal(server.requests.length, 2, "no request after close()");
        assert.deepEqual(reports.errors, [], "a closed source reports nothing");
        assert.deepEqual(source.keySet, keySet("v1"));
      },
    },
  ];
  const outcomes = await Promise.allSettled(scenarios.map(async (scenario) => {
    const server = await startServer("https", keySet("v1"), scenario.cacheControl);
    try {
      const [source, reports] = await openSource({
        source: server.url,
        caCertificate: tls.caPem,
        minRefreshIntervalMs: scenario.minRefreshIntervalMs,
        requestTimeoutMs: scenario.requestTimeoutMs,
      });
      try {
        assert.deepEqual(source.keySet, keySet("v1"));
        assert.equal(server.requests.length, 1);
        await scenario.run(server, source, reports);
      } finally {
        source.close();
      }
    } finally {
      await server.close();
    }
  }));
  const failures = outcomes.flatMap((outcome, index) =>
    outcome.status === "rejected"
      ? [`${scenarios[index].name}: ${(outcome.reason as Error).stack ?? outcome.reason}`]
      : []
  );
  assert.deepEqual(failures, []);
});
