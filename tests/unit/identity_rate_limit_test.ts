/**
 * The per-identity rate limit: a burst of a minute's worth, then the configured rate; one
 * identity's limit never touches another's; memory stays bounded.
 */
import assert from "node:assert/strict";
import { IdentityRateLimiter } from "../../src/server/identity-rate-limit.ts";

Deno.test("a minute's worth at once, then the configured rate", () => {
  const limiter = new IdentityRateLimiter(6); // 6 a minute: one every 10 s
  const t0 = 1_000_000;
  for (let i = 0; i < 6; i++) assert.ok(limiter.tryTake("spiffe://td/ns/a/app", t0), `#${i}`);
  assert.equal(limiter.tryTake("spiffe://td/ns/a/app", t0), false);
  assert.equal(limiter.tryTake("spiffe://td/ns/a/app", t0 + 9_000), false);
  assert.ok(limiter.tryTake("spiffe://td/ns/a/app", t0 + 10_000));
  assert.equal(limiter.tryTake("spiffe://td/ns/a/app", t0 + 10_000), false);
  // A long pause refills to a minute's worth, not more.
  const later = t0 + 3_600_000;
  for (let i = 0; i < 6; i++) assert.ok(limiter.tryTake("spiffe://td/ns/a/app", later));
  assert.equal(limiter.tryTake("spiffe://td/ns/a/app", later), false);
});

Deno.test("one identity over its limit does not slow another", () => {
  const limiter = new IdentityRateLimiter(1);
  assert.ok(limiter.tryTake("spiffe://td/ns/a/noisy", 0));
  assert.equal(limiter.tryTake("spiffe://td/ns/a/noisy", 0), false);
  assert.ok(limiter.tryTake("spiffe://td/ns/a/quiet", 0));
  assert.ok(limiter.tryTake("spiffe://td/ns/b/noisy", 0), "namespaces are separate identities");
});

Deno.test("the number of buckets is bounded; idle ones go first", () => {
  const limiter = new IdentityRateLimiter(60, 3);
  limiter.tryTake("busy", 0);
  limiter.tryTake("busy", 0); // 58 left: not idle
  limiter.tryTake("idle-1", 0);
  limiter.tryTake("idle-2", 0);
  // One second later the idle ones have refilled; a fourth identity evicts them, not "busy".
  assert.ok(limiter.tryTake("new", 1_000));
  assert.ok(limiter.size <= 3);
  // "busy" kept its bucket: 58 left plus one refilled in that second, not a fresh 60.
  let taken = 0;
  while (limiter.tryTake("busy", 1_000)) taken++;
  assert.equal(taken, 59);
  // When nothing is idle, the oldest buckets go.
  for (let i = 0; i < 10; i++) limiter.tryTake(`flood-${i}`, 1_000);
  assert.ok(limiter.size <= 3);
});
