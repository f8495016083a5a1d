/** src/util/backoff.ts: doubling steps with a ceiling, reset, and jitter within the step. */
import assert from "node:assert/strict";
import { Backoff } from "../../src/util/backoff.ts";

Deno.test("delays double up to the ceiling and start over after reset", () => {
  const backoff = new Backoff({ initialMs: 250, maxMs: 1_500 });
  assert.deepEqual([1, 2, 3, 4, 5].map(() => backoff.next()), [250, 500, 1_000, 1_500, 1_500]);
  backoff.reset();
  assert.equal(backoff.next(), 250);
});

Deno.test("with jitter a delay lies in the upper half of its step", () => {
  const low = new Backoff({ initialMs: 200, maxMs: 5_000, jitter: true, random: () => 0 });
  const high = new Backoff({ initialMs: 200, maxMs: 5_000, jitter: true, random: () => 1 });
  assert.deepEqual([low.next(), low.next(), low.next()], [100, 200, 400]);
  assert.deepEqual([high.next(), high.next(), high.next()], [200, 400, 800]);
});
