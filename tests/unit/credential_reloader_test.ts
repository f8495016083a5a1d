/**
 * src/server/credential-reloader.ts against a map-backed fake store whose watch() the test
 * fires: a new valid bundle is swapped in (metric, expiry gauges, listeners, one log line that
 * says whether the anchors changed), the same bundle is no change, a half-written, vanished,
 * unreachable or expired bundle is logged once per distinct problem while the last good one
 * keeps serving, reloads run one at a time, and nothing is ever written back.
 */
import assert from "node:assert/strict";
import {
  type BundlePem,
  DEFAULT_BUNDLE_NAMES,
  generateBundle,
  issueIssuer,
  rootFromPem,
  type TrustBundle,
  validateBundle,
} from "../../src/ca/bundle.ts";
import { DEFAULT_SETTINGS } from "../../src/config/configuration.ts";
import { InsecureValidator } from "../../src/identity/insecure.ts";
import { Logger } from "../../src/observability/logger.ts";
import { SentryMetrics } from "../../src/observability/metrics.ts";
import { CaState } from "../../src/server/ca-state.ts";
import { CredentialReloader } from "../../src/server/credential-reloader.ts";
import { type CredentialStore, StoreUnavailableError } from "../../src/stores/store.ts";
import { FsCredentialStore } from "../../src/stores/fs.ts";
import { join } from "node:path";

const DAY = 86_400_000;
const NOW = new Date("2030-03-01T00:00:00Z");
const GENERATE = {
  trustDomain: "cluster.local",
  namespace: "dapr-system",
  algorithm: "ecdsa-p256" as const,
  ttlMs: 365 * DAY,
  skewMs: 0,
};

/** Root A with its key kept, so that its issuer can be rotated. */
const ROOT_A = generateBundle({ ...GENERATE, now: NOW, keepRootKey: true });
const A1: BundlePem = {
  caCrt: ROOT_A.caCrt,
  issuerCrt: ROOT_A.issuerCrt,
  issuerKey: ROOT_A.issuerKey,
};
/** Same root, new issuer. */
const A2: BundlePem = {
  caCrt: ROOT_A.caCrt,
  ...issueIssuer(rootFromPem(ROOT_A.caCrt, ROOT_A.caKey!), {
    ...GENERATE,
    now: NOW,
    ttlMs: 90 * DAY,
  }),
};
/** A different root. */
const B = generateBundle({ ...GENERATE, now: NOW });
/** A2's certificate with A1's key: what a store holds between writing two files. */
const HALF_WRITTEN: BundlePem = { ...A2, issuerKey: A1.issuerKey };
/** A bundle that expired before NOW. */
const EXPIRED = generateBundle({ ...GENERATE, now: new Date(NOW.getTime() - 400 * DAY) });

/** A map-backed store: the test sets its content and fires its watchers. */
class FakeStore implements CredentialStore {
  readonly description = "fake store";
  readonly names = DEFAULT_BUNDLE_NAMES;
  readonly #entries = new Map<string, BundlePem>();
  readonly #watchers = new Set<() => void>();
  #failure?: Error;
  #gate?: Promise<void>;
  loads = 0;
  loading = 0;
  mostLoadingAtOnce = 0;
  writes = 0;

  constructor(initial: BundlePem) {
    this.#entries.set("bundle", initial);
  }

  get watching(): number {
    return this.#watchers.size;
  }

  /** Sets what load() answers next: a bundle, nothing, or an error. */
  set(content: BundlePem | null | Error): void {
    this.#failure = content instanceof Error ? content : undefined;
    if (content instanceof Error) return;
    if (content) this.#entries.set("bundle", { ...content });
    else this.#entries.delete("bundle");
  }

  /** Holds every load() until the returned function is called. */
  hold(): () => void {
    let release!: () => void;
    this.#gate = new Promise((resolve) => (release = resolve));
    return () => {
      this.#gate = undefined;
      release();
    };
  }

  /** Sets the content and tells the watchers, as a store's change notification does. */
  change(content: BundlePem | null | Error): void {
    this.set(content);
    for (const watcher of this.#watchers) watcher();
  }

  async load(): Promise<BundlePem | null> {
    this.loads++;
    this.loading++;
    this.mostLoadingAtOnce = Math.max(this.mostLoadingAtOnce, this.loading);
    try {
      await this.#gate;
      if (this.#failure) throw this.#failure;
      const stored = this.#entries.get("bundle");
      return stored ? { ...stored } : null;
    } finally {
      this.loading--;
    }
  }

  create(): Promise<BundlePem> {
    this.writes++;
    return Promise.reject(new Error("the reloader must not write"));
  }

  replace(): Promise<BundlePem> {
    this.writes++;
    return Promise.reject(new Error("the reloader must not write"));
  }

  watch(onChange: () => void): { close(): void } {
    this.#watchers.add(onChange);
    return { close: () => this.#watchers.delete(onChange) };
  }
}

interface LogLine {
  level: string;
  msg: string;
  issuer_expiry?: string;
}

function setup(initial: BundlePem = A1) {
  return setupWith(new FakeStore(initial), initial);
}

/** {@link setup} with any store (and reload timeout). */
function setupWith<S extends CredentialStore>(store: S, initial: BundlePem, timeoutMs?: number) {
  const insecure = new InsecureValidator();
  const state = new CaState(validateBundle(initial, NOW), DEFAULT_SETTINGS, {
    defaultWire: insecure.wire,
    enabled: new Map([[insecure.wire, insecure]]),
  });
  const swaps: TrustBundle[] = [];
  state.onBundle((bundle) => swaps.push(bundle));
  const metrics = new SentryMetrics();
  const lines: LogLine[] = [];
  const logger = new Logger({
    level: "debug",
    json: true,
    scope: "test",
    version: "0",
    sink: (line) => lines.push(JSON.parse(line)),
  });
  const clock = { now: NOW };
  const reloader = new CredentialReloader(
    store,
    state,
    metrics,
    logger,
    () => clock.now,
    undefined,
    timeoutMs,
  );
  return { store, state, swaps, metrics, lines, clock, reloader };
}

async function counterValue(metrics: SentryMetrics): Promise<number> {
  return (await metrics.issuerCertChanged.get()).values[0]?.value ?? 0;
}

async function gaugeValue(gauge: SentryMetrics["issuerCertExpiry"]): Promise<number> {
  return (await gauge.get()).values[0]?.value ?? 0;
}

/** Lets a watch-triggered reload (fake I/O resolves at once) run to its end. */
function settle(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 0));
}

Deno.test("store changes, one after another: swaps, no-ops and problems logged once each", async (t) => {
  const { store, state, swaps, metrics, lines, reloader } = setup();
  reloader.start();
  assert.equal(store.watching, 1);

  const steps: {
    name: string;
    content: BundlePem | null | Error;
    /** How many change notifications the store sends for it. */
    events?: number;
    serving: BundlePem;
    swapped: boolean;
    logged: { level: string; msg: RegExp }[];
  }[] = [
    {
      name: "a new issuer under the same root is swapped in",
      content: A2,
      serving: A2,
      swapped: true,
      logged: [{ level: "info", msg: /^trust bundle reloaded from fake store: issuer rotated$/ }],
    },
    {
      name: "the same bundle again (only the root key added) is no change",
      content: { ...A2, caKey: ROOT_A.caKey },
      events: 2,
      serving: A2,
      swapped: false,
      logged: [],
    },
    {
      name: "a half-written bundle is refused and logged once for three events",
      content: HALF_WRITTEN,
      events: 3,
      serving: A2,
      swapped: false,
      logged: [{
        level: "warning",
        msg:
          /^the changed trust bundle in fake store is not usable: issuer\.key does not match the certificate in issuer\.crt .*; still serving with the current bundle$/,
      }],
    },
    {
      name: "a vanished bundle is a new problem, logged once",
      content: null,
      events: 2,
      serving: A2,
      swapped: false,
      logged: [{
        level: "warning",
        msg:
          /^the trust bundle disappeared from fake store; still serving with the current bundle$/,
      }],
    },
    {
      name: "an unreachable store is another problem, logged once",
      content: new StoreUnavailableError("vault is sealed"),
      events: 2,
      serving: A2,
      swapped: false,
      logged: [{
        level: "warning",
        msg: /^cannot read the trust bundle from fake store now: vault is sealed; still serving/,
      }],
    },
    {
      name: "back to the bundle in use: nothing to log, and the problem is forgotten",
      content: A2,
      serving: A2,
      swapped: false,
      logged: [],
    },
    {
      name: "the same outage after a recovery is logged again",
      content: new StoreUnavailableError("vault is sealed"),
      serving: A2,
      swapped: false,
      logged: [{ level: "warning", msg: /^cannot read the trust bundle .* now: vault is sealed/ }],
    },
    {
      name: "an expired bundle is refused",
      content: EXPIRED,
      serving: A2,
      swapped: false,
      logged: [{ level: "warning", msg: /not usable: .*has expired/ }],
    },
    {
      name: "a new root is swapped in and the log says sidecars need the new anchors",
      content: B,
      serving: B,
      swapped: true,
      logged: [{
        level: "info",
        msg: /^trust bundle reloaded from fake store: the trust anchors changed, sidecars need/,
      }],
    },
  ];

  let expectedSwaps = 0;
  for (const step of steps) {
    await t.step(step.name, async () => {
      const linesBefore = lines.length;
      for (let i = 0; i < (step.events ?? 1); i++) {
        store.change(step.content);
        await settle();
      }
      const logged = lines.slice(linesBefore);
      assert.equal(logged.length, step.logged.length, JSON.stringify(logged));
      step.logged.forEach((expected, i) => {
        assert.equal(logged[i].level, expected.level);
        assert.match(logged[i].msg, expected.msg);
      });
      assert.equal(state.bundle.pem.issuerCrt, step.serving.issuerCrt);
      assert.equal(state.bundle.pem.caCrt, step.serving.caCrt);
      if (step.swapped) expectedSwaps++;
      assert.equal(swaps.length, expectedSwaps, "bundle listeners");
      assert.equal(await counterValue(metrics), expectedSwaps, "issuercert_changed_total");
      if (step.swapped) {
        assert.equal(logged[0].issuer_expiry, state.bundle.issuerNotAfter.toISOString());
        assert.equal(
          await gaugeValue(metrics.issuerCertExpiry),
          Math.floor(state.bundle.issuerNotAfter.getTime() / 1000),
        );
        assert.equal(
          await gaugeValue(metrics.rootCertExpiry),
          Math.floor(state.bundle.rootNotAfter.getTime() / 1000),
        );
      }
    });
  }

  await t.step("after close(), changes are no longer noticed", async () => {
    reloader.close();
    assert.equal(store.watching, 0);
    const loads = store.loads;
    store.change(A1);
    await settle();
    assert.equal(store.loads, loads);
    assert.equal(state.bundle.pem.caCrt, B.caCrt);
  });
  assert.equal(store.writes, 0, "the reloader wrote to the store");
});

Deno.test("validity is judged with the injected clock, not the system's", async () => {
  const { store, state, clock, reloader } = setup();
  const future = generateBundle({ ...GENERATE, now: new Date(NOW.getTime() + 30 * DAY) });
  store.set(future);
  await reloader.reload();
  assert.equal(state.bundle.pem.caCrt, A1.caCrt, "a bundle not valid yet was swapped in");
  clock.now = new Date(NOW.getTime() + 31 * DAY);
  await reloader.reload();
  assert.equal(state.bundle.pem.caCrt, future.caCrt);
});

Deno.test("reloads run one at a time and each sees the store as it is then", async () => {
  const { store, state, reloader } = setup();
  const release = store.hold();
  store.set(A2);
  const first = reloader.reload();
  const second = reloader.reload();
  const third = reloader.reload();
  await settle();
  assert.equal(store.loading, 1, "a second load started before the first finished");
  release();
  await Promise.all([first, second, third]);
  assert.equal(store.loads, 3);
  assert.equal(store.mostLoadingAtOnce, 1);
  assert.equal(state.bundle.pem.issuerCrt, A2.issuerCrt);
});

Deno.test("a failed reload does not stop the next one", async () => {
  const { store, state, reloader } = setup();
  store.set(new Error("a bug in the store"));
  await reloader.reload();
  store.set(B);
  await reloader.reload();
  assert.equal(state.bundle.pem.caCrt, B.caCrt);
});

Deno.test("a FIFO planted as issuer.key is refused and logged; a later valid rotation applies", async () => {
  const directory = await Deno.makeTempDir({ prefix: "sentry-reload-fifo-" });
  const store = new FsCredentialStore({
    directory,
    caFilename: "ca.crt",
    issuerCertFilename: "issuer.crt",
    issuerKeyFilename: "issuer.key",
  });
  await store.create(A1);
  const { reloader, lines, swaps } = setupWith(store, A1, 2000);
  await Deno.remove(store.paths.issuerKey);
  const mkfifo = await new Deno.Command("mkfifo", { args: [store.paths.issuerKey] }).output();
  assert.ok(mkfifo.success);
  await reloader.reload();
  assert.equal(swaps.length, 0);
  assert.ok(
    lines.some((line) => line.level === "warning" && /issuer\.key: it is a FIFO/.test(line.msg)),
    JSON.stringify(lines),
  );
  // The FIFO replaced by a valid rotation: applied (the reloader is not stuck).
  await Deno.remove(store.paths.issuerKey);
  await Deno.writeTextFile(join(directory, "issuer.key"), A2.issuerKey, { mode: 0o600 });
  await Deno.writeTextFile(join(directory, "issuer.crt"), A2.issuerCrt);
  await reloader.reload();
  assert.equal(swaps.length, 1);
  assert.equal(swaps[0].pem.issuerKey, A2.issuerKey);
});

Deno.test("a reload that never ends is given up, and the next reload runs", async () => {
  const store = new FakeStore(A1);
  const { reloader, lines, swaps } = setupWith(store, A1, 50);
  const release = store.hold();
  await reloader.reload();
  assert.ok(lines.some((line) => /took more than 0\.05s: gave up/.test(line.msg)));
  release();
  store.set(A2);
  await reloader.reload();
  assert.equal(swaps.length, 1);
});

Deno.test("only an issuer change counts in issuercert_changed_total; a written bundle serves without a read", async () => {
  const { store, state, swaps, metrics, reloader } = setup(A1);
  reloader.start();
  // The anchors gain a root (a rotation's distributing phase): swapped, not an issuer change.
  const withSecondRoot: BundlePem = { ...A1, caCrt: A1.caCrt + B.caCrt };
  store.change(withSecondRoot);
  await settle();
  assert.equal(state.bundle.pem.caCrt, withSecondRoot.caCrt);
  assert.equal(swaps.length, 1);
  assert.equal(await counterValue(metrics), 0, "anchors only: no issuer change");
  // reload(written) uses the bundle given, not the store (which still holds the old one here).
  const renewed: BundlePem = {
    ...withSecondRoot,
    issuerCrt: A2.issuerCrt,
    issuerKey: A2.issuerKey,
  };
  await reloader.reload(renewed);
  assert.equal(state.bundle.pem.issuerCrt, A2.issuerCrt);
  assert.equal(await counterValue(metrics), 1);
  reloader.close();
});
