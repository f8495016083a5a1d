/**
 * End to end: health, metrics and logs of a running sentry, and a graceful stop while calls
 * are in flight.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { SentryClient } from "../helpers/grpc_client.ts";
import { generateKey, makeCsr, opensslBundle, opensslTime } from "../helpers/openssl.ts";
import { metric, metricsText } from "../helpers/metrics.ts";
import {
  freePort,
  sentryCommand,
  serveArgs,
  startSentry,
  tempDir,
} from "../helpers/sentry_process.ts";
import { TextLineStream } from "../helpers/text_lines.ts";

const PYTHON_CLIENT = fileURLToPath(new URL("./python/sentry_client.py", import.meta.url));

Deno.test("healthz, Dapr's metric names and JSON logs", async () => {
  const work = await tempDir();
  const sentry = await startSentry({ args: ["--log-as-json", "--log-level=debug"] });
  try {
    const health = await fetch(`http://127.0.0.1:${sentry.healthPort}/healthz`);
    assert.equal(health.status, 200);
    await health.body?.cancel();
    assert.match(sentry.logs(), /token validators: insecure \(default\)/);

    const anchors = await Deno.readTextFile(join(sentry.dir, "ca.crt"));
    const client = new SentryClient(sentry.grpcPort, anchors);
    const csr = await makeCsr(work, await generateKey("ec-p256"));
    await client.sign({ id: "a", namespace: "ns", certificateSigningRequest: csr });
    await client.sign({ id: "b", namespace: "ns", certificateSigningRequest: csr });
    await assert.rejects(client.sign({ id: "", namespace: "ns", certificateSigningRequest: csr }));
    await assert.rejects(
      client.sign({ id: "c", namespace: "ns", certificateSigningRequest: "junk" }),
    );
    client.close();

    const text = await metricsText(sentry.metricsPort);
    assert.equal(metric(text, "dapr_sentry_cert_sign_request_received_total"), 4);
    assert.equal(metric(text, "dapr_sentry_cert_sign_success_total"), 2);
    assert.match(text, /dapr_sentry_cert_sign_failure_total\{reason="token_validation_failed"\} 1/);
    assert.match(text, /dapr_sentry_cert_sign_failure_total\{reason="invalid_csr"\} 1/);
    const issuerExpiry = metric(text, "dapr_sentry_issuercert_expiry_timestamp");
    const yearAhead = Date.now() / 1000 + 365 * 86400;
    assert.ok(Math.abs(issuerExpiry - yearAhead) < 3600, `issuer expiry ${issuerExpiry}`);
    assert.ok(metric(text, "dapr_sentry_rootcert_expiry_timestamp") >= issuerExpiry);
    assert.match(text, /dapr_sentry_servercert_issue_failed_total 0/);
    assert.match(text, /dapr_sentry_issuercert_changed_total 0/);
  } finally {
    assert.equal(await sentry.stop(), 0);
  }
  const lines = sentry.logs().trim().split("\n");
  for (const line of lines) {
    const entry = JSON.parse(line);
    assert.equal(entry.scope, "dapr.sentry");
    assert.equal(entry.type, "log");
    assert.ok(["debug", "info", "warning", "error", "fatal"].includes(entry.level), line);
    assert.ok(!Number.isNaN(Date.parse(entry.time)));
    assert.equal(typeof entry.instance, "string");
    assert.equal(typeof entry.ver, "string");
  }
  assert.ok(
    lines.some((line) =>
      JSON.parse(line).msg.includes("signed certificate for spiffe://public/ns/ns/a")
    ),
  );
});

Deno.test("SIGTERM lets in-flight calls finish and exits 0", async () => {
  // The calls come from Python's grpcio: Deno's HTTP/2 client aborts on a GOAWAY that
  // arrives with streams open (an nghttp2 assertion), which is exactly this scenario.
  const work = await tempDir();
  const sentry = await startSentry();
  const client = new Deno.Command("/usr/bin/python3", {
    args: [
      PYTHON_CLIENT,
      "burst",
      "--count",
      "60",
      "--port",
      String(sentry.grpcPort),
      "--anchors",
      join(sentry.dir, "ca.crt"),
      "--out-dir",
      work,
    ],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const lines = client.stdout.pipeThrough(new TextDecoderStream()).pipeThrough(
    new TextLineStream(),
  );
  let code: number | undefined;
  let result: { codes: string[] } | undefined;
  for await (const line of lines) {
    if (line === "first-done") code = await sentry.stop("SIGTERM");
    else if (line.startsWith("{")) result = JSON.parse(line);
  }
  const status = await client.status;
  assert.equal(
    status.code,
    0,
    new TextDecoder().decode((await client.stderr.getReader().read()).value),
  );
  assert.equal(code, 0);
  assert.ok(result);
  assert.equal(result.codes.length, 60);
  const completed = result.codes.filter((c) => c === "OK").length;
  assert.ok(completed > 1, `calls already sent must complete (${completed} did)`);
  for (const c of result.codes) {
    assert.ok(c === "OK" || c === "UNAVAILABLE", `a call ended with ${c}: never cut off half-way`);
  }
  assert.match(sentry.logs(), /received SIGTERM: finishing in-flight requests/);
  assert.match(sentry.logs(), /sentry stopped/);
});

Deno.test("SIGTERM closes idle client connections instead of waiting for their clients", async () => {
  // A client that keeps its connection open and ignores GOAWAY (Go's gRPC clients take ~10 s
  // to hang up): Node's HTTP/2 server alone would wait for it until the 10 s grace is over.
  const sentry = await startSentry();
  const connection = await Deno.connectTls({
    hostname: "localhost",
    port: sentry.grpcPort,
    caCerts: [await Deno.readTextFile(join(sentry.dir, "ca.crt"))],
    alpnProtocols: ["h2"],
  });
  try {
    const preface = new TextEncoder().encode("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
    const emptySettings = new Uint8Array([0, 0, 0, 4, 0, 0, 0, 0, 0]);
    await connection.write(new Uint8Array([...preface, ...emptySettings]));
    await connection.read(new Uint8Array(1024)); // the server's SETTINGS: the session is up
    assert.equal(await sentry.stop("SIGTERM"), 0);
    assert.match(sentry.logs(), /sentry stopped/);
    assert.doesNotMatch(sentry.logs(), /did not finish/);
  } finally {
    connection.close();
  }
});

Deno.test("a stop signal that arrives while sentry is starting stops it cleanly", async () => {
  const dir = await tempDir();
  const [program, ...prefix] = sentryCommand();
  const child = new Deno.Command(program, {
    args: [
      ...prefix,
      ...serveArgs(dir, {
        grpc: await freePort(),
        health: await freePort(),
        metrics: await freePort(),
      }),
    ],
    stdout: "piped", // the logs, as Dapr's
    stderr: "null",
    stdin: "null",
  }).spawn();
  // A sentry that never stops fails the test instead of hanging it.
  const watchdog = setTimeout(() => child.kill("SIGKILL"), 30_000);
  let logs = "";
  let signalled = false;
  const lines = child.stdout.pipeThrough(new TextDecoderStream()).pipeThrough(
    new TextLineStream(),
  );
  for await (const line of lines) {
    logs += line + "\n";
    // Written while the bundle is made, before the ports are bound.
    if (!signalled && /stored the new trust bundle/.test(line)) {
      child.kill("SIGTERM");
      signalled = true;
    }
  }
  const status = await child.status;
  clearTimeout(watchdog);
  assert.ok(signalled, `no start-up line seen:\n${logs}`);
  assert.equal(status.signal, null, `killed by ${status.signal}:\n${logs}`);
  assert.equal(status.code, 0, logs);
  assert.match(logs, /received SIGTERM/);
  assert.match(logs, /sentry stopped/);
});

Deno.test("logs go to stdout (or --log-file, appended, 0644) as Dapr's; warnings say 'warning'; process metrics at / too", async () => {
  const dir = await tempDir();
  const now = Date.now();
  // An issuer with 10 days left: the expiry warning comes at start-up.
  await opensslBundle(dir, {
    start: opensslTime(new Date(now - 86_400_000)),
    end: opensslTime(new Date(now + 10 * 86_400_000)),
  });
  const ports = { grpc: await freePort(), health: await freePort(), metrics: await freePort() };
  const [program, ...prefix] = sentryCommand();
  const run = async (extra: string[]) => {
    const child = new Deno.Command(program, {
      args: [...prefix, ...serveArgs(dir, ports), "--log-as-json", ...extra],
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const output = child.output();
    let scraped: { root: string; metrics: string } | undefined;
    for (let i = 0; i < 300 && !scraped; i++) {
      try {
        const root = await (await fetch(`http://127.0.0.1:${ports.metrics}/`)).text();
        scraped = { root, metrics: await metricsText(ports.metrics) };
      } catch {
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    }
    child.kill("SIGTERM");
    const done = await output;
    const decode = (bytes: Uint8Array) => new TextDecoder().decode(bytes);
    return { ...scraped!, stdout: decode(done.stdout), stderr: decode(done.stderr) };
  };

  const plain = await run(["--log-level", "INFO"]); // any letter case, as Dapr
  assert.equal(plain.stderr, "", "nothing on stderr");
  const lines = plain.stdout.trim().split("\n").map((line) => JSON.parse(line));
  const warning = lines.find((entry) => /issuer certificate expiration warning/.test(entry.msg));
  assert.ok(warning, plain.stdout);
  assert.equal(warning.level, "warning");
  assert.equal(
    warning.msg,
    "Dapr issuer certificate expiration warning: certificate expires in 9 days and 23 hours",
  );
  // The chart scrapes "/": the same text as /metrics, with process metrics in it.
  for (const name of ["process_cpu_seconds_total", "process_start_time_seconds"]) {
    assert.ok(metric(plain.root, name) > 0, name);
  }
  assert.match(plain.root, /^dapr_sentry_issuercert_expiry_timestamp /m);
  assert.match(plain.metrics, /^process_resident_memory_bytes /m);

  const logFile = join(await tempDir(), "sentry.log");
  await Deno.writeTextFile(logFile, "earlier line\n");
  const toFile = await run(["--log-file", logFile]);
  assert.equal(toFile.stdout, "", "logs went to the file");
  const text = await Deno.readTextFile(logFile);
  assert.ok(text.startsWith("earlier line\n"), "appended, not truncated");
  assert.match(text, /"level":"warning"/);
  assert.match(text, /"msg":"sentry stopped"/);
  const invalid = await new Deno.Command(program, {
    args: [...prefix, ...serveArgs(dir, ports), "--log-level", "verbose"],
  }).output();
  assert.equal(invalid.code, 2);
  assert.match(new TextDecoder().decode(invalid.stderr), /--log-level "verbose"/);
});

Deno.test("--log-file creates the file with mode 0644", async () => {
  const dir = await tempDir();
  const logFile = join(await tempDir(), "new.log");
  const ports = { grpc: await freePort(), health: await freePort(), metrics: await freePort() };
  const [program, ...prefix] = sentryCommand();
  const child = new Deno.Command(program, {
    args: [...prefix, ...serveArgs(dir, ports), "--log-file", logFile],
    stdout: "null",
    stderr: "null",
  }).spawn();
  try {
    for (let i = 0; i < 300; i++) {
      const healthy = await fetch(`http://127.0.0.1:${ports.health}/healthz`)
        .then(async (response) => (await response.body?.cancel(), response.status === 200))
        .catch(() => false);
      if (healthy) break;
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  } finally {
    child.kill("SIGTERM");
    await child.status;
  }
  assert.equal((await Deno.stat(logFile)).mode! & 0o777, 0o644 & ~umask());
  assert.match(await Deno.readTextFile(logFile), /level=info msg="sentry stopped"/);
});

/** The process umask (Deno's API sets and restores it). */
function umask(): number {
  const mask = Deno.umask(0o022);
  Deno.umask(mask);
  return mask;
}
