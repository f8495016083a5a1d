/**
 * src/server/http-endpoints.ts on real sockets (port 0): `/healthz` follows `isReady()` call by
 * call (other paths of the health server are 404), the metrics server serves the registry's
 * text on every path (500 when the registry fails), a port in use is a start-up error naming it,
 * and close() does not wait for a request still in progress.
 */
import assert from "node:assert/strict";
import { request } from "node:http";
import { Counter, Registry } from "prom-client";
import {
  type HttpEndpoint,
  startHealthServer,
  startMetricsServer,
} from "../../src/server/http-endpoints.ts";

async function get(port: number, path: string): Promise<{ status: number; body: string }> {
  const response = await fetch(`http://127.0.0.1:${port}${path}`);
  return { status: response.status, body: await response.text() };
}

async function withEndpoint(
  started: Promise<HttpEndpoint>,
  body: (endpoint: HttpEndpoint) => Promise<void>,
): Promise<void> {
  const endpoint = await started;
  try {
    await body(endpoint);
  } finally {
    await endpoint.close();
  }
}

Deno.test("/healthz answers 200 while ready and 503 otherwise, asking on every call", async (t) => {
  let ready = false;
  let asked = 0;
  await withEndpoint(
    startHealthServer("127.0.0.1", 0, () => {
      asked++;
      return ready;
    }),
    async (endpoint) => {
      assert.ok(endpoint.port > 0, "the bound port is reported, not 0");
      const steps: { name: string; ready: boolean; path: string; status: number; body: string }[] =
        [
          { name: "not ready", ready: false, path: "/healthz", status: 503, body: "not ready\n" },
          { name: "ready", ready: true, path: "/healthz", status: 200, body: "ok\n" },
          {
            name: "query ignored",
            ready: true,
            path: "/healthz?verbose=1",
            status: 200,
            body: "ok\n",
          },
          {
            name: "not ready again",
            ready: false,
            path: "/healthz",
            status: 503,
            body: "not ready\n",
          },
          { name: "other path", ready: true, path: "/metrics", status: 404, body: "not found\n" },
          { name: "prefix only", ready: true, path: "/healthzz", status: 404, body: "not found\n" },
          {
            name: "/livez while not ready",
            ready: false,
            path: "/livez",
            status: 200,
            body: "ok\n",
          },
        ];
      for (const step of steps) {
        await t.step(step.name, async () => {
          ready = step.ready;
          assert.deepEqual(await get(endpoint.port, step.path), {
            status: step.status,
            body: step.body,
          });
        });
      }
      assert.equal(asked, 4, "isReady() is asked once per /healthz call and not for 404s");
    },
  );
});

Deno.test("the metrics server answers every path (Dapr's chart scrapes /) in Prometheus text format", async () => {
  const registry = new Registry();
  const counter = new Counter({
    name: "test_total",
    help: "A test counter.",
    registers: [registry],
  });
  counter.inc(3);
  await withEndpoint(startMetricsServer("127.0.0.1", 0, registry), async (endpoint) => {
    const response = await fetch(`http://127.0.0.1:${endpoint.port}/metrics`);
    assert.equal(response.status, 200);
    assert.equal(response.headers.get("content-type"), registry.contentType);
    const text = await response.text();
    assert.match(text, /^# HELP test_total A test counter\.$/m);
    assert.match(text, /^test_total 3$/m);

    counter.inc();
    assert.match((await get(endpoint.port, "/metrics?x=1")).body, /^test_total 4$/m);
    assert.match((await get(endpoint.port, "/")).body, /^test_total 4$/m);
    assert.match((await get(endpoint.port, "/anything")).body, /^test_total 4$/m);
  });
});

Deno.test("/metrics answers 500 with the reason when the registry fails", async () => {
  const failing = {
    contentType: "text/plain",
    metrics: () => Promise.reject(new Error("collector exploded")),
  } as unknown as Registry;
  await withEndpoint(startMetricsServer("127.0.0.1", 0, failing), async (endpoint) => {
    assert.deepEqual(await get(endpoint.port, "/metrics"), {
      status: 500,
      body: "collector exploded\n",
    });
  });
});

Deno.test("a port in use is refused with the address and the endpoint's purpose", async () => {
  await withEndpoint(startHealthServer("127.0.0.1", 0, () => true), async (taken) => {
    await assert.rejects(
      startMetricsServer("127.0.0.1", taken.port, new Registry()),
      new RegExp(`^Error: cannot listen on 127\\.0\\.0\\.1:${taken.port} for metrics: `),
    );
    await assert.rejects(
      startHealthServer("127.0.0.1", taken.port, () => true),
      new RegExp(`cannot listen on 127\\.0\\.0\\.1:${taken.port} for health: `),
    );
  });
});

Deno.test("close() does not wait for a request in progress, and frees the port", async () => {
  let asked!: () => void;
  const requestArrived = new Promise<void>((resolve) => (asked = resolve));
  const hanging = {
    contentType: "text/plain",
    metrics: () => {
      asked();
      return new Promise<string>(() => {});
    },
  } as unknown as Registry;
  const endpoint = await startMetricsServer("127.0.0.1", 0, hanging);
  const call = new Promise<string>((resolve) => {
    const pending = request({ host: "127.0.0.1", port: endpoint.port, path: "/metrics" }, () => {
      resolve("answered");
    });
    pending.on("error", (error) => resolve(`failed: ${error.message}`));
    pending.end();
  });
  await requestArrived;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const closed = await Promise.race([
    endpoint.close().then(() => true),
    new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), 2_000))),
  ]);
  clearTimeout(timer);
  assert.ok(closed, "close() waited for the request in progress");
  assert.match(await call, /^failed: /);
  await assert.rejects(fetch(`http://127.0.0.1:${endpoint.port}/metrics`));
});
