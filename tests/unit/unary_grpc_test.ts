/**
 * src/server/unary-grpc.ts on the wire, driven by a bare `node:http2` client (no gRPC library)
 * so that each protocol edge can be sent as it is: framing, trailers, trailers-only failures,
 * the size limit before the body ends, compressed messages, truncated and extra messages,
 * unknown paths, non-gRPC content types, `grpc-timeout`, a cancelled call, and a certificate
 * replaced for new handshakes on the same port. Real gRPC clients (grpc-js, grpc-go through
 * daprd and the load generator, Python's grpcio) are the e2e suite's judges.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import {
  type ClientHttp2Session,
  type ClientHttp2Stream,
  connect as connectHttp2,
  type IncomingHttpHeaders,
} from "node:http2";
import { issueServingIdentity } from "../../src/server/serving-identity.ts";
import {
  encodeGrpcMessage,
  GrpcError,
  parseGrpcTimeout,
  type ServingTls,
  UnaryGrpcServer,
  type UnaryHandler,
} from "../../src/server/unary-grpc.ts";
import { presentedSerial } from "../helpers/tls_peer.ts";
import { testTrustBundle } from "../helpers/trust_bundle.ts";

const NOW = new Date();
const BUNDLE = testTrustBundle({ now: new Date(NOW.getTime() - 60_000) });

function servingTls(): ServingTls {
  const identity = issueServingIdentity(BUNDLE, "cluster.local", "default", 3_600_000, 0, NOW);
  return { ...identity, anchorsPem: BUNDLE.anchorsPem };
}

/** A gRPC message with its 5-byte prefix. */
function frame(message: Buffer, compressed = false): Buffer {
  const head = Buffer.alloc(5);
  head[0] = compressed ? 1 : 0;
  head.writeUInt32BE(message.length, 1);
  return Buffer.concat([head, message]);
}

interface Exchange {
  headers: IncomingHttpHeaders;
  trailers: IncomingHttpHeaders;
  body: Buffer;
}

async function withServer(
  handlers: Record<string, UnaryHandler>,
  test: (port: number, server: UnaryGrpcServer) => Promise<void>,
): Promise<void> {
  const server = new UnaryGrpcServer({
    handlers: new Map(Object.entries(handlers)),
    tls: servingTls(),
    maxMessageBytes: 1024,
    maxConcurrentStreams: 8,
    idleTimeoutMs: 0,
  });
  const port = await server.listen("127.0.0.1", 0);
  try {
    await test(port, server);
  } finally {
    server.forceShutdown();
  }
}

/** A bare HTTP/2 client session to the test server (the test certificate is trusted). */
function connect(port: number): ClientHttp2Session {
  return connectHttp2(`https://127.0.0.1:${port}`, {
    ca: BUNDLE.anchorsPem,
    servername: "localhost",
    checkServerIdentity: () => undefined,
  });
}

/** Opens a call to `/test.Service/Echo` (or what `headers` override) on `session`. */
function openCall(session: ClientHttp2Session, headers: Record<string, string> = {}) {
  const request = session.request({
    ":method": "POST",
    ":path": "/test.Service/Echo",
    "content-type": "application/grpc",
    ...headers,
  });
  request.on("error", () => {});
  return request;
}

/** The answer to `request`, once its stream has closed. */
function answerOf(request: ClientHttp2Stream): Promise<Exchange> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let headers: IncomingHttpHeaders = {};
    let trailers: IncomingHttpHeaders = {};
    request.on("response", (h) => (headers = h));
    request.on("trailers", (t) => (trailers = t));
    request.on("data", (chunk: Buffer) => chunks.push(chunk));
    request.once("close", () => resolve({ headers, trailers, body: Buffer.concat(chunks) }));
  });
}

/** Sends one request (headers plus `body`) on a new connection and collects the answer. */
function exchange(
  port: number,
  headers: Record<string, string>,
  body: Buffer,
): Promise<Exchange> {
  return new Promise((resolve, reject) => {
    const session = connect(port);
    session.once("error", reject);
    const request = openCall(session, { te: "trailers", ...headers });
    answerOf(request).then((answer) => {
      session.close();
      resolve(answer);
    });
    request.end(body);
  });
}

const echo: UnaryHandler = (message) =>
  Promise.resolve(Buffer.concat([Buffer.from("re:"), message]));

Deno.test("grpc-message is percent-encoded outside printable ASCII and for %", () => {
  assert.equal(encodeGrpcMessage("plain text: ok"), "plain text: ok");
  assert.equal(encodeGrpcMessage("100% é\n"), "100%25 %C3%A9%0A");
});

Deno.test("grpc-timeout values are read in every unit; malformed ones are ignored", () => {
  assert.equal(parseGrpcTimeout("2S"), 2000);
  assert.equal(parseGrpcTimeout("1H"), 3_600_000);
  assert.equal(parseGrpcTimeout("250m"), 250);
  assert.equal(parseGrpcTimeout("5000u"), 5);
  assert.equal(parseGrpcTimeout(undefined), undefined);
  assert.equal(parseGrpcTimeout("123456789S"), undefined);
  assert.equal(parseGrpcTimeout("10x"), undefined);
});

Deno.test("a call is answered with headers, one framed message and grpc-status 0 trailers", async () => {
  await withServer({ "/test.Service/Echo": echo }, async (port) => {
    const answer = await exchange(port, {}, frame(Buffer.from("hello")));
    assert.equal(answer.headers[":status"], 200);
    assert.equal(answer.headers["content-type"], "application/grpc");
    assert.equal(answer.trailers["grpc-status"], "0");
    assert.deepEqual(answer.body, frame(Buffer.from("re:hello")));
  });
});

Deno.test("failures are trailers-only with the status and the encoded message", async () => {
  const refuse: UnaryHandler = () => Promise.reject(new GrpcError(7, "not allowed: 100%"));
  const crash: UnaryHandler = () => Promise.reject(new Error("secret detail"));
  await withServer({ "/test.Service/Echo": refuse, "/test.Service/Crash": crash }, async (port) => {
    const refused = await exchange(port, {}, frame(Buffer.from("x")));
    assert.equal(refused.headers["grpc-status"], "7");
    assert.equal(refused.headers["grpc-message"], "not allowed: 100%25");
    assert.equal(refused.body.length, 0);
    const crashed = await exchange(
      port,
      { ":path": "/test.Service/Crash" },
      frame(Buffer.from("x")),
    );
    assert.equal(crashed.headers["grpc-status"], "13");
    assert.doesNotMatch(String(crashed.headers["grpc-message"]), /secret/);
  });
});

Deno.test("protocol errors get their gRPC status (or HTTP status) and never reach the handler", async () => {
  let handled = 0;
  const counting: UnaryHandler = (message) => {
    handled++;
    return echo(message);
  };
  await withServer({ "/test.Service/Echo": counting }, async (port) => {
    const unknown = await exchange(
      port,
      { ":path": "/test.Service/Nope" },
      frame(Buffer.from("x")),
    );
    assert.equal(unknown.headers["grpc-status"], "12");
    assert.match(String(unknown.headers["grpc-message"]), /unknown method \/test\.Service\/Nope/);

    const json = await exchange(port, { "content-type": "application/json" }, Buffer.from("{}"));
    assert.equal(json.headers[":status"], 415);

    const compressed = await exchange(
      port,
      { "grpc-encoding": "gzip" },
      frame(Buffer.from("x"), true),
    );
    assert.equal(compressed.headers["grpc-status"], "12");
    assert.equal(compressed.headers["grpc-accept-encoding"], "identity");
    assert.match(String(compressed.headers["grpc-message"]), /compressed.*gzip/);

    const tooLarge = await exchange(port, {}, frame(Buffer.alloc(1025)));
    assert.equal(tooLarge.headers["grpc-status"], "8");
    assert.match(String(tooLarge.headers["grpc-message"]), /1025 > 1024/);

    const truncated = await exchange(port, {}, frame(Buffer.from("hello")).subarray(0, 7));
    assert.equal(truncated.headers["grpc-status"], "13");

    const empty = await exchange(port, {}, Buffer.alloc(0));
    assert.equal(empty.headers["grpc-status"], "13");

    const two = await exchange(
      port,
      {},
      Buffer.concat([frame(Buffer.from("a")), frame(Buffer.from("b"))]),
    );
    assert.equal(two.headers["grpc-status"], "12");

    const exactLimit = await exchange(port, {}, frame(Buffer.alloc(1024)));
    assert.equal(exactLimit.trailers["grpc-status"], "0");
  });
  assert.equal(handled, 1);
});

Deno.test("the size limit answers as soon as the prefix announces too much", async () => {
  await withServer({ "/test.Service/Echo": echo }, async (port) => {
    const session = connect(port);
    try {
      const request = openCall(session);
      const head = Buffer.alloc(5);
      head.writeUInt32BE(10 * 1024 * 1024, 1);
      request.write(head); // the body never follows
      const headers = await new Promise<IncomingHttpHeaders>((resolve) =>
        request.once("response", resolve)
      );
      assert.equal(headers["grpc-status"], "8");
    } finally {
      session.destroy();
    }
  });
});

Deno.test("a message sent a few bytes per DATA frame is read whole; extra bytes after it are refused", async () => {
  /** Sends `body` in 3-byte writes, each flushed before the next, and collects the answer. */
  const trickle = (session: ClientHttp2Session, body: Buffer) => {
    const request = openCall(session);
    const answer = answerOf(request);
    const send = (at: number) => {
      if (at >= body.length) return request.end();
      request.write(body.subarray(at, at + 3), () => setTimeout(() => send(at + 3), 1));
    };
    send(0);
    return answer;
  };
  await withServer({ "/test.Service/Echo": echo }, async (port) => {
    const session = connect(port);
    try {
      const message = Buffer.alloc(200, 0x61);
      const whole = await trickle(session, frame(message));
      assert.equal(whole.trailers["grpc-status"], "0");
      assert.deepEqual(whole.body, frame(Buffer.concat([Buffer.from("re:"), message])));
      const extra = await trickle(session, Buffer.concat([frame(message), Buffer.from("zz")]));
      assert.equal(extra.headers["grpc-status"], "12");
    } finally {
      session.destroy();
    }
  });
});

Deno.test("a call not answered within grpc-timeout gets DEADLINE_EXCEEDED", async () => {
  const never: UnaryHandler = () => new Promise(() => {});
  await withServer({ "/test.Service/Echo": never }, async (port) => {
    const started = Date.now();
    const answer = await exchange(port, { "grpc-timeout": "150m" }, frame(Buffer.from("x")));
    assert.equal(answer.headers["grpc-status"], "4");
    assert.ok(Date.now() - started >= 140);
  });
});

Deno.test("a call the client cancels gets no answer and the server keeps serving", async () => {
  let release = () => {};
  const slow: UnaryHandler = (message) =>
    new Promise((resolve) => (release = () => resolve(message)));
  await withServer({ "/test.Service/Echo": slow, "/test.Service/Fast": echo }, async (port) => {
    const session = connect(port);
    const request = openCall(session);
    request.end(frame(Buffer.from("x")));
    await new Promise((resolve) => setTimeout(resolve, 50));
    request.close(8); // CANCEL
    await new Promise((resolve) => request.once("close", resolve));
    session.close();
    release();
    const fast = await exchange(port, { ":path": "/test.Service/Fast" }, frame(Buffer.from("y")));
    assert.equal(fast.trailers["grpc-status"], "0");
  });
});

Deno.test("SETTINGS announce the per-connection call limit and the header list bound", async () => {
  await withServer({ "/test.Service/Echo": echo }, async (port) => {
    const session = connect(port);
    try {
      await new Promise((resolve, reject) => {
        session.once("remoteSettings", resolve);
        session.once("error", reject);
      });
      assert.equal(session.remoteSettings.maxConcurrentStreams, 8);
      assert.equal(session.remoteSettings.maxHeaderListSize, 16 * 1024);
    } finally {
      session.destroy();
    }
  });
});

Deno.test("setTls: new handshakes get the new certificate on the same port", async () => {
  await withServer({ "/test.Service/Echo": echo }, async (port, server) => {
    const before = await presentedSerial(port, BUNDLE.anchorsPem);
    const next = servingTls();
    server.setTls(next);
    const after = await presentedSerial(port, BUNDLE.anchorsPem);
    assert.notEqual(after, before);
    assert.equal(
      after,
      new (await import("node:crypto")).X509Certificate(next.chainPem).serialNumber,
    );
  });
});
