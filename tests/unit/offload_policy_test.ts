/**
 * src/server/offload-policy.ts: a lone request in a quiet event-loop turn runs inline; a
 * request with others in progress, or a second one read in the same turn, goes to the thread
 * pool; the per-turn count starts again once the turn is over.
 */
import assert from "node:assert/strict";
import { setImmediate } from "node:timers";
import { OffloadPolicy } from "../../src/server/offload-policy.ts";

/** Resolves after the current turn's setImmediate callbacks have run. */
function nextTurn(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

Deno.test("offload decisions, turn by turn", async (t) => {
  const steps: { name: string; turn: { inFlight: number; offload: boolean }[] }[] = [
    { name: "a lone request runs inline", turn: [{ inFlight: 1, offload: false }] },
    {
      name: "a request with another one in progress is offloaded",
      turn: [{ inFlight: 2, offload: true }],
    },
    {
      name: "the second and third arrivals of one turn are offloaded, the first is not",
      turn: [
        { inFlight: 1, offload: false },
        { inFlight: 1, offload: true },
        { inFlight: 1, offload: true },
      ],
    },
    {
      name: "after the busy turn, a lone request runs inline again",
      turn: [{ inFlight: 1, offload: false }],
    },
  ];
  const policy = new OffloadPolicy();
  for (const step of steps) {
    await t.step(step.name, async () => {
      const decisions = step.turn.map(({ inFlight }) => policy.onArrival(inFlight));
      assert.deepEqual(decisions, step.turn.map(({ offload }) => offload));
      await nextTurn();
    });
  }
});

Deno.test("arrivals are counted per policy: two policies do not share a turn", async () => {
  const first = new OffloadPolicy();
  const second = new OffloadPolicy();
  assert.equal(first.onArrival(1), false);
  assert.equal(second.onArrival(1), false);
  assert.equal(first.onArrival(1), true);
  await nextTurn();
});
