/**
 * `--serving-threads`: extra threads bind the gRPC port beside the main thread (SO_REUSEPORT)
 * and relay each call to it. Judged from outside: the kernel's listening sockets on the port
 * (/proc/net/tcp), a grpc-go load (tests/dapr/loadgen) over many connections answered without
 * an error, one /metrics for all threads, the same serving certificate on every listener, and a
 * graceful stop. On a Node.js without SO_REUSEPORT in `listen` (the machine's Node 20 that
 * `deno task test` runs the bundle on) the flag is refused with a warning and the main thread
 * serves alone; the release binary (Node 24, `deno task test:binary`) runs the threads.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { goLoad } from "../../bench/loadgen.ts";
import { daprBinaries } from "../helpers/dapr_binaries.ts";
import { eventually } from "../helpers/eventually.ts";
import { runSentry, startSentry } from "../helpers/sentry_process.ts";
import { presentedSerial } from "../helpers/tls_peer.ts";

/** Listening TCP sockets on `port` (IPv4 and IPv6), from the kernel's tables. */
function listeningSockets(port: number): number {
  const hexPort = port.toString(16).toUpperCase().padStart(4, "0");
  let count = 0;
  for (const table of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    let text = "";
    try {
      text = readFileSync(table, "utf8");
    } catch {
      continue;
    }
    for (const line of text.split("\n").slice(1)) {
      const fields = line.trim().split(/\s+/);
      if (fields.length > 3 && fields[1].endsWith(`:${hexPort}`) && fields[3] === "0A") count++;
    }
  }
  return count;
}

async function runtimeHasThreads(): Promise<boolean> {
  const version = await runSentry(["--version"]);
  const match = /node v(\d+)\.(\d+)/.exec(version.stdout);
  if (!match) return false;
  const [major, minor] = [Number(match[1]), Number(match[2])];
  return major > 23 || (major === 23 && minor >= 1) || (major === 22 && minor >= 12);
}

Deno.test("--serving-threads 2: three listeners share the port, every call answered, one /metrics", async () => {
  const threads = await runtimeHasThreads();
  const sentry = await startSentry({ args: ["--serving-threads", "2"] });
  try {
    if (!threads) {
      assert.match(sentry.logs(), /--serving-threads ignored: .*22\.12 or later/);
      assert.equal(listeningSockets(sentry.grpcPort), 1);
      return;
    }
    assert.match(sentry.logs(), /main thread and 2 serving thread\(s\)/);
    assert.equal(listeningSockets(sentry.grpcPort), 3, "the main thread and two serving threads");

    // 24 connections over 3 listeners: all on one listener has a chance of 3^-23.
    const { loadgen } = await daprBinaries();
    const result = await goLoad(loadgen, {
      protocol: "grpc",
      port: sentry.grpcPort,
      caFile: join(sentry.dir, "ca.crt"),
      key: "ed25519",
      callers: 24,
      connections: 24,
      seconds: 2,
      warmupSeconds: 0,
    });
    assert.deepEqual(result.errors, {});
    assert.ok(result.allCertificates > 24);

    const metrics = await (await fetch(`http://127.0.0.1:${sentry.metricsPort}/metrics`)).text();
    const signed = Number(/^dapr_sentry_cert_sign_success_total (\d+)/m.exec(metrics)?.[1]);
    assert.equal(signed, result.allCertificates, "every thread's calls are counted once");

    const anchors = await Deno.readTextFile(join(sentry.dir, "ca.crt"));
    const serials = new Set<string>();
    for (let i = 0; i < 12; i++) serials.add(await presentedSerial(sentry.grpcPort, anchors));
    assert.equal(serials.size, 1, "every listener presents the same serving certificate");

    assert.equal(await sentry.stop("SIGINT"), 0);
    assert.match(sentry.logs(), /sentry stopped/);
  } finally {
    await sentry.stop();
  }
});

Deno.test("--serving-threads: a new root reaches every listener's serving certificate", async () => {
  if (!await runtimeHasThreads()) return; // covered by the warning case above
  const sentry = await startSentry({ args: ["--serving-threads", "2"] });
  try {
    const oldAnchors = await Deno.readTextFile(join(sentry.dir, "ca.crt"));
    const before = await presentedSerial(sentry.grpcPort, oldAnchors);
    const renewed = await runSentry(["renew", "--root", "--issuer-credentials", sentry.dir]);
    assert.equal(renewed.code, 0, renewed.stdout + renewed.stderr);
    const newRoot = await Deno.readTextFile(join(sentry.dir, "ca.crt"));
    // Every listener (12 connections over 3) presents a certificate that chains to the new
    // root, the same one everywhere (verified by Node's TLS client against the new root only).
    const serials = new Set<string>();
    await eventually("every listener presents the renewed serving certificate", async () => {
      serials.clear();
      for (let i = 0; i < 12; i++) {
        const serial = await presentedSerial(sentry.grpcPort, newRoot).catch(() => undefined);
        if (!serial || serial === before) return false;
        serials.add(serial);
      }
      return serials.size === 1;
    }, 20_000);
  } finally {
    await sentry.stop();
  }
});

Deno.test("--serving-threads must not be negative", async () => {
  const run = await runSentry(["--serving-threads", "-1"]);
  assert.notEqual(run.code, 0);
  assert.match(run.stdout + run.stderr, /--serving-threads must be 0 or more/);
});
