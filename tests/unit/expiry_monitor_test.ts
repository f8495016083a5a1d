/**
 * ExpiryMonitor with a movable clock: no warning far from expiry, a warning per certificate
 * inside 30 days, "expired" after NotAfter.
 */
import assert from "node:assert/strict";
import { testTrustBundle } from "../helpers/trust_bundle.ts";
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
  assert.match(warnings[0], /issuer certificate expires in 20\.0 days/);
  assert.match(warnings[1], /root certificate \(trust anchor\) expires in 20\.0 days/);
  assert.equal(JSON.parse(lines[0]).level, "warn");

  now = new Date(start.getTime() + 366 * DAY);
  assert.match(monitor.check()[0], /issuer certificate expired at 2031-01-01T00:00:00\.000Z/);
  monitor.close();
});
