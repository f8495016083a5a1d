/**
 * End to end, the start-up and stop of `sentry` as an operator meets them (issue 17, points 8
 * and 9): with `--store k8s` and the API server down, sentry waits for it (the Configuration read
 * included) while /healthz answers 503, and becomes healthy once the API answers; a busy gRPC
 * port fails start-up before any CA is generated, with the reason on the logger (JSON with
 * --log-as-json); one Ctrl-C delivered twice (npm and deno forward the terminal's SIGINT) still
 * drains gracefully.
 */
import assert from "node:assert/strict";
import { createServer, type Server } from "node:net";
import { join } from "node:path";
import { FakeKubeApiServer } from "../fakes/kube-apiserver.ts";
import {
  freePort,
  runSentry,
  sentryCommand,
  serveArgs,
  tempDir,
} from "../helpers/sentry_process.ts";

function occupy(port: number): Promise<Server> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(port, "127.0.0.1", () => resolve(server));
  });
}

async function healthStatus(port: number): Promise<number | undefined> {
  try {
    const response = await fetch(`http://127.0.0.1:${port}/healthz`);
    await response.body?.cancel();
    return response.status;
  } catch {
    return undefined;
  }
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

Deno.test("a busy gRPC port fails start-up before a CA is written, on the JSON logger", async () => {
  const dir = await tempDir();
  const grpc = await freePort();
  const blocker = await occupy(grpc);
  try {
    const ports = { grpc, health: await freePort(), metrics: await freePort() };
    const run = await runSentry([...serveArgs(dir, ports), "--log-as-json"]);
    assert.equal(run.code, 1, run.stdout + run.stderr);
    const lines = run.stdout.split("\n").filter((line) => line !== "");
    for (const line of lines) JSON.parse(line); // every line is a JSON object
    assert.equal(run.stderr, "", "nothing outside the logger");
    assert.ok(
      lines.some((line) => /EADDRINUSE/.test(JSON.parse(line).msg ?? "")),
      run.stdout,
    );
    assert.deepEqual([...Deno.readDirSync(dir)], [], "nothing written");
  } finally {
    await new Promise((resolve) => blocker.close(resolve));
  }
});

Deno.test("one Ctrl-C delivered twice (SIGINT, SIGINT) still finishes in-flight requests", async () => {
  // Sent while sentry starts (after its first log line), so that the second SIGINT surely
  // comes while the first is being handled.
  const dir = await tempDir();
  const ports = { grpc: await freePort(), health: await freePort(), metrics: await freePort() };
  const [program, ...prefix] = sentryCommand();
  const child = new Deno.Command(program, {
    args: [...prefix, ...serveArgs(dir, ports)],
    stdout: "piped",
    stderr: "piped",
    stdin: "null",
  }).spawn();
  let logs = "";
  let signalled = false;
  const decoder = new TextDecoder();
  const collect = async (stream: ReadableStream<Uint8Array>) => {
    for await (const chunk of stream) {
      logs += decoder.decode(chunk, { stream: true });
      if (!signalled && /settings from/.test(logs)) {
        signalled = true;
        child.kill("SIGINT");
        await sleep(5);
        try {
          child.kill("SIGINT");
        } catch {
          // already gone: the exit code tells
        }
      }
    }
  };
  const collecting = Promise.all([collect(child.stdout), collect(child.stderr)]);
  const status = await child.status;
  await collecting;
  assert.ok(signalled, logs);
  assert.equal(status.code, 0, logs);
  assert.match(logs, /received SIGINT: finishing in-flight requests/);
  assert.match(logs, /sentry stopped/);
});

Deno.test("--store k8s waits for the API server with /healthz at 503, then serves", async () => {
  const api = await FakeKubeApiServer.start();
  const work = await tempDir();
  const kubeconfig = await api.writeKubeconfig(join(work, "kubeconfig"));
  api.put("configurations", "dapr-system", {
    apiVersion: "dapr.io/v1alpha1",
    kind: "Configuration",
    metadata: { name: "daprsystem", namespace: "dapr-system" },
    spec: { mtls: { enabled: true, workloadCertTTL: "1h", allowedClockSkew: "0s" } },
  });
  await api.setDown(true);
  const ports = { grpc: await freePort(), health: await freePort(), metrics: await freePort() };
  const [program, ...prefix] = sentryCommand();
  const child = new Deno.Command(program, {
    args: [
      ...prefix,
      ...serveArgs(work, ports),
      ...["--store", "k8s", "--namespace", "dapr-system", "--kubeconfig", kubeconfig],
      ...["--trust-domain", "cluster.local"],
    ],
    stdout: "piped",
    stderr: "piped",
    stdin: "null",
  }).spawn();
  let logs = "";
  const decoder = new TextDecoder();
  const collect = async (stream: ReadableStream<Uint8Array>) => {
    for await (const chunk of stream) logs += decoder.decode(chunk, { stream: true });
  };
  const collecting = Promise.all([collect(child.stdout), collect(child.stderr)]);
  let exited = false;
  const status = child.status.then((result) => {
    exited = true;
    return result;
  });
  try {
    // Longer than the client's own retries of one request (~3 s).
    const waitUntil = Date.now() + 5000;
    let saw503 = 0;
    while (Date.now() < waitUntil) {
      assert.ok(!exited, `sentry exited while the API was down:\n${logs}`);
      const code = await healthStatus(ports.health);
      if (code !== undefined) {
        assert.equal(code, 503, logs);
        saw503++;
      }
      await sleep(100);
    }
    assert.ok(saw503 > 10, `/healthz answered 503 while waiting (${saw503} times):\n${logs}`);
    assert.match(logs, /waiting for the Kubernetes API/);
    assert.equal(api.get("secrets", "dapr-system", "dapr-trust-bundle"), undefined);
    await api.setDown(false);
    const healthyBy = Date.now() + 30_000;
    while ((await healthStatus(ports.health)) !== 200) {
      assert.ok(!exited && Date.now() < healthyBy, `sentry did not become healthy:\n${logs}`);
      await sleep(100);
    }
    assert.ok(api.get("secrets", "dapr-system", "dapr-trust-bundle"), "the CA is stored");
    child.kill("SIGTERM");
    assert.equal((await status).code, 0, logs);
  } finally {
    if (!exited) child.kill("SIGKILL");
    await status;
    await collecting;
    await api.close();
  }
});
