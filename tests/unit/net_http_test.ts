/**
 * src/net/http.ts against real local `node:http` / `node:https` servers: whole answers, the
 * total deadline (a server that stalls before its headers, and one that stalls in the middle of
 * the body), aborts, the body-size limit, redirects (followed, method kept or turned into GET,
 * limited, https to http refused), connection failures as transport errors with Node's code,
 * TLS with a trusted CA, an unrelated one and verification off, and streams (chunks as they
 * come, close(), a deadline that ends at the headers, a broken connection).
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import {
  createServer as createHttpServer,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from "node:http";
import { createServer as createHttpsServer } from "node:https";
import type { AddressInfo } from "node:net";
import {
  httpRequest,
  type HttpRequestOptions,
  type HttpResponse,
  HttpTransportError,
  openStream,
} from "../../src/net/http.ts";
import { opensslServerTls, type ServerTls } from "../helpers/openssl.ts";
import { freePort } from "../helpers/sentry_process.ts";

// ---------------------------------------------------------------------------------------------
// Test servers.

/** A request as the server saw it. */
interface Seen {
  method: string;
  url: string;
  headers: IncomingMessage["headers"];
  body: string;
}

type Handler = (req: Seen, res: ServerResponse) => void | Promise<void>;

interface TestServer {
  url: string;
  seen: Seen[];
  /** Resolves when every connection the server accepted has closed. */
  allClosed(): Promise<void>;
  close(): Promise<void>;
}

async function startServer(handler: Handler, tls?: ServerTls): Promise<TestServer> {
  const seen: Seen[] = [];
  const listener = (req: IncomingMessage, res: ServerResponse) => {
    const chunks: Uint8Array[] = [];
    req.on("data", (chunk: Uint8Array) => chunks.push(chunk));
    req.on("end", () => {
      const request = {
        method: req.method ?? "",
        url: req.url ?? "",
        headers: req.headers,
        body: Buffer.concat(chunks).toString("utf8"),
      };
      seen.push(request);
      void handler(request, res);
    });
  };
  const server: Server = tls
    ? createHttpsServer({ cert: tls.certPem, key: tls.keyPem }, listener)
    : createHttpServer(listener);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  const connections = () =>
    new Promise<number>((resolve, reject) =>
      server.getConnections((error, count) => error ? reject(error) : resolve(count))
    );
  return {
    url: `${tls ? "https" : "http"}://127.0.0.1:${port}`,
    seen,
    allClosed: async () => {
      const deadline = performance.now() + 2000;
      let open: number;
      while ((open = await connections()) > 0) {
        assert.ok(performance.now() < deadline, `${open} connection(s) still open`);
        await delay(5);
      }
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Routes of the plain-http test server. */
const ROUTES: Record<string, Handler> = {
  "/ok": (req, res) => {
    res.writeHead(200, { "content-type": "text/plain", "x-seen-method": req.method });
    res.end(`hello ${req.method} ${req.body}`);
  },
  "/teapot": (_req, res) => {
    res.writeHead(418, { "content-type": "text/plain" });
    res.end("short and stout");
  },
  "/hang": () => {}, // never answers
  "/stall-body": (_req, res) => {
    res.writeHead(200, { "content-length": "100" });
    res.write("half a bo");
  },
  "/cut-body": (_req, res) => {
    res.writeHead(200, { "content-length": "100" });
    res.write("half a bo", () => setTimeout(() => res.socket?.destroy(), 20));
  },
  "/big": (_req, res) => {
    res.writeHead(200);
    res.end("x".repeat(2000));
  },
  "/1000": (_req, res) => {
    res.writeHead(200);
    res.end("y".repeat(1000));
  },
  "/found": (_req, res) => redirect(res, 302, "/ok"),
  "/see-other": (_req, res) => redirect(res, 303, "/ok"),
  "/temporary": (_req, res) => redirect(res, 307, "/ok"),
  "/loop": (req, res) => redirect(res, 302, `/loop?${Number(req.url.split("?")[1] ?? 0) + 1}`),
  "/bad-location": (_req, res) => redirect(res, 302, "http://[::1"),
  "/ftp": (_req, res) => redirect(res, 302, "ftp://127.0.0.1/x"),
};

function redirect(res: ServerResponse, status: number, location: string): void {
  res.writeHead(status, { location, "content-type": "text/plain" });
  res.end(`see ${location}`);
}

async function withServer(fn: (server: TestServer) => Promise<void>): Promise<void> {
  const server = await startServer((req, res) =>
    (ROUTES[req.url.replace(/\?.*$/, "")] ?? ROUTES["/teapot"])(req, res)
  );
  try {
    await fn(server);
  } finally {
    await server.close();
  }
}

/** What a call must give: parts of the answer, or a transport error. */
type Expected =
  | { status: number; body?: string | RegExp; path?: string; seen?: string[] }
  | { code: string; message: RegExp };

/** `promise`, or a rejection when it has not settled within 3 s (a test must fail, not hang). */
async function within<T>(promise: Promise<T>): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error("not settled within 3 s")), 3000);
  });
  try {
    return await Promise.race([promise, late]);
  } finally {
    clearTimeout(timer);
  }
}

async function check(pending: Promise<HttpResponse>, expected: Expected, server: TestServer) {
  const call = within(pending);
  if ("code" in expected) {
    await assert.rejects(call, (error: unknown) => {
      assert.ok(error instanceof HttpTransportError, `not a transport error: ${error}`);
      assert.equal(error.code, expected.code, error.message);
      assert.match(error.message, expected.message);
      return true;
    });
    return;
  }
  const answer = await call;
  assert.equal(answer.status, expected.status);
  if (typeof expected.body === "string") assert.equal(answer.body.toString(), expected.body);
  else if (expected.body) assert.match(answer.body.toString(), expected.body);
  if (expected.path) assert.equal(answer.url.href, server.url + expected.path);
  if (expected.seen) {
    assert.deepEqual(server.seen.map((s) => `${s.method} ${s.url}`), expected.seen);
  }
}

// ---------------------------------------------------------------------------------------------
// httpRequest.

Deno.test("httpRequest against a plain-http server, table-driven", async (t) => {
  const rows: { name: string; path: string; options?: HttpRequestOptions; expected: Expected }[] = [
    {
      name: "a whole answer, with the method and body sent",
      path: "/ok",
      options: { method: "PUT", body: "payload ✓", headers: { "content-type": "text/plain" } },
      expected: { status: 200, body: "hello PUT payload ✓", path: "/ok", seen: ["PUT /ok"] },
    },
    {
      name: "a failure status is an answer, not an error",
      path: "/teapot",
      expected: { status: 418, body: "short and stout" },
    },
    {
      name: "the deadline passes while the server stalls before its headers",
      path: "/hang",
      options: { timeoutMs: 150 },
      expected: { code: "EDEADLINE", message: /^request timed out after 150ms$/ },
    },
    {
      name: "the deadline passes while the server stalls in the middle of the body",
      path: "/stall-body",
      options: { timeoutMs: 150 },
      expected: { code: "EDEADLINE", message: /^request timed out after 150ms$/ },
    },
    {
      name: "a connection closed in the middle of the body",
      path: "/cut-body",
      expected: { code: "ECONNRESET", message: /./ },
    },
    {
      name: "a body over the limit",
      path: "/big",
      options: { maxBodyBytes: 1000 },
      expected: { code: "ETOOLARGE", message: /^response larger than 1000 bytes$/ },
    },
    {
      name: "a body exactly at the limit",
      path: "/1000",
      options: { maxBodyBytes: 1000 },
      expected: { status: 200, body: "y".repeat(1000) },
    },
    {
      name: "no redirect is followed by default",
      path: "/found",
      expected: { status: 302, body: "see /ok", path: "/found", seen: ["GET /found"] },
    },
    {
      name: "a 302 is followed",
      path: "/found",
      options: { maxRedirects: 1 },
      expected: { status: 200, body: "hello GET ", path: "/ok", seen: ["GET /found", "GET /ok"] },
    },
    {
      name: "a 307 repeats the method and the body",
      path: "/temporary",
      options: { maxRedirects: 1, method: "POST", body: "again" },
      expected: { status: 200, body: "hello POST again", seen: ["POST /temporary", "POST /ok"] },
    },
    {
      name: "a 303 turns a POST into a GET without a body",
      path: "/see-other",
      options: { maxRedirects: 1, method: "POST", body: "dropped" },
      expected: { status: 200, body: "hello GET ", seen: ["POST /see-other", "GET /ok"] },
    },
    {
      name: "redirect statuses not listed are answers",
      path: "/found",
      options: { maxRedirects: 1, redirectStatuses: [307, 308] },
      expected: { status: 302, seen: ["GET /found"] },
    },
    {
      name: "the answer after the last redirect allowed is returned as it is",
      path: "/loop",
      options: { maxRedirects: 2 },
      expected: { status: 302, path: "/loop?2", seen: ["GET /loop", "GET /loop?1", "GET /loop?2"] },
    },
    {
      name: "a redirect to an invalid URL",
      path: "/bad-location",
      options: { maxRedirects: 1 },
      expected: { code: "EREDIRECT", message: /^HTTP 302 redirect to an invalid URL$/ },
    },
    {
      name: "a redirect to another scheme",
      path: "/ftp",
      options: { maxRedirects: 1 },
      expected: {
        code: "EREDIRECT",
        message: /^HTTP 302 redirect to unsupported URL scheme ftp:$/,
      },
    },
  ];
  for (const row of rows) {
    await t.step(row.name, async () => {
      await withServer(async (server) => {
        await check(httpRequest(server.url + row.path, row.options), row.expected, server);
        // A failed call leaves no connection open.
        if ("code" in row.expected) await server.allClosed();
      });
    });
  }
});

Deno.test("httpRequest: a refused connection is a transport error with Node's code and cause", async () => {
  const port = await freePort();
  await assert.rejects(httpRequest(`http://127.0.0.1:${port}/`), (error: unknown) => {
    assert.ok(error instanceof HttpTransportError);
    assert.equal(error.name, "HttpTransportError");
    assert.equal(error.code, "ECONNREFUSED");
    assert.match(error.message, /ECONNREFUSED/);
    assert.equal((error.cause as { code?: string }).code, "ECONNREFUSED");
    return true;
  });
  await assert.rejects(httpRequest("ftp://127.0.0.1/"), { code: "EREQUEST" });
});

Deno.test("httpRequest: an abort before the headers, during the body, or before the start rejects with the signal's reason", async (t) => {
  const cases: { name: string; path: string; abort: (controller: AbortController) => void }[] = [
    {
      name: "before the headers",
      path: "/hang",
      abort: (c) => setTimeout(() => c.abort(new Error("stop now")), 50),
    },
    {
      name: "in the middle of the body",
      path: "/stall-body",
      abort: (c) => setTimeout(() => c.abort(new Error("stop now")), 50),
    },
    { name: "already aborted", path: "/ok", abort: (c) => c.abort(new Error("stop now")) },
  ];
  for (const testCase of cases) {
    await t.step(testCase.name, async () => {
      await withServer(async (server) => {
        const controller = new AbortController();
        testCase.abort(controller);
        await assert.rejects(
          within(httpRequest(server.url + testCase.path, { signal: controller.signal })),
          /^Error: stop now$/,
        );
        await server.allClosed();
      });
    });
  }
  await t.step("without a reason: an AbortError", async () => {
    await withServer(async (server) => {
      const controller = new AbortController();
      setTimeout(() => controller.abort(), 30);
      await assert.rejects(
        within(httpRequest(server.url + "/hang", { signal: controller.signal })),
        { name: "AbortError" },
      );
    });
  });
});

// ---------------------------------------------------------------------------------------------
// TLS.

let tlsMaterial: Promise<[ServerTls, ServerTls]> | undefined;

/** A server CA + certificate, and an unrelated CA. */
function makeTls(): Promise<[ServerTls, ServerTls]> {
  tlsMaterial ??= Promise.all([opensslServerTls("net test CA"), opensslServerTls("other CA")]);
  return tlsMaterial;
}

Deno.test("httpRequest over TLS: the given CA is trusted, another is refused, verification off accepts", async (t) => {
  const [tls, other] = await makeTls();
  const server = await startServer(ROUTES["/ok"], tls);
  const cases: { name: string; options: HttpRequestOptions; trusted: boolean }[] = [
    { name: "the server's CA", options: { tls: { ca: tls.caPem } }, trusted: true },
    {
      name: "the server's CA among others, TLS 1.2 at least",
      options: { tls: { ca: [other.caPem, tls.caPem], minVersion: "TLSv1.2" } },
      trusted: true,
    },
    { name: "an unrelated CA", options: { tls: { ca: other.caPem } }, trusted: false },
    { name: "the system roots", options: {}, trusted: false },
    {
      name: "verification off",
      options: { tls: { rejectUnauthorized: false } },
      trusted: true,
    },
    {
      name: "a server name the certificate does not hold",
      options: { tls: { ca: tls.caPem, servername: "elsewhere.example" } },
      trusted: false,
    },
  ];
  try {
    for (const testCase of cases) {
      await t.step(testCase.name, async () => {
        const before = server.seen.length;
        const call = within(httpRequest(server.url + "/ok", testCase.options));
        if (testCase.trusted) {
          const answer = await call;
          assert.equal(answer.status, 200);
          assert.equal(answer.body.toString(), "hello GET ");
          assert.equal(server.seen.length, before + 1);
        } else {
          await assert.rejects(call, (error: unknown) => {
            assert.ok(error instanceof HttpTransportError, `${error}`);
            assert.match(`${error.code} ${error.message}`, /cert|altname|issuer|self.signed/i);
            return true;
          });
          assert.equal(server.seen.length, before, "a request reached the server");
        }
      });
    }
  } finally {
    await server.close();
  }
});

Deno.test("httpRequest: a redirect from https to http is refused unless allowed", async () => {
  const [tls] = await makeTls();
  const plain = await startServer(ROUTES["/ok"]);
  const secure = await startServer((_req, res) => redirect(res, 307, `${plain.url}/ok`), tls);
  try {
    const options = { tls: { ca: tls.caPem }, maxRedirects: 3 };
    await assert.rejects(httpRequest(secure.url + "/x", options), (error: unknown) => {
      assert.ok(error instanceof HttpTransportError);
      assert.equal(error.code, "EREDIRECT");
      assert.equal(error.message, "HTTP 307 redirect from https to plain http refused");
      return true;
    });
    assert.equal(plain.seen.length, 0);
    const answer = await httpRequest(secure.url + "/x", { ...options, allowDowngrade: true });
    assert.equal(answer.status, 200);
    assert.equal(answer.url.href, `${plain.url}/ok`);
    assert.equal(plain.seen.length, 1);
  } finally {
    await plain.close();
    await secure.close();
  }
});

// ---------------------------------------------------------------------------------------------
// openStream.

/** A server that writes the chunks it is given, one at a time, and keeps the answer open. */
async function streamingServer() {
  const writes: ((text: string | null) => void)[] = [];
  let answered = () => {};
  const started = new Promise<void>((resolve) => answered = resolve);
  const server = await startServer((req, res) => {
    if (req.url === "/late") return void setTimeout(() => res.writeHead(200).flushHeaders(), 300);
    res.writeHead(200, { "content-type": "application/json" });
    res.flushHeaders();
    writes.push((text) => text === null ? res.socket?.destroy() : res.write(text));
    answered();
  });
  return { server, started, write: (text: string | null) => writes.at(-1)?.(text) };
}

async function nextText(iterator: AsyncIterator<Uint8Array>): Promise<string> {
  const next = await within(iterator.next());
  assert.ok(!next.done, "the stream ended");
  return new TextDecoder().decode(next.value);
}

Deno.test("openStream: chunks as they come, then close() drops the connection", async () => {
  const { server, started, write } = await streamingServer();
  try {
    const stream = await openStream(server.url + "/watch", { timeoutMs: 100 });
    await started;
    assert.equal(stream.status, 200);
    assert.equal(stream.headers["content-type"], "application/json");
    assert.equal(stream.url.href, server.url + "/watch");
    const iterator = stream.body[Symbol.asyncIterator]();
    write("first");
    assert.equal(await nextText(iterator), "first");
    // Past the deadline: it only bounded the wait for the headers.
    await delay(200);
    write("second");
    assert.equal(await nextText(iterator), "second");
    stream.close();
    assert.deepEqual(await within(iterator.next()), { done: true, value: undefined });
    await server.allClosed();
  } finally {
    await server.close();
  }
});

Deno.test("openStream: the deadline bounds the wait for the headers", async () => {
  const { server } = await streamingServer();
  try {
    await assert.rejects(within(openStream(server.url + "/late", { timeoutMs: 100 })), {
      code: "EDEADLINE",
      message: "request timed out after 100ms",
    });
  } finally {
    await server.close();
  }
});

Deno.test("openStream: an abort in the middle of the body rejects the iteration with its reason", async () => {
  const { server, started, write } = await streamingServer();
  try {
    const controller = new AbortController();
    const stream = await openStream(server.url + "/watch", { signal: controller.signal });
    await started;
    const iterator = stream.body[Symbol.asyncIterator]();
    write("one");
    assert.equal(await nextText(iterator), "one");
    setTimeout(() => controller.abort(new Error("watch cancelled")), 30);
    await assert.rejects(within(iterator.next()), /^Error: watch cancelled$/);
    await server.allClosed();
  } finally {
    await server.close();
  }
});

Deno.test("openStream: a broken connection is a transport error; read() has its own deadline", async () => {
  const { server, started, write } = await streamingServer();
  try {
    const broken = await openStream(server.url + "/watch");
    await started;
    const iterator = broken.body[Symbol.asyncIterator]();
    write("partial");
    assert.equal(await nextText(iterator), "partial");
    write(null);
    await assert.rejects(within(iterator.next()), (error: unknown) => {
      assert.ok(error instanceof HttpTransportError, `${error}`);
      assert.equal(error.code, "ECONNRESET");
      return true;
    });

    const stalled = await openStream(server.url + "/watch");
    write("some");
    await assert.rejects(within(stalled.read({ timeoutMs: 100 })), {
      code: "EDEADLINE",
      message: "request timed out after 100ms",
    });
    await server.allClosed();
  } finally {
    await server.close();
  }
});
