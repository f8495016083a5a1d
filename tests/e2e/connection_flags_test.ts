/**
 * End to end: the gRPC port's connection limits as `sentry serve` flags (issue 17.5). With
 * `--max-connections 2 --handshake-timeout 1s`, two TLS connections that never send the HTTP/2
 * preface fill the port, a third is closed at once, the two are closed after the deadline,
 * a real SignCertificate call then works, and /metrics counts both kinds of refusal. Bad
 * values of the three flags are refused at start with a message naming the flag.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { signOnce } from "../helpers/grpc_client.ts";
import { metric, metricsText } from "../helpers/metrics.ts";
import { runSentry, startSentry, tempDir } from "../helpers/sentry_process.ts";

/** Far above the 1 s deadline: only a server that never closes the connection misses it. */
const CLOSED_WITHIN_MS = 10_000;

const REFUSED = "dapr_sentry_grpc_connections_refused_total";

function refused(text: string, reason: string): number {
  return metric(text, `${REFUSED}{reason="${reason}"}`);
}

/** A TLS connection to sentry's gRPC port, handshake done, that sends nothing. */
async function silentTls(port: number, anchorsPem: string): Promise<Deno.TlsConn> {
  const connection = await Deno.connectTls({
    hostname: "localhost",
    port,
    caCerts: [anchorsPem],
    alpnProtocols: ["h2"],
  });
  await connection.handshake();
  return connection;
}

/**
 * Resolves once the server has closed `connect()`'s connection (at the TLS handshake or after
 * it); rejects if it is still open after {@link CLOSED_WITHIN_MS}.
 */
async function closedByServer(connect: () => Promise<Deno.Conn>): Promise<void> {
  let connection: Deno.Conn | undefined;
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    connection?.close();
  }, CLOSED_WITHIN_MS);
  try {
    connection = await connect();
    const buffer = new Uint8Array(1024);
    while (await connection.read(buffer) !== null) {
      // the server sends nothing before the preface; keep reading until it closes
    }
  } catch (error) {
    if (timedOut) throw new Error(`the server did not close the connection within 10 s`);
    // A reset or a handshake cut short: closed by the server.
    if (!(error instanceof Error)) throw error;
  } finally {
    clearTimeout(timer);
    try {
      connection?.close();
    } catch {
      // already closed
    }
  }
  if (timedOut) throw new Error(`the server did not close the connection within 10 s`);
}

Deno.test("--max-connections and --handshake-timeout close silent connections; gRPC still works", async () => {
  const sentry = await startSentry({
    args: ["--max-connections", "2", "--handshake-timeout", "1s"],
  });
  const work = await tempDir();
  try {
    const anchors = await Deno.readTextFile(join(sentry.dir, "ca.crt"));
    const before = await metricsText(sentry.metricsPort);
    assert.equal(refused(before, "max_connections"), 0);
    assert.equal(refused(before, "handshake_timeout"), 0);

    const held = [
      await silentTls(sentry.grpcPort, anchors),
      await silentTls(sentry.grpcPort, anchors),
    ];
    // The third is over the cap: closed as soon as it is accepted.
    await closedByServer(() => silentTls(sentry.grpcPort, anchors));
    // The two held ones are closed once their 1 s deadline passes.
    await Promise.all(held.map((connection) => closedByServer(() => Promise.resolve(connection))));

    await signOnce(sentry.grpcPort, anchors, work);

    const after = await metricsText(sentry.metricsPort);
    assert.equal(refused(after, "max_connections"), 1, after);
    assert.equal(refused(after, "handshake_timeout"), 2, after);
    assert.match(sentry.logs(), /refused 1 connection\(s\): 2 already open/);
  } finally {
    assert.equal(await sentry.stop(), 0, sentry.logs());
    await Deno.remove(work, { recursive: true });
  }
});

Deno.test("the connection flags are in sentry serve --help", async () => {
  const result = await runSentry(["serve", "--help"]);
  assert.equal(result.code, 0);
  assert.match(result.stdout, /--max-connections int\n.*\(default \d+\)/);
  assert.match(result.stdout, /--handshake-timeout string\n.*\(default "20s"\)/);
  assert.match(result.stdout, /--connection-idle-timeout string\n.*\(default "5m0s"\)/);
});

Deno.test("bad values of the connection flags are refused, naming the flag", async () => {
  for (
    const [args, named] of [
      [["--max-connections", "0"], /--max-connections must be 1 or more, got 0/],
      [["--max-connections", "many"], /invalid value "many" for flag -max-connections/],
      [["--handshake-timeout", "abc"], /--handshake-timeout: invalid duration \\?"abc/],
      [["--handshake-timeout", "0"], /--handshake-timeout must be positive/],
      [["--connection-idle-timeout", "-1s"], /--connection-idle-timeout must be 0 or more/],
    ] as const
  ) {
    // Refused before anything starts; the log line (logfmt) escapes the value's quotes.
    const result = await runSentry(["serve", ...args], { timeoutMs: 30_000 });
    const output = result.stdout + result.stderr;
    assert.notEqual(result.code, 0, `${args.join(" ")}: exit 0\n${output}`);
    assert.match(output, named, args.join(" "));
  }
});
