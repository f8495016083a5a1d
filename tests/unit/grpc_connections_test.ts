/**
 * Connections that never go away (issue 17.5), on a real port with real TLS: a connection
 * that sends no HTTP/2 preface is closed after the (shortened) deadline, an idle HTTP/2
 * session gets GOAWAY and is closed, the connection over the cap is closed at once while
 * `/healthz` still answers, and a well-behaved grpc-js client keeps working through all of it.
 * The closed connections are counted by reason and the open ones gauged for /metrics; an idle
 * timeout of 0 means no limit.
 */
import assert from "node:assert/strict";
import { generateKeyPairSync } from "node:crypto";
import { DEFAULT_SETTINGS } from "../../src/config/configuration.ts";
import { InsecureValidator } from "../../src/identity/insecure.ts";
import { Logger } from "../../src/observability/logger.ts";
import { SentryMetrics } from "../../src/observability/metrics.ts";
import { CaState } from "../../src/server/ca-state.ts";
import {
  defaultMaxConnections,
  descriptorLimit,
  FALLBACK_MAX_CONNECTIONS,
} from "../../src/server/connection-guard.ts";
import { SentryGrpcServer } from "../../src/server/grpc-server.ts";
import { startHealthServer } from "../../src/server/http-endpoints.ts";
import { csrPem } from "../../src/x509/csr-builder.ts";
import { SentryClient } from "../helpers/grpc_client.ts";
import { testTrustBundle } from "../helpers/trust_bundle.ts";

const BUNDLE = testTrustBundle({ now: new Date(Date.now() - 60_000), namespace: "default" });
const PREFACE = new TextEncoder().encode("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
const EMPTY_SETTINGS = new Uint8Array([0, 0, 0, 4, 0, 0, 0, 0, 0]);
/** Far above every shortened timeout below: only a server that never closes misses it. */
const DEADLINE_MS = 10_000;

interface Options {
  maxConnections?: number;
  prefaceTimeoutMs?: number;
  idleTimeoutMs?: number;
}

async function withServer(
  options: Options,
  body: (server: SentryGrpcServer, logs: string[], metrics: SentryMetrics) => Promise<void>,
): Promise<void> {
  const validator = new InsecureValidator();
  const state = new CaState(BUNDLE, DEFAULT_SETTINGS, {
    defaultWire: validator.wire,
    enabled: new Map([[validator.wire, validator]]),
  });
  const logs: string[] = [];
  const metrics = new SentryMetrics();
  const server = new SentryGrpcServer({
    listenAddress: "127.0.0.1",
    port: 0,
    trustDomain: "cluster.local",
    namespace: "default",
    state,
    metrics,
    logger: new Logger({
      level: "debug",
      json: true,
      scope: "test",
      version: "0",
      sink: (line) => logs.push(JSON.parse(line).msg),
    }),
    now: () => new Date(),
    maxConcurrentRequests: 16,
    ...options,
  });
  await server.start();
  try {
    await body(server, logs, metrics);
  } finally {
    server.forceShutdown();
  }
}

function tls(port: number): Promise<Deno.TlsConn> {
  return Deno.connectTls({
    hostname: "localhost",
    port,
    caCerts: [BUNDLE.anchorsPem],
    alpnProtocols: ["h2"],
  });
}

/** Reads until the server closes the connection; the frame types seen on the way. */
async function readUntilClosed(connection: Deno.Conn): Promise<{ bytes: Uint8Array }> {
  const chunks: number[] = [];
  const timer = setTimeout(() => connection.close(), DEADLINE_MS);
  try {
    const buffer = new Uint8Array(16_384);
    while (true) {
      let n: number | null;
      try {
        n = await connection.read(buffer);
      } catch (error) {
        if (error instanceof Deno.errors.BadResource) throw new Error("never closed by the server");
        n = null; // reset by the server
      }
      if (n === null) return { bytes: new Uint8Array(chunks) };
      chunks.push(...buffer.subarray(0, n));
    }
  } finally {
    clearTimeout(timer);
  }
}

/** The types of the HTTP/2 frames in `bytes` (server side: no preface). */
function frameTypes(bytes: Uint8Array): number[] {
  const types: number[] = [];
  for (let at = 0; at + 9 <= bytes.length;) {
    const length = (bytes[at] << 16) | (bytes[at + 1] << 8) | bytes[at + 2];
    types.push(bytes[at + 3]);
    at += 9 + length;
  }
  return types;
}

const GOAWAY = 7;

async function sign(client: SentryClient): Promise<void> {
  const csr = csrPem(generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey);
  const response = await client.sign({
    id: "app",
    namespace: "default",
    certificateSigningRequest: csr,
  });
  assert.ok(response.workloadCertificate.length > 0);
}

Deno.test("a TLS connection that never sends the HTTP/2 preface is closed after the deadline", async () => {
  await withServer({ prefaceTimeoutMs: 200 }, async (server) => {
    const connection = await tls(server.port);
    try {
      await connection.handshake();
      const { bytes } = await readUntilClosed(connection);
      assert.ok(!frameTypes(bytes).includes(GOAWAY));
    } finally {
      connection.close();
    }
  });
});

Deno.test("a TCP connection that never starts TLS is closed after the deadline", async () => {
  await withServer({ prefaceTimeoutMs: 200 }, async (server) => {
    const connection = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
    try {
      await readUntilClosed(connection);
    } finally {
      connection.close();
    }
  });
});

Deno.test("an idle HTTP/2 session gets GOAWAY and is closed", async () => {
  await withServer({ idleTimeoutMs: 200 }, async (server) => {
    const connection = await tls(server.port);
    try {
      await connection.write(new Uint8Array([...PREFACE, ...EMPTY_SETTINGS]));
      const { bytes } = await readUntilClosed(connection);
      assert.ok(frameTypes(bytes).includes(GOAWAY), `frames: ${frameTypes(bytes)}`);
    } finally {
      connection.close();
    }
  });
});

Deno.test("a session that sent its preface is not cut by the preface deadline", async () => {
  await withServer({ prefaceTimeoutMs: 100 }, async (server) => {
    const connection = await tls(server.port);
    try {
      await connection.write(new Uint8Array([...PREFACE, ...EMPTY_SETTINGS]));
      await connection.read(new Uint8Array(1024)); // the server's SETTINGS
      await new Promise((resolve) => setTimeout(resolve, 600));
      assert.equal(server.openConnections, 1);
      // Still answered: a PING gets its ACK.
      await connection.write(new Uint8Array([0, 0, 8, 6, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8]));
      const buffer = new Uint8Array(1024);
      const n = await connection.read(buffer);
      assert.ok(n !== null && n > 0);
    } finally {
      connection.close();
    }
  });
});

Deno.test("over the connection cap a new connection is closed and /healthz still answers", async () => {
  await withServer({ maxConnections: 2 }, async (server, logs) => {
    const health = await startHealthServer("127.0.0.1", 0, () => true);
    const held: Deno.TlsConn[] = [];
    try {
      for (let i = 0; i < 2; i++) {
        const connection = await tls(server.port);
        await connection.write(new Uint8Array([...PREFACE, ...EMPTY_SETTINGS]));
        await connection.read(new Uint8Array(1024));
        held.push(connection);
      }
      assert.equal(server.openConnections, 2);
      // The third: closed at once, whether during its handshake or just after.
      let third: Deno.TlsConn | undefined;
      try {
        third = await tls(server.port);
        await third.handshake();
        await third.write(new Uint8Array([...PREFACE, ...EMPTY_SETTINGS]));
        await readUntilClosed(third);
      } catch (error) {
        assert.ok(!(error as Error).message.includes("never closed"), (error as Error).message);
      } finally {
        third?.close();
      }
      assert.ok(logs.some((msg) => /refused 1 connection\(s\): 2 already open/.test(msg)));
      const response = await fetch(`http://127.0.0.1:${health.port}/healthz`);
      assert.equal(response.status, 200);
      await response.body?.cancel();
      // Once one is closed, a client gets in again.
      held.shift()!.close();
      const deadline = Date.now() + DEADLINE_MS;
      while (server.openConnections > 1 && Date.now() < deadline) {
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
      const client = new SentryClient(server.port, BUNDLE.anchorsPem);
      try {
        await sign(client);
      } finally {
        client.close();
      }
    } finally {
      for (const connection of held) connection.close();
      await health.close();
    }
  });
});

/** The value of the sample of `name` with `labels` (`reason="..."`, or "" for none). */
async function sample(metrics: SentryMetrics, name: string, labels = ""): Promise<number> {
  const text = await metrics.registry.metrics();
  const key = labels === "" ? name : `${name}{${labels}}`;
  const line = text.split("\n").find((l) => l.startsWith(`${key} `));
  assert.ok(line, `no sample ${key} in:\n${text}`);
  return Number(line.split(" ").pop());
}

const REFUSED = "dapr_sentry_grpc_connections_refused_total";
const OPEN = "dapr_sentry_grpc_connections_open";

Deno.test("closed connections are counted by reason and open ones gauged", async () => {
  await withServer({ maxConnections: 1, prefaceTimeoutMs: 300 }, async (server, _, metrics) => {
    assert.equal(await sample(metrics, REFUSED, 'reason="max_connections"'), 0);
    assert.equal(await sample(metrics, REFUSED, 'reason="handshake_timeout"'), 0);
    const silent = await tls(server.port);
    try {
      await silent.handshake();
      assert.equal(await sample(metrics, OPEN), 1);
      // Over the cap: closed at once (at the handshake or just after).
      const third = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
      try {
        await readUntilClosed(third);
      } finally {
        third.close();
      }
      assert.equal(await sample(metrics, REFUSED, 'reason="max_connections"'), 1);
      // The silent one: closed at its deadline.
      await readUntilClosed(silent);
    } finally {
      silent.close();
    }
    assert.equal(await sample(metrics, REFUSED, 'reason="handshake_timeout"'), 1);
    assert.equal(await sample(metrics, REFUSED, 'reason="max_connections"'), 1);
    const deadline = Date.now() + DEADLINE_MS;
    while (server.openConnections > 0 && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    assert.equal(await sample(metrics, OPEN), 0);
  });
});

Deno.test("an idle timeout of 0 keeps an idle HTTP/2 session open", async () => {
  await withServer({ idleTimeoutMs: 0 }, async (server) => {
    const connection = await tls(server.port);
    try {
      await connection.write(new Uint8Array([...PREFACE, ...EMPTY_SETTINGS]));
      await connection.read(new Uint8Array(1024)); // the server's SETTINGS
      await new Promise((resolve) => setTimeout(resolve, 500));
      assert.equal(server.openConnections, 1);
      // Still answered (no GOAWAY): a PING gets its ACK.
      await connection.write(new Uint8Array([0, 0, 8, 6, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8]));
      const buffer = new Uint8Array(1024);
      const n = await connection.read(buffer);
      assert.ok(n !== null && n > 0);
      assert.ok(!frameTypes(buffer.subarray(0, n)).includes(GOAWAY));
    } finally {
      connection.close();
    }
  });
});

Deno.test("a grpc-js client keeps working across short preface and idle timeouts", async () => {
  await withServer({ prefaceTimeoutMs: 300, idleTimeoutMs: 200 }, async (server) => {
    const client = new SentryClient(server.port, BUNDLE.anchorsPem);
    try {
      await sign(client);
      await new Promise((resolve) => setTimeout(resolve, 700)); // idle: GOAWAY, closed
      await sign(client);
      await sign(client);
    } finally {
      client.close();
    }
  });
});

Deno.test("the default cap leaves descriptors for everything else", () => {
  const limits = (n: string) =>
    `Limit  Soft Limit  Hard Limit  Units\nMax open files  ${n}  ${n}  files\n`;
  assert.equal(descriptorLimit(limits("512")), 512);
  assert.equal(descriptorLimit(limits("unlimited")), undefined);
  assert.equal(defaultMaxConnections(512), 256);
  assert.equal(defaultMaxConnections(1_048_576), FALLBACK_MAX_CONNECTIONS);
  assert.equal(defaultMaxConnections(100), 16);
  assert.equal(defaultMaxConnections(undefined), FALLBACK_MAX_CONNECTIONS);
});
