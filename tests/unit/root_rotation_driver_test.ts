/**
 * src/server/root-rotation-driver.ts against an in-memory compare-and-swap store and a movable
 * clock: a whole cycle (start -> switch after the propagation window -> complete) with its
 * metric values and log lines, a conflict (another replica wrote first) that is no error and is
 * followed at the next check, lagging trust-bundle copies deferring the switch and the
 * completion with one warning per set, an unreachable store warned about once, rotation off
 * (nothing starts, a stored rotation still advances), the propagation window raised to the
 * workload TTL, the periodic timer and close(), the outlook the expiry warnings show, and the
 * `--rotation-*` flags.
 */
import assert from "node:assert/strict";
import { expiringBundle } from "../helpers/rotation_bundle.ts";
import {
  type BundlePem,
  DEFAULT_BUNDLE_NAMES,
  generateBundle,
  sameBundlePem,
  type TrustBundle,
} from "../../src/ca/bundle.ts";
import { rotationOf, startRotation, viewBundle } from "../../src/ca/root-rotation.ts";
import { DEFAULT_SETTINGS, type MtlsSettings } from "../../src/config/configuration.ts";
import { Logger } from "../../src/observability/logger.ts";
import { SentryMetrics } from "../../src/observability/metrics.ts";
import {
  RootRotationDriver,
  type RootRotationDriverOptions,
} from "../../src/server/root-rotation-driver.ts";
import {
  type CredentialStore,
  StoreConflictError,
  StoreUnavailableError,
} from "../../src/stores/store.ts";
import { parseFlags, UsageError } from "../../src/cli/flags.ts";
import { rotationOptionsFromFlags, SERVE_FLAGS } from "../../src/cli/serve.ts";

const SECOND = 1000;
const MINUTE = 60 * SECOND;
const HOUR = 60 * MINUTE;
const T0 = new Date("2031-05-01T12:00:00Z");

/** A map-free in-memory store: load/create/replace with compare-and-swap, watch, lagging. */
class MemoryStore implements CredentialStore {
  readonly description = "memory store";
  readonly names = DEFAULT_BUNDLE_NAMES;
  stored: BundlePem | null;
  replaces = 0;
  /** Runs inside replace() before the compare: another replica's write lands here. */
  beforeReplace?: () => void;
  /** What load() throws next (once). */
  failNextLoad?: Error;
  /** Set to give the store a `lagging` method answering these namespaces. */
  laggingAnswer?: string[];
  laggingAsked: string[] = [];
  readonly #watchers = new Set<() => void>();

  constructor(initial: BundlePem | null) {
    this.stored = initial;
  }

  load(): Promise<BundlePem | null> {
    const failure = this.failNextLoad;
    this.failNextLoad = undefined;
    if (failure) return Promise.reject(failure);
    return Promise.resolve(this.stored && structuredClone(this.stored));
  }

  create(bundle: BundlePem): Promise<BundlePem> {
    this.stored ??= structuredClone(bundle);
    return Promise.resolve(structuredClone(this.stored));
  }

  replace(bundle: BundlePem, expected: BundlePem): Promise<BundlePem> {
    this.replaces++;
    this.beforeReplace?.();
    this.beforeReplace = undefined;
    if (!this.stored || !sameBundlePem(this.stored, expected)) {
      return Promise.reject(new StoreConflictError("the bundle changed since it was read"));
    }
    this.stored = structuredClone(bundle);
    for (const watcher of this.#watchers) watcher();
    return Promise.resolve(structuredClone(bundle));
  }

  watch(onChange: () => void): { close(): void } {
    this.#watchers.add(onChange);
    return { close: () => this.#watchers.delete(onChange) };
  }

  lagging(newRootPem: string): Promise<string[]> {
    this.laggingAsked.push(newRootPem);
    return Promise.resolve(this.laggingAnswer ?? []);
  }
}

/** A store without `lagging` (as the fs and Vault stores). */
function withoutLagging(store: MemoryStore): CredentialStore {
  return {
    description: store.description,
    names: store.names,
    load: () => store.load(),
    create: (bundle) => store.create(bundle),
    replace: (bundle, expected) => store.replace(bundle, expected),
    watch: (onChange) => store.watch(onChange),
  };
}

/** One logged line. */
interface Line {
  level: string;
  msg: string;
  [field: string]: string;
}

/** A bundle whose root expires in two hours: inside the 720h trigger window at once. */
function expiring(now = T0): BundlePem {
  return expiringBundle({ now, skewMs: 0 });
}

/**
 * A driver on `memory` with a movable clock, through `store` (default: `memory` without its
 * `lagging` method); `options` override the defaults below.
 */
function harness(
  memory: MemoryStore,
  options: Partial<RootRotationDriverOptions> = {},
  store: CredentialStore = withoutLagging(memory),
) {
  const clock = { now: T0 };
  const lines: Line[] = [];
  const logger = new Logger({
    level: "debug",
    json: true,
    scope: "test",
    version: "0",
    sink: (line) => lines.push(JSON.parse(line)),
  });
  const metrics = new SentryMetrics();
  let mtls: MtlsSettings = {
    ...DEFAULT_SETTINGS,
    workloadCertTtlMs: 5 * MINUTE,
    allowedClockSkewMs: 0,
  };
  let reloads = 0;
  const driver = new RootRotationDriver({
    enabled: true,
    triggerWindowMs: 720 * HOUR,
    propagationWindowMs: 10 * MINUTE,
    checkIntervalMs: MINUTE,
    store,
    settings: () => mtls,
    bundle: () => memory.stored!,
    metrics,
    logger,
    now: () => clock.now,
    algorithm: "ecdsa-p256",
    rootTtlMs: 365 * 24 * HOUR,
    trustDomain: "example.org",
    namespace: "dapr-system",
    serving: {
      // What the driver serves is the credential reloader's business (its own tests): here,
      // each bundle written is put in service once.
      prepare: () => Promise.resolve({} as TrustBundle),
      adopt: () => void reloads++,
      reload: () => {
        reloads++;
        return Promise.resolve();
      },
    },
    ...options,
  });
  return {
    driver,
    lines,
    metrics,
    get reloads() {
      return reloads;
    },
    setTtl(ms: number) {
      mtls = { ...mtls, workloadCertTtlMs: ms };
    },
    /** Moves the clock to T0 + `ms` and runs one check. */
    async checkAt(ms: number) {
      clock.now = new Date(T0.getTime() + ms);
      await driver.check();
    },
    /** Lines at `level` (warn is written "warning", as logrus). */
    at(level: "debug" | "info" | "warning" | "error") {
      return lines.filter((line) => line.level === level);
    },
  };
}

/** `dapr_sentry_rootcert_rotation_total` by phase (absent phases: no series). */
async function rotationCounts(metrics: SentryMetrics): Promise<Record<string, number>> {
  const { values } = await metrics.rootCertRotation.get();
  return Object.fromEntries(values.map((value) => [String(value.labels.phase), value.value]));
}

function certCount(pem: string): number {
  return pem.match(/-----BEGIN CERTIFICATE-----/g)?.length ?? 0;
}

const phaseOf = (store: MemoryStore) => rotationOf(store.stored!)?.phase ?? "none";

Deno.test("a whole cycle: start, switch after the window, complete; metric and one line each", async () => {
  const old = expiring();
  const store = new MemoryStore(old);
  const h = harness(store);
  assert.deepEqual(await rotationCounts(h.metrics), {}, "no series before the first change");
  assert.doesNotMatch(
    await h.metrics.registry.metrics(),
    /dapr_sentry_rootcert_rotation_total/,
    "not even HELP/TYPE lines before the first change (Dapr's nottriggered case)",
  );

  await h.checkAt(0);
  assert.equal(phaseOf(store), "distributing");
  assert.equal(certCount(store.stored!.caCrt), 2, "anchors: old + new");
  assert.equal(store.stored!.issuerCrt, old.issuerCrt, "signing stays with the old issuer");
  assert.deepEqual(await rotationCounts(h.metrics), { distributing: 1 });
  assert.match(
    await h.metrics.registry.metrics(),
    /^dapr_sentry_rootcert_rotation_total\{phase="distributing"\} 1$/m,
  );
  assert.equal(h.reloads, 1, "this replica reloads at once after its write");
  const started = h.at("info").filter((line) => line.msg.startsWith("root rotation"));
  assert.equal(started.length, 1);
  assert.match(started[0].msg, /^root rotation started/);
  assert.equal(started[0].phase, "distributing");
  assert.equal(started[0].switch_at, new Date(T0.getTime() + 10 * MINUTE).toISOString());
  const newRoot = store.stored!.rotation!.caCrt;

  await h.checkAt(9 * MINUTE);
  assert.equal(phaseOf(store), "distributing", "not before the propagation window ends");
  assert.match(h.driver.status().waitingFor!, /propagation window/);
  assert.equal(h.driver.status().phase, "distributing");
  assert.equal(h.driver.status().nextAt?.getTime(), T0.getTime() + 10 * MINUTE);

  await h.checkAt(10 * MINUTE);
  assert.equal(phaseOf(store), "signing");
  assert.equal(
    viewBundle(store.stored!).root.der.toString("base64"),
    viewBundle({ ...store.stored!, caCrt: newRoot }).root.der.toString("base64"),
    "the issuer chains to the new root",
  );
  assert.deepEqual(await rotationCounts(h.metrics), { distributing: 1, signing: 1 });
  assert.equal(h.reloads, 2);
  const switched = h.at("info").find((line) => line.phase === "signing")!;
  assert.equal(switched.complete_at, new Date(T0.getTime() + 16 * MINUTE).toISOString());
  assert.equal(h.driver.status().nextAt?.getTime(), T0.getTime() + 16 * MINUTE);

  // complete_at = switch + workload TTL (5m) + check interval (1m).
  await h.checkAt(15 * MINUTE);
  assert.equal(phaseOf(store), "signing");
  await h.checkAt(16 * MINUTE);
  assert.equal(phaseOf(store), "none");
  assert.equal(store.stored!.caCrt, newRoot, "only the new root is left");
  assert.deepEqual(await rotationCounts(h.metrics), { distributing: 1, signing: 1, complete: 1 });
  assert.equal(h.reloads, 3);

  const phases = h.at("info").filter((line) => line.phase).map((line) => line.phase);
  assert.deepEqual(phases, ["distributing", "signing", "complete"], "one info line per phase");
  assert.deepEqual(h.at("warning"), []);
  assert.deepEqual(h.at("error"), []);

  await h.checkAt(17 * MINUTE);
  assert.equal(store.replaces, 3, "nothing more to write");
  assert.match(h.driver.status().waitingFor!, /trigger window/);
  await h.driver.close();
});

Deno.test("a conflict is no error: the next check follows the other replica's rotation", async () => {
  const old = expiring();
  const store = new MemoryStore(old);
  const h = harness(store);
  // Another replica starts a rotation between this one's load and its write.
  const other = await startRotation(old, T0, h.driver.rotationSettings(), "expiry");
  store.beforeReplace = () => store.stored = structuredClone(other);

  await h.checkAt(0);
  assert.equal(store.stored!.rotation!.caCrt, other.rotation!.caCrt, "the other write stands");
  assert.deepEqual(await rotationCounts(h.metrics), {}, "not counted: this replica wrote nothing");
  assert.equal(h.reloads, 0);
  assert.deepEqual(h.at("warning"), []);
  assert.deepEqual(h.at("error"), []);
  assert.equal(h.at("debug").filter((line) => /another replica/.test(line.msg)).length, 1);

  await h.checkAt(MINUTE);
  assert.equal(store.stored!.rotation!.caCrt, other.rotation!.caCrt, "no second new root");
  assert.equal(store.replaces, 1);

  await h.checkAt(10 * MINUTE);
  assert.equal(phaseOf(store), "signing", "the next due step proceeds");
  assert.equal(store.stored!.rotation!.caCrt, other.rotation!.caCrt);
  assert.deepEqual(await rotationCounts(h.metrics), { signing: 1 });
  await h.driver.close();
});

Deno.test("lagging trust-bundle copies defer the switch and the completion, one warning per set", async () => {
  const store = new MemoryStore(expiring());
  const h = harness(store, {}, store);
  await h.checkAt(0);
  assert.equal(phaseOf(store), "distributing");
  assert.deepEqual(store.laggingAsked, [], "starting does not wait for copies");
  const newRoot = store.stored!.rotation!.caCrt;

  store.laggingAnswer = ["b", "a"];
  await h.checkAt(10 * MINUTE);
  await h.checkAt(11 * MINUTE);
  assert.equal(phaseOf(store), "distributing", "not switched while copies lack the new root");
  assert.deepEqual(store.laggingAsked, [newRoot, newRoot], "asked about the new root");
  const waiting = h.at("warning").map((line) => line.msg);
  assert.deepEqual(waiting, [
    "root rotation: waiting for the trust bundle in namespaces a, b to carry the new root " +
    "before switching",
  ]);
  assert.match(h.driver.status().waitingFor!, /namespaces a, b/);

  store.laggingAnswer = ["a"];
  await h.checkAt(12 * MINUTE);
  assert.equal(h.at("warning").length, 2, "a new set is warned about again");

  store.laggingAnswer = [];
  await h.checkAt(13 * MINUTE);
  assert.equal(phaseOf(store), "signing");

  store.laggingAnswer = ["c"];
  await h.checkAt(30 * MINUTE);
  assert.equal(phaseOf(store), "signing", "the old root stays while a copy lacks the new one");
  assert.equal(
    h.at("warning").at(-1)!.msg,
    "root rotation: waiting for the trust bundle in namespaces c to carry the new root " +
      "before completing",
  );
  store.laggingAnswer = [];
  await h.checkAt(31 * MINUTE);
  assert.equal(phaseOf(store), "none");
  assert.deepEqual(h.at("error"), []);
  await h.driver.close();
});

Deno.test("an unreachable store or an unusable state is logged once and retried", async () => {
  const store = new MemoryStore(expiring());
  const h = harness(store);
  store.failNextLoad = new StoreUnavailableError("connection refused");
  await h.checkAt(0);
  store.failNextLoad = new StoreUnavailableError("connection refused");
  await h.checkAt(MINUTE);
  assert.deepEqual(h.at("warning").map((line) => line.msg), [
    "root rotation: cannot reach memory store: connection refused; retrying at the next check",
  ]);
  await h.checkAt(2 * MINUTE);
  assert.equal(phaseOf(store), "distributing", "retried at the next check");

  store.stored = {
    ...store.stored!,
    rotation: { ...store.stored!.rotation!, stateJson: '{"phase":"sideways"}' },
  };
  await h.checkAt(3 * MINUTE);
  await h.checkAt(4 * MINUTE);
  const errors = h.at("error").map((line) => line.msg);
  assert.equal(errors.length, 1, "logged once while it stays the same");
  assert.match(errors[0], /^root rotation check failed: .*unknown phase "sideways"; still serving/);
  await h.driver.close();
});

Deno.test("rotation off: nothing starts on its own, a stored rotation still advances", async () => {
  const old = expiring();
  const store = new MemoryStore(old);
  const h = harness(store, { enabled: false });
  h.driver.start();
  await h.driver.check(); // the first check, started by start(), has finished
  assert.equal(
    h.at("info")[0].msg,
    "Automatic root CA rotation is disabled; enable with --rotation-enabled",
  );
  await h.checkAt(0);
  assert.equal(store.replaces, 0, "no rotation starts");
  assert.match(h.driver.status().waitingFor!, /automatic rotation is off/);
  assert.equal(h.driver.outlook(), undefined, "nothing to announce");

  // `sentry rotate start` wrote a rotation.
  store.stored = await startRotation(old, T0, h.driver.rotationSettings(), "manual");
  assert.match(h.driver.outlook()!, /^root rotation in progress: distributing, signing switches/);
  await h.checkAt(10 * MINUTE);
  assert.equal(phaseOf(store), "signing");
  await h.checkAt(16 * MINUTE);
  assert.equal(phaseOf(store), "none");
  assert.deepEqual(await rotationCounts(h.metrics), { signing: 1, complete: 1 });
  await h.driver.close();
});

Deno.test("a propagation window shorter than the workload TTL is raised to it, warned once", async () => {
  const store = new MemoryStore(expiring());
  const h = harness(store, { propagationWindowMs: MINUTE });
  await h.checkAt(0);
  await h.checkAt(MINUTE);
  assert.equal(phaseOf(store), "distributing", "the 1m window was raised to the 5m TTL");
  assert.equal(h.driver.rotationSettings().propagationWindowMs, 5 * MINUTE);
  const raised = h.at("warning").map((line) => line.msg);
  assert.deepEqual(raised, [
    "--rotation-propagation-window 1m0s is shorter than the workload certificate TTL 5m0s: " +
    "using 5m0s, so that every sidecar renews once with the new trust anchors before signing " +
    "switches",
  ]);
  await h.checkAt(5 * MINUTE);
  assert.equal(phaseOf(store), "signing");
  h.setTtl(2 * MINUTE);
  await h.checkAt(6 * MINUTE);
  assert.equal(h.at("warning").length, 2, "a new TTL is warned about again");
  assert.match(h.at("warning")[1].msg, /TTL 2m0s: using 2m0s/);
  await h.driver.close();
});

Deno.test("start() checks at once and then every interval; close() stops it", async () => {
  const store = new MemoryStore(expiring());
  let loads = 0;
  const counting: CredentialStore = {
    ...withoutLagging(store),
    load: () => {
      loads++;
      return store.load();
    },
  };
  const h = harness(store, { checkIntervalMs: 20 }, counting);
  h.driver.start();
  assert.match(h.at("info")[0].msg, /^Automatic root CA rotation is enabled: trigger window 720h/);
  await h.driver.check(); // the first check, started by start(), has finished
  assert.equal(phaseOf(store), "distributing");
  await new Promise((resolve) => setTimeout(resolve, 150));
  assert.ok(loads >= 3, `checked every interval (${loads} loads)`);
  await h.driver.close();
  const after = loads;
  await new Promise((resolve) => setTimeout(resolve, 100));
  assert.equal(loads, after, "no check after close()");
});

Deno.test("outlook: when the automatic rotation starts, and the phase once it runs", async () => {
  const store = new MemoryStore(expiring());
  const h = harness(store);
  assert.equal(h.driver.outlook(), "automatic root rotation starts at the next check");
  const farStore = new MemoryStore(generateBundle({
    trustDomain: "example.org",
    namespace: "dapr-system",
    algorithm: "ecdsa-p256",
    now: T0,
    ttlMs: 100 * 24 * HOUR,
    skewMs: 0,
  }));
  const far = harness(farStore);
  assert.equal(
    far.driver.outlook(),
    `automatic root rotation starts at ${new Date(T0.getTime() + 70 * 24 * HOUR).toISOString()}`,
  );
  await h.checkAt(0);
  await h.checkAt(10 * MINUTE);
  assert.equal(
    h.driver.outlook(),
    "root rotation in progress: signing, the old root leaves the trust anchors at " +
      new Date(T0.getTime() + 16 * MINUTE).toISOString(),
  );
});

Deno.test("--rotation-* flags: defaults, and durations must be positive even when off", () => {
  const defaults = rotationOptionsFromFlags(parseFlags(SERVE_FLAGS, []));
  assert.deepEqual(defaults, {
    enabled: false,
    triggerWindowMs: 720 * HOUR,
    propagationWindowMs: 24 * HOUR,
    checkIntervalMs: MINUTE,
  });
  const given = rotationOptionsFromFlags(parseFlags(SERVE_FLAGS, [
    "-rotation-enabled",
    "-rotation-trigger-window=1h",
    "--rotation-propagation-window",
    "6s",
    "--rotation-check-interval=1s",
  ]));
  assert.deepEqual(given, {
    enabled: true,
    triggerWindowMs: HOUR,
    propagationWindowMs: 6 * SECOND,
    checkIntervalMs: SECOND,
  });
  for (
    const flag of [
      "rotation-trigger-window",
      "rotation-propagation-window",
      "rotation-check-interval",
    ]
  ) {
    for (const value of ["0s", "-1m", "soon"]) {
      assert.throws(
        () => rotationOptionsFromFlags(parseFlags(SERVE_FLAGS, [`--${flag}=${value}`])),
        (error: Error) => error instanceof UsageError && error.message.startsWith(`--${flag}`),
      );
    }
  }
});
