/**
 * src/server/grpc-server.ts on a real port with real TLS and the grpc-js client from
 * tests/helpers/grpc_client.ts: a real CSR is signed and the answer carries Dapr's workload
 * certificate and anchors; over-limit requests (too many at once, over 64 KiB) get
 * RESOURCE_EXHAUSTED; refusals and faults map to their status and metric; the serving
 * certificate follows a bundle swap on the same port; a failed renewal is counted; shutdown
 * waits for calls in progress up to the grace period.
 */
import assert from "node:assert/strict";
import { generateKeyPairSync, X509Certificate } from "node:crypto";
import { createServer } from "node:net";
import { status } from "@grpc/grpc-js";
import { DEFAULT_SETTINGS } from "../../src/config/configuration.ts";
import { InsecureValidator } from "../../src/identity/insecure.ts";
import type { SignRequest, TokenValidator } from "../../src/identity/validator.ts";
import { Logger } from "../../src/observability/logger.ts";
import { SentryMetrics } from "../../src/observability/metrics.ts";
import { CaState } from "../../src/server/ca-state.ts";
import { MAX_REQUEST_BYTES, SentryGrpcServer } from "../../src/server/grpc-server.ts";
import { csrPem } from "../../src/x509/csr-builder.ts";
import { type GrpcError, SentryClient } from "../helpers/grpc_client.ts";
import { testTrustBundle } from "../helpers/trust_bundle.ts";

/** TLS checks validity against the real clock, so the bundles are valid now. */
const START = new Date(Date.now() - 60_000);
const BUNDLE = testTrustBundle({ now: START, namespace: "default" });
const OTHER_BUNDLE = testTrustBundle({ now: START, namespace: "default" });

function ecCsr(): string {
  return csrPem(generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey);
}

/** The insecure validator, except that requests for app `slow` wait until released. */
class GatedValidator implements TokenValidator {
  readonly #insecure = new InsecureValidator();
  readonly wire = this.#insecure.wire;
  readonly #waiting: (() => void)[] = [];
  /** A plain Error for app `boom`: a fault, not a refusal. */
  async validate(request: SignRequest) {
    if (request.id === "boom") throw new Error("validator bug");
    if (request.id === "slow") await new Promise<void>((resolve) => this.#waiting.push(resolve));
    return this.#insecure.validate(request);
  }
  get waiting(): number {
    return this.#waiting.length;
  }
  releaseAll(): void {
    for (const release of this.#waiting.splice(0)) release();
  }
}

async function until(what: string, probe: () => boolean): Promise<void> {
  const deadline = Date.now() + 5_000;
  while (!probe()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

async function counter(metrics: SentryMetrics, name: string, reason?: string): Promise<number> {
  const metric = await metrics.registry.getSingleMetric(name)!.get();
  return metric.values.find((v) => reason === undefined || v.labels.reason === reason)?.value ?? 0;
}

interface Harness {
  server: SentryGrpcServer;
  state: CaState;
  metrics: SentryMetrics;
  validator: GatedValidator;
  clock: { now: Date };
  logs: { level: string; msg: string }[];
  client(anchorsPem?: string): SentryClient;
}

async function withServer(
  options: { maxConcurrentRequests?: number; port?: number },
  body: (harness: Harness) => Promise<void>,
): Promise<void> {
  const validator = new GatedValidator();
  const state = new CaState(BUNDLE, DEFAULT_SETTINGS, {
    defaultWire: validator.wire,
    enabled: new Map([[validator.wire, validator]]),
  });
  const metrics = new SentryMetrics();
  const logs: { level: string; msg: string }[] = [];
  const clock = { now: new Date() };
  const server = new SentryGrpcServer({
    listenAddress: "127.0.0.1",
    port: options.port ?? 0,
    trustDomain: "cluster.local",
    namespace: "default",
    state,
    metrics,
    logger: new Logger({
      level: "debug",
      json: true,
      scope: "test",
      version: "0",
      sink: (line) => logs.push(JSON.parse(line)),
    }),
    now: () => clock.now,
    maxConcurrentRequests: options.maxConcurrentRequests ?? 16,
  });
  const clients: SentryClient[] = [];
  await server.start();
  try {
    await body({
      server,
      state,
      metrics,
      validator,
      clock,
      logs,
      client(anchorsPem = state.bundle.anchorsPem) {
        const client = new SentryClient(server.port, anchorsPem);
        clients.push(client);
        return client;
      },
    });
  } finally {
    validator.releaseAll();
    for (const client of clients) client.close();
    server.forceShutdown();
  }
}

async function refusal(promise: Promise<unknown>): Promise<GrpcError> {
  try {
    await promise;
  } catch (error) {
    return error as GrpcError;
  }
  assert.fail("the call was not refused");
}

Deno.test("a real CSR over real TLS is signed with the bundle's issuer", async () => {
  await withServer({}, async ({ server, metrics, client }) => {
    assert.ok(server.port > 0);
    const response = await client().sign({
      id: "app",
      namespace: "default",
      certificateSigningRequest: ecCsr(),
    });
    const chain = response.workloadCertificate.toString();
    const leaf = new X509Certificate(chain);
    const issuer = new X509Certificate(BUNDLE.issuerChainPem);
    assert.ok(leaf.verify(issuer.publicKey), "not signed by the issuer");
    assert.equal(leaf.subjectAltName, "URI:spiffe://public/ns/default/app");
    assert.ok(chain.endsWith(BUNDLE.issuerChainPem), "the issuer chain does not follow the leaf");
    assert.deepEqual(response.trustChainCertificates.map(String), [BUNDLE.anchorsPem]);
    assert.equal(
      Number(response.validUntil.seconds) * 1000,
      new Date(leaf.validTo).getTime(),
    );
    assert.equal(await counter(metrics, "dapr_sentry_cert_sign_request_received_total"), 1);
    assert.equal(await counter(metrics, "dapr_sentry_cert_sign_success_total"), 1);
  });
});

Deno.test("refusals and faults reach the client with their status and are counted", async (t) => {
  await withServer({}, async ({ metrics, client, logs }) => {
    const sentry = client();
    const rows: {
      name: string;
      id: string;
      csr: string;
      code: status;
      details: RegExp;
      reason: string;
    }[] = [
      {
        name: "a CSR that is not PEM",
        id: "app",
        csr: "not a CSR",
        code: status.INVALID_ARGUMENT,
        details: /./,
        reason: "invalid_csr",
      },
      {
        name: "an app id with a dot",
        id: "a.b",
        csr: ecCsr(),
        code: status.PERMISSION_DENIED,
        details: /./,
        reason: "token_validation_failed",
      },
      {
        name: "a fault in the validator is INTERNAL without its details",
        id: "boom",
        csr: ecCsr(),
        code: status.INTERNAL,
        details: /^internal error while signing$/,
        reason: "cert_sign_failed",
      },
    ];
    for (const row of rows) {
      await t.step(row.name, async () => {
        const error = await refusal(
          sentry.sign({ id: row.id, namespace: "default", certificateSigningRequest: row.csr }),
        );
        assert.equal(error.code, row.code, error.details);
        assert.match(error.details, row.details);
        assert.equal(await counter(metrics, "dapr_sentry_cert_sign_failure_total", row.reason), 1);
      });
    }
    assert.ok(
      logs.some((l) => l.level === "error" && l.msg.includes("validator bug")),
      "the fault was not logged",
    );
    assert.equal(await counter(metrics, "dapr_sentry_cert_sign_success_total"), 0);
  });
});

Deno.test("more requests in progress than allowed: RESOURCE_EXHAUSTED, counted as busy", async () => {
  await withServer({ maxConcurrentRequests: 2 }, async ({ metrics, validator, client }) => {
    const sentry = client();
    const slow = [1, 2].map(() =>
      sentry.sign({ id: "slow", namespace: "default", certificateSigningRequest: ecCsr() })
    );
    await until("two requests in progress", () => validator.waiting === 2);

    const error = await refusal(
      sentry.sign({ id: "app", namespace: "default", certificateSigningRequest: ecCsr() }),
    );
    assert.equal(error.code, status.RESOURCE_EXHAUSTED);
    assert.equal(error.details, "sentry is busy (2 requests in progress): retry with backoff");
    assert.equal(await counter(metrics, "dapr_sentry_cert_sign_failure_total", "busy"), 1);

    validator.releaseAll();
    await Promise.all(slow);
    await sentry.sign({ id: "app", namespace: "default", certificateSigningRequest: ecCsr() });
    assert.equal(await counter(metrics, "dapr_sentry_cert_sign_success_total"), 3);
    assert.equal(await counter(metrics, "dapr_sentry_cert_sign_request_received_total"), 4);
  });
});

Deno.test("a request over 64 KiB is refused with RESOURCE_EXHAUSTED before it is handled", async () => {
  await withServer({}, async ({ metrics, client }) => {
    const error = await refusal(
      client().sign({
        id: "app",
        namespace: "default",
        certificateSigningRequest: new Uint8Array(MAX_REQUEST_BYTES + 1),
      }),
    );
    assert.equal(error.code, status.RESOURCE_EXHAUSTED);
    assert.equal(await counter(metrics, "dapr_sentry_cert_sign_request_received_total"), 0);
  });
});

Deno.test("after a bundle swap the port serves a certificate under the new anchors", async () => {
  await withServer({}, async ({ server, state, client, logs }) => {
    const port = server.port;
    state.setBundle(OTHER_BUNDLE);
    assert.equal(server.port, port);
    assert.ok(logs.some((l) => l.msg === "serving certificate rotated"));
    const response = await client(OTHER_BUNDLE.anchorsPem).sign({
      id: "app",
      namespace: "default",
      certificateSigningRequest: ecCsr(),
    });
    assert.ok(response.workloadCertificate.toString().endsWith(OTHER_BUNDLE.issuerChainPem));
    const error = await refusal(
      client(BUNDLE.anchorsPem).sign({
        id: "app",
        namespace: "default",
        certificateSigningRequest: ecCsr(),
      }),
    );
    assert.equal(error.code, status.UNAVAILABLE, "the old anchors still verify the server");
  });
});

Deno.test("a serving certificate that cannot be issued is counted and the old one keeps serving", async () => {
  await withServer({}, async ({ server, metrics, clock, client, logs }) => {
    clock.now = new Date(BUNDLE.issuerNotAfter.getTime() + 1000);
    server.rotateServingCertificate();
    assert.equal(await counter(metrics, "dapr_sentry_servercert_issue_failed_total"), 1);
    assert.ok(
      logs.some((l) =>
        l.level === "error" && /^failed to issue the serving certificate/.test(l.msg)
      ),
    );
    clock.now = new Date();
    await client().sign({ id: "app", namespace: "default", certificateSigningRequest: ecCsr() });
  });
});

Deno.test("shutdown waits for calls in progress up to the grace period", async (t) => {
  await t.step("idle: resolves true at once", async () => {
    await withServer({}, async ({ server }) => {
      const started = Date.now();
      assert.equal(await server.shutdown(5_000), true);
      assert.ok(Date.now() - started < 2_000);
    });
  });
  await t.step("a call that finishes in time is answered, then true", async () => {
    await withServer({}, async ({ server, validator, client }) => {
      const call = client().sign({
        id: "slow",
        namespace: "default",
        certificateSigningRequest: ecCsr(),
      });
      await until("the call in progress", () => validator.waiting === 1);
      const stopped = server.shutdown(5_000);
      setTimeout(() => validator.releaseAll(), 100);
      const response = await call;
      assert.ok(response.workloadCertificate.length > 0);
      assert.equal(await stopped, true);
    });
  });
  await t.step("a call still running at the deadline: false", async () => {
    await withServer({}, async ({ server, validator, client }) => {
      const call = client().sign({
        id: "slow",
        namespace: "default",
        certificateSigningRequest: ecCsr(),
      }).catch((error) => error);
      await until("the call in progress", () => validator.waiting === 1);
      const started = Date.now();
      assert.equal(await server.shutdown(200), false);
      assert.ok(Date.now() - started >= 190);
      validator.releaseAll();
      await call;
    });
  });
});

Deno.test("a port in use is a start-up error naming the address", async () => {
  const blocker = createServer();
  await new Promise<void>((resolve) => blocker.listen(0, "127.0.0.1", resolve));
  const port = (blocker.address() as { port: number }).port;
  try {
    await assert.rejects(
      withServer({ port }, () => Promise.resolve()),
      new RegExp(`^Error: cannot listen on 127\\.0\\.0\\.1:${port}: `),
    );
  } finally {
    await new Promise((resolve) => blocker.close(resolve));
  }
});
