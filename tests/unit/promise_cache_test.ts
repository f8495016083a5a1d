/**
 * src/util/promise-cache.ts with a movable clock: shared loads, time to live from the end of a
 * load, failed loads forgotten, invalidation of a stale value only, and the size bound.
 */
import assert from "node:assert/strict";
import { PromiseCache } from "../../src/util/promise-cache.ts";

function clock() {
  let now = 1_000;
  return { now: () => now, advance: (ms: number) => now += ms };
}

Deno.test("concurrent gets share one load; the value lives for its TTL after loading", async () => {
  const time = clock();
  const cache = new PromiseCache<string>(() => 100, 10, time.now);
  let loads = 0;
  let finish!: (value: string) => void;
  const load = () => {
    loads++;
    return new Promise<string>((resolve) => finish = resolve);
  };
  const first = cache.get("k", load);
  const second = cache.get("k", load);
  assert.equal(loads, 1);
  time.advance(500); // a slow load: its time to live starts when it ends
  finish("v1");
  assert.deepEqual(await Promise.all([first, second]), ["v1", "v1"]);
  time.advance(99);
  assert.equal(await cache.get("k", () => Promise.resolve("v2")), "v1");
  time.advance(1);
  assert.equal(await cache.get("k", () => Promise.resolve("v2")), "v2");
});

Deno.test("a failed load is forgotten; a zero TTL keeps nothing", async () => {
  const cache = new PromiseCache<number>((value) => value, 10, clock().now);
  await assert.rejects(cache.get("k", () => Promise.reject(new Error("API down"))), /API down/);
  assert.equal(await cache.get("k", () => Promise.resolve(5)), 5);
  assert.equal(await cache.get("zero", () => Promise.resolve(0)), 0);
  assert.equal(cache.size, 1);
});

Deno.test("invalidate forgets only the stale value it names", async () => {
  const cache = new PromiseCache<{ v: number }>(() => 1_000, 10, clock().now);
  const old = await cache.get("k", () => Promise.resolve({ v: 1 }));
  cache.invalidate("k", { v: 1 }); // an equal but different object: kept
  assert.equal(await cache.get("k", () => Promise.resolve({ v: 2 })), old);
  cache.invalidate("k", old);
  assert.deepEqual(await cache.get("k", () => Promise.resolve({ v: 3 })), { v: 3 });
});

Deno.test("past its bound the cache drops stale entries first, then the oldest", async () => {
  const time = clock();
  const cache = new PromiseCache<string>((value) => value === "short" ? 10 : 1_000, 2, time.now);
  await cache.get("a", () => Promise.resolve("short"));
  await cache.get("b", () => Promise.resolve("long"));
  time.advance(20); // "a" is stale now
  await cache.get("c", () => Promise.resolve("long"));
  assert.equal(cache.size, 2);
  assert.equal(await cache.get("b", () => Promise.resolve("reloaded")), "long");
  await cache.get("d", () => Promise.resolve("long"));
  assert.equal(cache.size, 2);
  assert.equal(await cache.get("b", () => Promise.resolve("reloaded")), "reloaded");
});
