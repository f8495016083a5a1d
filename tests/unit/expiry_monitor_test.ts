/**
 * ExpiryMonitor with a movable clock: no warning far from expiry, a warning per certificate
 * inside 30 days, "expired" after NotAfter; with root rotation driven, what will happen is
 * appended; an issuer outliving the root it chains to is warned about, but not the old root of
 * a rotation that has switched signing.
 */
import assert from "node:assert/strict";
import { testTrustBundle } from "../helpers/trust_bundle.ts";
import { type BundlePem, generateBundle, validateBundle } from "../../src/ca/bundle.ts";
import { planRotation, type RotationSettings, startRotation } from "../../src/ca/root-rotation.ts";
import { DEFAULT_SETTINGS } from "../../src/config/configuration.ts";
import { Logger } from "../../src/observability/logger.ts";
import { CaState } from "../../src/server/ca-state.ts";
import { ExpiryMonitor } from "../../src/server/expiry-monitor.ts";
import { InsecureValidator } from "../../src/identity/insecure.ts";

const DAY = 86_400_000;

Deno.test("expiry warnings follow the clock", () => {
  const start = new Date("2030-01-01T00:00:00Z");
  const bundle = testTrustBundle({ now: start, namespace: "default" });
  const insecure = new InsecureValidator();
  const state = new CaState(bundle, DEFAULT_SETTINGS, {
    defaultWire: insecure.wire,
    enabled: new Map([[insecure.wire, insecure]]),
  });
  const lines: string[] = [];
  const logger = new Logger({
    level: "info",
    json: true,
    scope: "test",
    version: "0",
    sink: (l) => lines.push(l),
  });
  let now = start;
  const monitor = new ExpiryMonitor(state, logger, () => now);

  assert.deepEqual(monitor.check(), []);
  now = new Date(start.getTime() + 300 * DAY);
  assert.deepEqual(monitor.check(), []);

  now = new Date(start.getTime() + 345 * DAY); // 20 days left for both
  const warnings = monitor.check();
  assert.equal(warnings.length, 2);
  assert.equal(
    warnings[0],
    "Dapr issuer certificate expiration warning: certificate expires in 20 days and 0 hours",
  );
  // The text Dapr's documentation tells operators to alert on.
  assert.equal(
    warnings[1],
    "Dapr root certificate expiration warning: certificate expires in 20 days and 0 hours",
  );
  const logged = JSON.parse(lines[1]);
  assert.equal(logged.level, "warning", "logrus's level name, as Dapr writes it");
  assert.equal(logged.msg, warnings[1]);
  assert.equal(logged.not_after, bundle.rootNotAfter.toISOString());

  now = new Date(start.getTime() + 345 * DAY - 9 * 3_600_000 - 1);
  assert.match(monitor.check()[1], /expires in 20 days and 9 hours$/);

  now = new Date(start.getTime() + 366 * DAY);
  assert.equal(
    monitor.check()[0],
    "Dapr issuer certificate expiration warning: certificate has expired.",
  );
  monitor.close();
});

Deno.test("an issuer that outlives its root is warned about once per bundle", () => {
  const start = new Date("2030-01-01T00:00:00Z");
  const good = testTrustBundle({ now: start, namespace: "default" });
  // generateBundle clamps the issuer to the root; a hand-made bundle (or one loaded from files)
  // need not be.
  const issuerNotAfter = new Date(good.rootNotAfter.getTime() + 30 * DAY);
  const outliving = { ...good, issuerNotAfter };
  const insecure = new InsecureValidator();
  const state = new CaState(outliving, DEFAULT_SETTINGS, {
    defaultWire: insecure.wire,
    enabled: new Map([[insecure.wire, insecure]]),
  });
  const lines: string[] = [];
  const logger = new Logger({
    level: "info",
    json: true,
    scope: "test",
    version: "0",
    sink: (l) => lines.push(l),
  });
  const monitor = new ExpiryMonitor(state, logger, () => start);
  const expected =
    `issuer certificate outlives the root: issuer NotAfter ${issuerNotAfter.toISOString()} is after the root's ${good.rootNotAfter.toISOString()}; every certificate chain breaks ` +
    "when the root expires, so rotate the root (and issuer) before then";
  assert.deepEqual(monitor.check(), [expected]);
  const logged = JSON.parse(lines[0]);
  assert.equal(logged.level, "warning");
  assert.equal(logged.msg, expected);
  assert.equal(logged.root_not_after, good.rootNotAfter.toISOString());
  assert.deepEqual(monitor.check(), [], "not repeated hourly for the same bundle");
  assert.equal(lines.length, 1);
  monitor.close();

  // A bundle whose issuer ends with the root gives no such warning.
  const fine = new ExpiryMonitor(
    new CaState(good, DEFAULT_SETTINGS, {
      defaultWire: insecure.wire,
      enabled: new Map([[insecure.wire, insecure]]),
    }),
    logger,
    () => start,
  );
  assert.deepEqual(fine.check(), []);
  fine.close();
});

Deno.test("with rotation driven, each expiry warning says what will happen after Dapr's text", () => {
  const start = new Date("2030-01-01T00:00:00Z");
  const bundle = testTrustBundle({ now: start, namespace: "default" });
  const insecure = new InsecureValidator();
  const state = new CaState(bundle, DEFAULT_SETTINGS, {
    defaultWire: insecure.wire,
    enabled: new Map([[insecure.wire, insecure]]),
  });
  const logger = new Logger({
    level: "info",
    json: true,
    scope: "test",
    version: "0",
    sink: () => {},
  });
  let outlook: string | undefined = "automatic root rotation starts at the next check";
  let asked = 0;
  const now = new Date(start.getTime() + 345 * DAY); // 20 days left for both
  const monitor = new ExpiryMonitor(state, logger, () => now, {
    rotationOutlook: () => (asked++, outlook),
  });
  assert.deepEqual(monitor.check(), [
    "Dapr issuer certificate expiration warning: certificate expires in 20 days and 0 hours " +
    "(automatic root rotation starts at the next check)",
    "Dapr root certificate expiration warning: certificate expires in 20 days and 0 hours " +
    "(automatic root rotation starts at the next check)",
  ]);
  assert.equal(asked, 1, "asked once per check");
  outlook = undefined; // rotation off and none in progress: Dapr's text alone
  assert.equal(
    monitor.check()[1],
    "Dapr root certificate expiration warning: certificate expires in 20 days and 0 hours",
  );
  const quiet = new ExpiryMonitor(state, logger, () => start, {
    rotationOutlook: () => (asked++, outlook),
  });
  asked = 0;
  assert.deepEqual(quiet.check(), []);
  assert.equal(asked, 0, "not asked when nothing expires soon");
});

Deno.test("during a root rotation the old root's earlier expiry is no 'issuer outlives' alarm", async () => {
  const now = new Date("2030-01-01T00:00:00Z");
  const old = generateBundle({
    trustDomain: "cluster.local",
    namespace: "dapr-system",
    algorithm: "ecdsa-p256",
    now,
    ttlMs: 2 * 3_600_000,
    skewMs: 0,
  });
  const settings: RotationSettings = {
    triggerWindowMs: 720 * 3_600_000,
    propagationWindowMs: 0,
    workloadTtlMs: 60_000,
    completionMarginMs: 60_000,
    skewMs: 0,
    algorithm: "ecdsa-p256",
    rootTtlMs: 365 * DAY,
    trustDomain: "cluster.local",
    namespace: "dapr-system",
  };
  const started = await startRotation(old, now, settings, "manual");
  const step = await planRotation(started, now, settings);
  assert.equal(step.kind, "switch");
  // Signing with the new one-year issuer while the two-hour old root is still an anchor.
  const signing = validateBundle((step as { next: BundlePem }).next, now);
  assert.ok(signing.issuerNotAfter > signing.rootNotAfter, "the earliest anchor is the old root");
  const insecure = new InsecureValidator();
  const state = new CaState(signing, DEFAULT_SETTINGS, {
    defaultWire: insecure.wire,
    enabled: new Map([[insecure.wire, insecure]]),
  });
  const lines: string[] = [];
  const logger = new Logger({
    level: "info",
    json: true,
    scope: "test",
    version: "0",
    sink: (l) => lines.push(l),
  });
  const warnings = new ExpiryMonitor(state, logger, () => now).check();
  assert.deepEqual(
    warnings.filter((warning) => warning.startsWith("issuer certificate outlives the root")),
    [],
  );
  assert.deepEqual(warnings, [
    "Dapr root certificate expiration warning: certificate expires in 0 days and 2 hours",
  ], "the old root's expiry is still reported");
});
