/**
 * src/server/sentry-server.ts wired to fakes: a map-backed credential store whose watch() the
 * test fires, a settings source whose snapshots and errors the test pushes, and a movable
 * clock; real listeners on port 0. It starts (generating a CA into the empty store), answers
 * /healthz and /metrics, signs over gRPC, applies a settings snapshot and refuses a bad one
 * (metric, last good stays), follows a credential change, and stops cleanly; a start that
 * cannot finish leaves nothing behind.
 */
import assert from "node:assert/strict";
import { generateKeyPairSync, X509Certificate } from "node:crypto";
import { createServer } from "node:net";
import {
  BundleError,
  type BundlePem,
  DEFAULT_BUNDLE_NAMES,
  generateBundle,
} from "../../src/ca/bundle.ts";
import {
  ConfigurationError,
  DEFAULT_SETTINGS,
  type MtlsSettings,
} from "../../src/config/configuration.ts";
import type { SettingsHandlers, SettingsSource } from "../../src/config/settings-source.ts";
import { WireValidator } from "../../src/identity/validator.ts";
import { Logger } from "../../src/observability/logger.ts";
import { SentryServer, type SentryServerOptions } from "../../src/server/sentry-server.ts";
import type { CredentialStore } from "../../src/stores/store.ts";
import { csrPem } from "../../src/x509/csr-builder.ts";
import { SentryClient } from "../helpers/grpc_client.ts";
import { metric, metricsText } from "../helpers/metrics.ts";

const DAY = 86_400_000;

/** A map-backed store: records writes and publications; the test fires its watchers. */
class FakeStore implements CredentialStore {
  readonly description = "fake store";
  readonly names = DEFAULT_BUNDLE_NAMES;
  readonly entries = new Map<"bundle", BundlePem>();
  readonly published: BundlePem[] = [];
  readonly #watchers = new Set<() => void>();
  creates = 0;
  loads = 0;
  closed = false;
  publishFails = false;

  get watching(): number {
    return this.#watchers.size;
  }

  load(): Promise<BundlePem | null> {
    this.loads++;
    return Promise.resolve(this.entries.get("bundle") ?? null);
  }

  create(bundle: BundlePem): Promise<BundlePem> {
    this.creates++;
    const existing = this.entries.get("bundle");
    if (existing) return Promise.resolve(existing);
    this.entries.set("bundle", bundle);
    return Promise.resolve(bundle);
  }

  replace(): Promise<BundlePem> {
    return Promise.reject(new Error("the server must not replace the bundle"));
  }

  watch(onChange: () => void): { close(): void } {
    this.#watchers.add(onChange);
    return { close: () => this.#watchers.delete(onChange) };
  }

  /** Stores `bundle` and tells the watchers. */
  change(bundle: BundlePem): void {
    this.entries.set("bundle", bundle);
    for (const watcher of this.#watchers) watcher();
  }

  publish(bundle: BundlePem): Promise<void> {
    this.published.push(bundle);
    return this.publishFails ? Promise.reject(new Error("configmap forbidden")) : Promise.resolve();
  }

  close(): void {
    this.closed = true;
  }
}

/** A settings source whose snapshots and errors the test pushes. */
class FakeSettingsSource implements SettingsSource {
  readonly description = "fake settings";
  handlers?: SettingsHandlers;
  reloads = 0;
  closed = false;
  watchClosed = false;

  constructor(readonly initial: MtlsSettings | Error = DEFAULT_SETTINGS) {}

  load(): Promise<MtlsSettings> {
    return this.initial instanceof Error
      ? Promise.reject(this.initial)
      : Promise.resolve(this.initial);
  }
  watch(handlers: SettingsHandlers): { close(): void } {
    this.handlers = handlers;
    return { close: () => this.watchClosed = true };
  }
  reload(): Promise<void> {
    this.reloads++;
    return Promise.resolve();
  }
  close(): void {
    this.closed = true;
  }
}

interface Harness {
  store: FakeStore;
  settings: FakeSettingsSource;
  clock: { now: Date };
  logs: { level: string; msg: string }[];
  options: SentryServerOptions;
}

function harness(store = new FakeStore(), settings = new FakeSettingsSource()): Harness {
  const logs: { level: string; msg: string }[] = [];
  const clock = { now: new Date() };
  const options: SentryServerOptions = {
    trustDomain: "cluster.local",
    namespace: "default",
    store,
    settingsSource: settings,
    keyAlgorithm: "ecdsa-p256",
    grpc: { address: "127.0.0.1", port: 0 },
    health: { address: "127.0.0.1", port: 0 },
    metrics: { address: "127.0.0.1", port: 0 },
    logger: new Logger({
      level: "debug",
      json: true,
      scope: "test",
      version: "0",
      sink: (line) => logs.push(JSON.parse(line)),
    }),
    now: () => clock.now,
    maxConcurrentRequests: 16,
    signingWorkers: 0,
    identityRateLimit: 0,
  };
  return { store, settings, clock, logs, options };
}

async function healthz(port: number): Promise<number> {
  const response = await fetch(`http://127.0.0.1:${port}/healthz`);
  await response.body?.cancel();
  return response.status;
}

async function signLeaf(server: SentryServer, appId = "app"): Promise<X509Certificate> {
  const client = new SentryClient(server.ports.grpc, server.state.bundle.anchorsPem);
  try {
    const response = await client.sign({
      id: appId,
      namespace: "default",
      certificateSigningRequest: csrPem(
        generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey,
      ),
    });
    return new X509Certificate(response.workloadCertificate);
  } finally {
    client.close();
  }
}

/** Lets watch-triggered work (fake I/O resolves at once) run to its end. */
function settle(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 20));
}

Deno.test("start on an empty store, serve, reload, and stop cleanly", async (t) => {
  const { store, settings, clock, logs, options } = harness();
  const server = await SentryServer.start(options);
  let stopped = false;
  try {
    await t.step("a CA is generated into the empty store and published", () => {
      assert.equal(store.creates, 1);
      assert.deepEqual(server.state.bundle.pem, store.entries.get("bundle"));
      assert.deepEqual(store.published, [server.state.bundle.pem]);
      assert.ok(
        logs.some((l) => l.msg.startsWith("no trust bundle in fake store: generating")),
      );
      assert.ok(logs.some((l) => l.msg.startsWith("settings from fake settings: ")));
    });

    await t.step("listeners are bound on real ports and the reloaders watch", async () => {
      const { grpc, health, metrics } = server.ports;
      assert.ok(grpc > 0 && health > 0 && metrics > 0);
      assert.equal(new Set([grpc, health, metrics]).size, 3);
      assert.equal(await healthz(health), 200);
      assert.ok(server.healthy());
      assert.equal(store.watching, 1);
      assert.ok(settings.handlers, "the settings source is not watched");
    });

    await t.step("/metrics has the bundle's expiry", async () => {
      const text = await metricsText(server.ports.metrics);
      assert.equal(
        metric(text, "dapr_sentry_issuercert_expiry_timestamp"),
        Math.floor(server.state.bundle.issuerNotAfter.getTime() / 1000),
      );
    });

    await t.step("a certificate is signed with the settings in force", async () => {
      const leaf = await signLeaf(server);
      const lifetime = new Date(leaf.validTo).getTime() - new Date(leaf.validFrom).getTime();
      assert.equal(
        lifetime,
        DEFAULT_SETTINGS.workloadCertTtlMs + DEFAULT_SETTINGS.allowedClockSkewMs,
      );
    });

    await t.step("a valid snapshot is applied, counted and logged", async () => {
      const snapshot: MtlsSettings = {
        workloadCertTtlMs: 3_600_000,
        allowedClockSkewMs: 60_000,
        tokenValidators: [],
      };
      settings.handlers!.onUpdate(snapshot);
      await settle();
      assert.equal(server.state.settings, snapshot);
      assert.equal(
        metric(await metricsText(server.ports.metrics), "dapr_sentry_config_reload_total"),
        1,
      );
      assert.ok(
        logs.some((l) =>
          l.msg.startsWith(
            "configuration reloaded from fake settings: workloadCertTTL=3600s, allowedClockSkew=60s, ",
          )
        ),
      );
      const leaf = await signLeaf(server);
      const lifetime = new Date(leaf.validTo).getTime() - new Date(leaf.validFrom).getTime();
      assert.equal(lifetime, 3_600_000 + 60_000);
    });

    await t.step(
      "a snapshot whose validators cannot be made is refused; the last good stays",
      async () => {
        const good = server.state.settings;
        const validators = server.state.validators;
        settings.handlers!.onUpdate({
          ...DEFAULT_SETTINGS,
          tokenValidators: [{ name: "jwks", options: {} }],
        });
        await settle();
        assert.equal(server.state.settings, good);
        assert.equal(server.state.validators, validators);
        const text = await metricsText(server.ports.metrics);
        assert.equal(metric(text, "dapr_sentry_config_reload_failed_total"), 1);
        assert.equal(metric(text, "dapr_sentry_config_reload_total"), 1);
        const error = logs.findLast((l) => l.level === "error");
        assert.match(
          error?.msg ?? "",
          /^configuration not reloaded: token validator: .*; the previous settings stay in force$/,
        );
      },
    );

    await t.step("an invalid document reported by the source is counted the same way", async () => {
      const good = server.state.settings;
      settings.handlers!.onError(new ConfigurationError("fake settings: spec.mtls is not a map"));
      assert.equal(server.state.settings, good);
      const text = await metricsText(server.ports.metrics);
      assert.equal(metric(text, "dapr_sentry_config_reload_failed_total"), 2);
    });

    await t.step("a new bundle in the store is swapped in, republished and counted", async () => {
      const next = generateBundle({
        trustDomain: "cluster.local",
        namespace: "default",
        algorithm: "ecdsa-p256",
        now: new Date(Date.now() - 60_000),
        ttlMs: 365 * DAY,
        skewMs: 0,
      });
      store.change(next);
      await settle();
      assert.equal(server.state.bundle.pem.caCrt, next.caCrt);
      assert.equal(store.published.at(-1)?.caCrt, next.caCrt);
      const text = await metricsText(server.ports.metrics);
      assert.equal(metric(text, "dapr_sentry_issuercert_changed_total"), 1);
      const leaf = await signLeaf(server);
      assert.ok(leaf.verify(new X509Certificate(server.state.bundle.issuerChainPem).publicKey));
    });

    await t.step("reload() re-reads settings and credentials", async () => {
      const loads = store.loads;
      await server.reload();
      assert.equal(settings.reloads, 1);
      assert.equal(store.loads, loads + 1);
    });

    await t.step("/healthz follows the injected clock: 503 once the issuer expired", async () => {
      clock.now = new Date(server.state.bundle.issuerNotAfter.getTime() + 1000);
      assert.equal(server.healthy(), false);
      assert.equal(await healthz(server.ports.health), 503);
      clock.now = new Date();
      assert.equal(await healthz(server.ports.health), 200);
    });

    await t.step("stop() closes everything and resolves true", async () => {
      const { grpc, health, metrics } = server.ports;
      assert.equal(await server.stop(5_000), true);
      stopped = true;
      assert.equal(server.healthy(), false);
      assert.ok(settings.closed, "settings source not closed");
      assert.ok(settings.watchClosed, "settings watch not closed");
      assert.ok(store.closed, "store not closed");
      assert.equal(store.watching, 0, "store still watched");
      await assert.rejects(fetch(`http://127.0.0.1:${health}/healthz`));
      await assert.rejects(fetch(`http://127.0.0.1:${metrics}/metrics`));
      await assert.rejects(signLeafOnPort(grpc, server.state.bundle.anchorsPem));
    });
  } finally {
    if (!stopped) await server.stop(0);
  }
});

/** A TCP listener on a free port of 127.0.0.1 (to make a port busy). */
async function listenAnywhere(): Promise<{ port: number; close(): Promise<void> }> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    port: (server.address() as { port: number }).port,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

/** A port that was free a moment ago. */
async function freePort(): Promise<number> {
  const listener = await listenAnywhere();
  await listener.close();
  return listener.port;
}

async function signLeafOnPort(port: number, anchorsPem: string): Promise<unknown> {
  const client = new SentryClient(port, anchorsPem);
  try {
    return await client.sign({ id: "app", namespace: "default", certificateSigningRequest: "x" });
  } finally {
    client.close();
  }
}

Deno.test("a stored bundle is used as it is, with metrics turned off", async () => {
  const store = new FakeStore();
  const stored = generateBundle({
    trustDomain: "cluster.local",
    namespace: "default",
    algorithm: "ed25519",
    now: new Date(Date.now() - 60_000),
    ttlMs: 30 * DAY,
    skewMs: 0,
  });
  store.entries.set("bundle", stored);
  const { options } = harness(store);
  const server = await SentryServer.start({ ...options, metrics: undefined });
  try {
    assert.equal(store.creates, 0);
    assert.deepEqual(server.state.bundle.pem, stored);
    assert.equal(server.ports.metrics, 0);
    assert.equal(await healthz(server.ports.health), 200);
  } finally {
    assert.equal(await server.stop(5_000), true);
  }
});

Deno.test("a failed publication is logged and does not stop the server", async () => {
  const store = new FakeStore();
  store.publishFails = true;
  const { logs, options } = harness(store);
  const server = await SentryServer.start(options);
  try {
    assert.ok(
      logs.some((l) =>
        l.level === "error" && l.msg === "cannot publish the trust anchors: configmap forbidden"
      ),
    );
    assert.equal(await healthz(server.ports.health), 200);
  } finally {
    await server.stop(5_000);
  }
});

Deno.test("a start that cannot finish throws the reason and leaves nothing listening", async (t) => {
  await t.step("a broken stored bundle: BundleError, store closed, nothing generated", async () => {
    const store = new FakeStore();
    const good = generateBundle({
      trustDomain: "cluster.local",
      namespace: "default",
      algorithm: "ecdsa-p256",
      now: new Date(),
      ttlMs: DAY,
      skewMs: 0,
    });
    store.entries.set("bundle", { ...good, caCrt: "garbage" });
    const { options } = harness(store);
    await assert.rejects(SentryServer.start(options), BundleError);
    assert.ok(store.closed);
    assert.equal(store.creates, 0);
  });

  await t.step("unusable settings: the source's error, before touching the store", async () => {
    const store = new FakeStore();
    const { options } = harness(store, new FakeSettingsSource(new ConfigurationError("bad file")));
    await assert.rejects(SentryServer.start(options), /^ConfigurationError: bad file$/);
    assert.equal(store.loads, 0);
    assert.ok(store.closed, "store left open");
  });

  for (const taken of ["metrics", "grpc"] as const) {
    await t.step(
      `the ${taken} port is taken: the listeners already started are closed`,
      async () => {
        const blocker = await listenAnywhere();
        const blocked = { address: "127.0.0.1", port: blocker.port };
        const health = { address: "127.0.0.1", port: await freePort() };
        const metrics = { address: "127.0.0.1", port: await freePort() };
        try {
          const { options, store } = harness();
          await assert.rejects(
            SentryServer.start({
              ...options,
              health,
              metrics: taken === "metrics" ? blocked : metrics,
              grpc: taken === "grpc" ? blocked : options.grpc,
            }),
            new RegExp(`cannot listen on 127\\.0\\.0\\.1:${blocker.port}`),
          );
          await assert.rejects(
            fetch(`http://127.0.0.1:${health.port}/healthz`),
            "health left open",
          );
          assert.ok(store.closed, "store left open");
          if (taken === "grpc") {
            await assert.rejects(
              fetch(`http://127.0.0.1:${metrics.port}/metrics`),
              "metrics left open",
            );
          }
        } finally {
          await blocker.close();
        }
      },
    );
  }
});

Deno.test("a settings snapshot overtaken by a newer one while building is not applied", async () => {
  // The first snapshot's JWKS validator fetches its key set from a local server that holds the
  // answer back: it stays unbuilt until the test releases it, after a newer snapshot applied.
  const { settings, options } = harness();
  const server = await SentryServer.start(options);
  let release!: () => void;
  const released = new Promise<void>((resolve) => release = resolve);
  const jwk = generateKeyPairSync("ec", { namedCurve: "P-256" }).publicKey.export({
    format: "jwk",
  });
  const jwks = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async () => {
    await released;
    return Response.json({ keys: [{ ...jwk, kid: "k1", alg: "ES256" }] });
  });
  try {
    const slow: MtlsSettings = {
      ...DEFAULT_SETTINGS,
      tokenValidators: [{
        name: "jwks",
        options: { source: `http://127.0.0.1:${jwks.addr.port}/jwks.json` },
      }],
    };
    const newer: MtlsSettings = { ...DEFAULT_SETTINGS, workloadCertTtlMs: 3_600_000 };
    settings.handlers!.onUpdate(slow);
    settings.handlers!.onUpdate(newer);
    for (let i = 0; i < 100 && server.state.settings !== newer; i++) await settle();
    assert.equal(server.state.settings, newer);

    release();
    for (let i = 0; i < 10; i++) await settle();
    assert.equal(server.state.settings, newer, "the older snapshot replaced the newer one");
    assert.equal(server.state.validators.defaultWire, WireValidator.INSECURE);
  } finally {
    release();
    await server.stop(0);
    await jwks.shutdown();
  }
});
