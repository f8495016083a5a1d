/**
 * src/server/young-generation.ts with a scripted node:v8: the growth factor is set once, when
 * the new space reaches two semi-spaces of the cap, and then polling stops; the returned
 * function stops polling early.
 */
import assert from "node:assert/strict";
import { getHeapSpaceStatistics } from "node:v8";
import { capYoungGeneration, type V8Heap } from "../../src/server/young-generation.ts";

const MIB = 1024 * 1024;

/** A heap whose new space has the next scripted size at each read (the last one repeats). */
function scriptedHeap(sizes: (number | undefined)[]) {
  const flags: string[] = [];
  let reads = 0;
  const heap: V8Heap = {
    getHeapSpaceStatistics() {
      const size = sizes[Math.min(reads, sizes.length - 1)];
      reads++;
      return [
        { space_name: "old_space", space_size: 512 * MIB },
        ...(size === undefined ? [] : [{ space_name: "new_space", space_size: size }]),
      ];
    },
    setFlagsFromString(flag) {
      flags.push(flag);
    },
  };
  return {
    heap,
    flags,
    get reads() {
      return reads;
    },
    /**
     * Resolves once the heap has been read `count` times (the cap's timer is unref'd, so this
     * keeps the event loop alive while waiting).
     */
    async readsReach(count: number): Promise<void> {
      const deadline = Date.now() + 5_000;
      while (reads < count) {
        if (Date.now() > deadline) throw new Error(`only ${reads} of ${count} reads`);
        await sleep(1);
      }
    },
  };
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

Deno.test("the growth factor is set once the new space holds two semi-spaces of the cap", async (t) => {
  const rows: { name: string; semiSpaceMb?: number; sizes: (number | undefined)[]; at: number }[] =
    [
      {
        name: "default cap (4 MB): 8 MiB is the threshold",
        sizes: [2 * MIB, 8 * MIB - 1, 8 * MIB],
        at: 3,
      },
      { name: "cap of 1 MB: 2 MiB is the threshold", semiSpaceMb: 1, sizes: [MIB, 2 * MIB], at: 2 },
      { name: "already over the cap at the first look", sizes: [32 * MIB], at: 1 },
    ];
  for (const row of rows) {
    await t.step(row.name, async () => {
      const scripted = scriptedHeap(row.sizes);
      const stop = capYoungGeneration(row.semiSpaceMb, 1, scripted.heap);
      try {
        await scripted.readsReach(row.at);
        assert.deepEqual(scripted.flags, ["--semi-space-growth-factor=1"]);
        assert.equal(scripted.reads, row.at);
        await sleep(20);
        assert.equal(scripted.reads, row.at, "kept polling after setting the flag");
        assert.equal(scripted.flags.length, 1);
      } finally {
        stop();
      }
    });
  }
});

Deno.test("below the cap, or with no new space reported, nothing is set and polling goes on", async (t) => {
  for (
    const [name, size] of [["below the cap", 8 * MIB - 1], ["no new_space", undefined]] as const
  ) {
    await t.step(name, async () => {
      const scripted = scriptedHeap([size]);
      const stop = capYoungGeneration(4, 1, scripted.heap);
      try {
        await scripted.readsReach(5);
        assert.deepEqual(scripted.flags, []);
      } finally {
        stop();
      }
    });
  }
});

Deno.test("the returned function stops polling", async () => {
  const scripted = scriptedHeap([MIB, MIB, 64 * MIB]);
  const stop = capYoungGeneration(4, 1, scripted.heap);
  await scripted.readsReach(1);
  stop();
  const reads = scripted.reads;
  await sleep(20);
  assert.equal(scripted.reads, reads);
  assert.deepEqual(scripted.flags, []);
});

Deno.test("this runtime's node:v8 reports the new space the cap watches", () => {
  const newSpace = getHeapSpaceStatistics().find((space) => space.space_name === "new_space");
  assert.ok(newSpace, "no new_space in getHeapSpaceStatistics(): the cap would never apply");
  assert.ok(newSpace.space_size > 0);
});
