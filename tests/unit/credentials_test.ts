/**
 * src/server/credentials.ts (`loadOrCreateBundle`) against a scripted fake store: a stored
 * bundle is loaded and validated, an empty store gets a generated bundle (create-only, and a
 * concurrent winner's bundle is adopted), a broken bundle is an error and is never
 * overwritten, and an unavailable store is waited for with backoff but never leads to
 * generating a CA.
 */
import assert from "node:assert/strict";
import { BundleError, type BundlePem, generateBundle } from "../../src/ca/bundle.ts";
import { Logger } from "../../src/observability/logger.ts";
import { loadOrCreateBundle, type StartupRetry } from "../../src/server/credentials.ts";
import { type CredentialStore, StoreError, StoreUnavailableError } from "../../src/stores/store.ts";
import { StartupAbortedError } from "../../src/util/startup-aborted.ts";
import { parseCertificate } from "../../src/x509/parse.ts";
import { decodePem } from "../../src/x509/pem.ts";
import type { CaKeyAlgorithm } from "../../src/x509/keys.ts";

const DAY = 86_400_000;
/** Far from the system clock, so that only the injected clock can make these bundles valid. */
const NOW = new Date("2031-07-01T00:00:00Z");
const GENERATE = {
  trustDomain: "example.org",
  namespace: "sentry-ns",
  algorithm: "ecdsa-p256" as const,
  ttlMs: 365 * DAY,
  skewMs: 15 * 60_000,
};
const STORED = generateBundle({ ...GENERATE, now: NOW });
const OTHER = generateBundle({ ...GENERATE, now: NOW });
/**
 * Retry settings on a made-up clock: a pause returns at once, is recorded, and moves the clock
 * on by its length (a test must not wait).
 */
function instant(timeoutMs = 5_000, maxDelayMs = 250) {
  const pauses: number[] = [];
  let clock = 0;
  const advance = (ms: number) => clock += ms;
  const sleep = (ms: number) => {
    pauses.push(ms);
    advance(ms);
    return Promise.resolve();
  };
  const retry: StartupRetry = { timeoutMs, maxDelayMs, sleep, now: () => clock };
  return { retry, pauses, advance };
}

/** What one call of load() or create() does: answer, or throw. */
type Step<T> = T | Error;

/** A store that answers load() and create() from scripts (the last step repeats). */
class ScriptedStore implements CredentialStore {
  readonly description = "scripted store";
  readonly names = { caCrt: "anchors.pem", issuerCrt: "issuer.pem", issuerKey: "issuer-key.pem" };
  readonly created: BundlePem[] = [];
  loads = 0;

  constructor(
    readonly loadScript: Step<BundlePem | null>[],
    /** `undefined`: create stores what it is given. */
    readonly createScript: Step<BundlePem | undefined>[] = [undefined],
  ) {}

  load(): Promise<BundlePem | null> {
    const step = this.loadScript[Math.min(this.loads++, this.loadScript.length - 1)];
    return step instanceof Error ? Promise.reject(step) : Promise.resolve(step);
  }

  create(bundle: BundlePem): Promise<BundlePem> {
    const index = this.created.length;
    this.created.push(bundle);
    const step = this.createScript[Math.min(index, this.createScript.length - 1)];
    if (step instanceof Error) return Promise.reject(step);
    return Promise.resolve(step ?? bundle);
  }

  replace(): Promise<BundlePem> {
    return Promise.reject(new Error("start-up must never replace a bundle"));
  }

  watch(): { close(): void } {
    return { close() {} };
  }
}

function capture() {
  const lines: { level: string; msg: string }[] = [];
  const logger = new Logger({
    level: "debug",
    json: true,
    scope: "test",
    version: "0",
    sink: (line) => lines.push(JSON.parse(line)),
  });
  return { logger, lines };
}

function run(
  store: ScriptedStore,
  retry: StartupRetry = instant().retry,
  algorithm: CaKeyAlgorithm = GENERATE.algorithm,
) {
  const { logger, lines } = capture();
  const promise = loadOrCreateBundle(
    store,
    {
      trustDomain: GENERATE.trustDomain,
      namespace: GENERATE.namespace,
      algorithm,
      ttlMs: GENERATE.ttlMs,
      skewMs: GENERATE.skewMs,
    },
    () => NOW,
    logger,
    retry,
  );
  return { promise, lines };
}

Deno.test("a stored bundle is loaded, validated at the injected time, and nothing is created", async () => {
  const store = new ScriptedStore([STORED]);
  const { promise, lines } = run(store);
  const bundle = await promise;
  assert.deepEqual(bundle.pem, STORED);
  assert.equal(store.created.length, 0);
  assert.deepEqual(lines.map((l) => l.msg), ["loaded trust bundle from scripted store"]);
});

Deno.test("an empty store gets a generated root and issuer, stored create-only", async (t) => {
  for (const algorithm of ["ecdsa-p256", "ed25519"] as const) {
    await t.step(algorithm, async () => {
      const store = new ScriptedStore([null]);
      const { promise, lines } = run(store, undefined, algorithm);
      const bundle = await promise;
      assert.equal(store.created.length, 1);
      assert.equal(bundle.pem, store.created[0], "the bundle returned is the one stored");
      const [root] = decodePem(bundle.pem.caCrt).map((block) => parseCertificate(block.der));
      assert.equal(root.notBefore.getTime(), NOW.getTime() - GENERATE.skewMs);
      assert.equal(root.notAfter.getTime(), NOW.getTime() + GENERATE.ttlMs);
      assert.equal(bundle.issuerNotAfter.getTime(), NOW.getTime() + GENERATE.ttlMs);
      assert.deepEqual(lines.map((l) => l.msg), [
        `no trust bundle in scripted store: generating a new ${algorithm} root and issuer`,
        "stored the new trust bundle in scripted store",
      ]);
    });
  }
});

Deno.test("another instance's bundle, stored first, is adopted", async () => {
  const store = new ScriptedStore([null], [OTHER]);
  const { promise, lines } = run(store);
  const bundle = await promise;
  assert.equal(store.created.length, 1);
  assert.deepEqual(bundle.pem, OTHER);
  assert.notEqual(store.created[0].caCrt, OTHER.caCrt);
  assert.equal(
    lines.at(-1)?.msg,
    "another instance stored a trust bundle in scripted store first: using it",
  );
});

Deno.test("a broken or partial bundle is an error naming the store's file, never overwritten", async (t) => {
  const rows: {
    name: string;
    store: ScriptedStore;
    error: RegExp;
    type: new (message: string) => Error;
  }[] = [
    {
      name: "key of another bundle",
      store: new ScriptedStore([{ ...STORED, issuerKey: OTHER.issuerKey }]),
      error: /^issuer-key\.pem does not match the certificate in issuer\.pem/,
      type: BundleError,
    },
    {
      name: "not PEM",
      store: new ScriptedStore([{ ...STORED, caCrt: "garbage" }]),
      error: /^anchors\.pem contains no PEM CERTIFICATE block \(/,
      type: BundleError,
    },
    {
      name: "the store says its content is partial",
      store: new ScriptedStore([new StoreError("issuer.key is missing")]),
      error: /^issuer\.key is missing$/,
      type: StoreError,
    },
    {
      name: "a winner's bundle that is broken",
      store: new ScriptedStore([null], [{ ...OTHER, issuerKey: STORED.issuerKey }]),
      error: /does not match the certificate/,
      type: BundleError,
    },
  ];
  for (const row of rows) {
    await t.step(row.name, async () => {
      const created = row.store.loadScript[0] === null ? 1 : 0;
      await assert.rejects(run(row.store).promise, (error) => {
        assert.ok(error instanceof row.type, `${error}`);
        assert.ok(!(error instanceof StoreUnavailableError), "retried as if unavailable");
        assert.match((error as Error).message, row.error);
        return true;
      });
      assert.equal(row.store.loads, 1, "a broken bundle was retried");
      assert.equal(row.store.created.length, created);
    });
  }
});

Deno.test("an unavailable store is waited for with backoff, then its bundle is loaded", async () => {
  const down = new StoreUnavailableError("vault is sealed");
  const store = new ScriptedStore([down, down, down, STORED]);
  const { retry, pauses } = instant(5_000, 600);
  const { promise, lines } = run(store, retry);
  const bundle = await promise;
  assert.deepEqual(bundle.pem, STORED);
  assert.equal(store.loads, 4);
  assert.equal(store.created.length, 0, "generated a CA because the store was unavailable");
  assert.deepEqual(pauses, [250, 500, 600], "not doubling up to maxDelayMs between tries");
  const warnings = lines.filter((l) => l.level === "warning").map((l) => l.msg);
  assert.deepEqual(warnings, [
    "credential store unavailable, retrying in 0.3s: vault is sealed",
    "credential store unavailable, retrying in 0.5s: vault is sealed",
    "credential store unavailable, retrying in 0.6s: vault is sealed",
  ]);
});

Deno.test("an unavailable store during create is retried with the same generated bundle", async () => {
  const down = new StoreUnavailableError("API server down");
  const store = new ScriptedStore([null], [down, undefined]);
  const { promise } = run(store);
  const bundle = await promise;
  assert.equal(store.created.length, 2);
  assert.equal(store.created[1], store.created[0], "a second CA was generated for the retry");
  assert.equal(bundle.pem, store.created[0]);
});

Deno.test("a store unavailable past the timeout is an error, and nothing is generated", async (t) => {
  await t.step("no time to wait: the first failure is final", async () => {
    const store = new ScriptedStore([new StoreUnavailableError("sealed")]);
    const { retry, pauses } = instant(0, 250);
    await assert.rejects(run(store, retry).promise, StoreUnavailableError);
    assert.equal(store.loads, 1);
    assert.deepEqual(pauses, []);
    assert.equal(store.created.length, 0);
  });
  await t.step("gives up before a pause would pass the deadline", async () => {
    const store = new ScriptedStore([new StoreUnavailableError("sealed")]);
    const { retry, pauses } = instant(600, 250);
    await assert.rejects(run(store, retry).promise, /^StoreUnavailableError: sealed$/);
    assert.equal(store.loads, 3, "tries at 0, 250 and 500 ms");
    assert.deepEqual(pauses, [250, 250], "waited past the deadline");
    assert.equal(store.created.length, 0);
  });
  await t.step("the time the store takes to fail counts too", async () => {
    const { retry, pauses, advance } = instant(600, 250);
    const store = new ScriptedStore([new StoreUnavailableError("sealed")]);
    const load = store.load.bind(store);
    store.load = () => {
      advance(400); // each try takes 400 ms before it fails
      return load();
    };
    await assert.rejects(run(store, retry).promise, StoreUnavailableError);
    assert.equal(store.loads, 1, "retried although the next try would start after the deadline");
    assert.deepEqual(pauses, []);
  });
});

Deno.test("a stop signal ends the wait for an unavailable store, but not a start-up whose store answers", async (t) => {
  await t.step(
    "aborted during the pause: StartupAbortedError after that try, nothing generated",
    async () => {
      const store = new ScriptedStore([new StoreUnavailableError("sealed")]);
      const { retry, pauses } = instant(60_000, 250);
      const stop = new AbortController();
      const sleep = retry.sleep!;
      retry.sleep = async (ms) => {
        await sleep(ms);
        if (pauses.length === 2) stop.abort();
      };
      await assert.rejects(
        run(store, { ...retry, signal: stop.signal }).promise,
        StartupAbortedError,
      );
      assert.equal(store.loads, 2, "tried again after the signal");
      assert.equal(store.created.length, 0);
    },
  );
  await t.step("already aborted, store answering: the bundle is loaded", async () => {
    const stop = new AbortController();
    stop.abort();
    const store = new ScriptedStore([STORED]);
    const bundle = await run(store, { ...instant().retry, signal: stop.signal }).promise;
    assert.deepEqual(bundle.pem, STORED);
  });
});
