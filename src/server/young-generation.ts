/**
 * Caps the V8 young generation of the server's main thread. Under sustained load V8 doubles
 * the new space (two semi-spaces) up to 16 MB per semi-space, 32 MB in all — a fifth of the
 * server's memory. A Node command line would say `--max-semi-space-size=4`, but the single
 * binary takes no V8 flags and that one is read only at start-up. What V8 reads each time it
 * grows the new space is `--semi-space-growth-factor`: once a semi-space has reached the cap,
 * setting the factor to 1 stops further growth. Measured with bench/run.ts: the peak RSS after
 * 100,000 certificates drops by about 20 MB; a smaller cap (1 MB) instead promotes in-flight
 * requests to the old generation and costs more than it saves. Best effort: where V8 ignores
 * the flag, nothing changes.
 *
 * @module
 */
import { clearInterval, setInterval } from "node:timers";
import { getHeapSpaceStatistics, setFlagsFromString } from "node:v8";

const MIB = 1024 * 1024;

/** The parts of node:v8 used here (tests pass a fake). */
export interface V8Heap {
  getHeapSpaceStatistics(): { space_name: string; space_size: number }[];
  setFlagsFromString(flags: string): void;
}

const NODE_V8: V8Heap = { getHeapSpaceStatistics, setFlagsFromString };

/**
 * Watches the new space every `intervalMs` and stops its growth once it holds two semi-spaces
 * of `semiSpaceMb`. Returns a function that stops watching.
 */
export function capYoungGeneration(
  semiSpaceMb = 4,
  intervalMs = 200,
  v8: V8Heap = NODE_V8,
): () => void {
  const timer = setInterval(() => {
    const newSpace = v8.getHeapSpaceStatistics().find((space) => space.space_name === "new_space");
    if (newSpace && newSpace.space_size >= 2 * semiSpaceMb * MIB) {
      v8.setFlagsFromString("--semi-space-growth-factor=1");
      clearInterval(timer);
    }
  }, intervalMs);
  timer.unref();
  return () => clearInterval(timer);
}
