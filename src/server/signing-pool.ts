/**
 * A pool of signing worker threads (signing-worker.ts): the server hands it the CPU-bound part
 * of SignCertificate calls that arrive in batches, so that certificates are signed on every
 * core while the event loop keeps reading and answering gRPC.
 *
 * Each trust bundle gets a generation number the first time it is used; a worker receives a
 * generation's issuer before the first request that names it (messages to one worker are
 * ordered), so a request is always signed with the bundle that was current when it arrived,
 * even while a reload swaps in the next one. A worker that dies fails its pending requests
 * and is replaced.
 *
 * Workers run signing-worker-main.ts, bundled on its own: `dist/sentry-signer.cjs` next to
 * `dist/sentry.cjs` when running as `node dist/sentry.cjs`, the copy embedded in the single
 * binary (a SEA asset) when running as `dist/sentry`. On other runtimes (Deno)
 * {@link workerScript} finds none and the server signs without a pool.
 *
 * @module
 */
import type { Buffer } from "node:buffer";
import { Worker } from "node:worker_threads";
import type { WorkerScript } from "./worker-script.ts";
import type { IssuedChain, SigningBundle, WorkloadTiming } from "../ca/signer.ts";
import type { SpiffeId } from "../ca/spiffe.ts";
import {
  bundleMessage,
  type FromWorker,
  type SigningFailureKind,
  type ToWorker,
} from "./signing-worker.ts";

/** A request the worker refused or could not finish. */
export class PoolSigningError extends Error {
  override name = "PoolSigningError";
  /** Creates an error of a worker-reported kind. */
  constructor(readonly kind: SigningFailureKind, message: string) {
    super(message);
  }
}

interface Pending {
  resolve(issued: IssuedChain): void;
  reject(error: Error): void;
}

interface PoolWorker {
  worker: Worker;
  pending: Map<number, Pending>;
  generations: Set<number>;
}

/** Workers that die this many times in a row (no answer in between) put the pool out of use. */
export const MAX_CRASHES_IN_A_ROW = 3;

/** A fixed number of signing worker threads. */
export class SigningPool {
  readonly #script: WorkerScript;
  readonly #onBroken: (why: string) => void;
  readonly #workers: PoolWorker[] = [];
  readonly #generations = new WeakMap<SigningBundle, number>();
  #lastGeneration = 0;
  #seq = 0;
  #closed = false;
  #crashesInARow = 0;
  #broken = false;

  /**
   * Starts `size` workers running `script`. When workers keep dying (a broken build, a
   * resource limit), the pool stops replacing them after {@link MAX_CRASHES_IN_A_ROW} and
   * calls `onBroken` once; {@link available} turns false.
   */
  constructor(size: number, script: WorkerScript, onBroken: (why: string) => void = () => {}) {
    this.#script = script;
    this.#onBroken = onBroken;
    for (let i = 0; i < size; i++) this.#workers.push(this.#spawn());
  }

  /** Number of worker threads. */
  get size(): number {
    return this.#workers.length;
  }

  /** Whether requests can be sent: not closed, and workers are not crashing over and over. */
  get available(): boolean {
    return !this.#closed && !this.#broken;
  }

  #spawn(): PoolWorker {
    const worker = new Worker(this.#script.source, {
      eval: this.#script.eval,
      // Signing allocates little and briefly: a small young generation keeps the RSS low.
      resourceLimits: { maxYoungGenerationSizeMb: 1, maxOldGenerationSizeMb: 32 },
    });
    const entry: PoolWorker = { worker, pending: new Map(), generations: new Set() };
    let failed = false;
    worker.on("message", (reply: FromWorker) => {
      this.#crashesInARow = 0;
      const pending = entry.pending.get(reply.seq);
      if (!pending) return;
      entry.pending.delete(reply.seq);
      if ("failure" in reply) pending.reject(new PoolSigningError(reply.failure, reply.message));
      else pending.resolve({ chain: reply.chain, notAfter: new Date(reply.notAfterMs) });
    });
    const fail = (why: string) => {
      if (failed) return; // "error" and "exit" both report one death
      failed = true;
      for (const pending of entry.pending.values()) {
        pending.reject(new PoolSigningError("internal", `signing worker stopped: ${why}`));
      }
      entry.pending.clear();
      if (this.#closed || this.#broken) return;
      if (++this.#crashesInARow >= MAX_CRASHES_IN_A_ROW) {
        this.#broken = true;
        this.#onBroken(why);
        return;
      }
      this.#workers[this.#workers.indexOf(entry)] = this.#spawn();
    };
    worker.on("error", (error: Error) => fail(error.message));
    worker.on("exit", (code) => fail(`exit code ${code}`));
    worker.unref();
    return entry;
  }

  #generationOf(bundle: SigningBundle): number {
    let generation = this.#generations.get(bundle);
    if (generation === undefined) {
      generation = ++this.#lastGeneration;
      this.#generations.set(bundle, generation);
    }
    return generation;
  }

  /** The worker with the fewest requests in progress. */
  #leastBusy(): PoolWorker {
    let best = this.#workers[0];
    for (const entry of this.#workers) {
      if (entry.pending.size < best.pending.size) best = entry;
    }
    return best;
  }

  /**
   * Verifies `csr` and issues a workload certificate for `id` (and `dnsNames`) under `bundle`
   * on a worker.
   * Rejects with a {@link PoolSigningError} (kind `csr`, `signing` or `internal`).
   */
  sign(
    bundle: SigningBundle,
    id: SpiffeId,
    csr: Buffer | Uint8Array,
    timing: WorkloadTiming,
    now: Date,
    dnsNames: readonly string[] = [],
  ): Promise<IssuedChain> {
    if (!this.available) {
      const why = this.#closed ? "pool is closed" : "signing workers keep failing";
      return Promise.reject(new PoolSigningError("internal", why));
    }
    const entry = this.#leastBusy();
    const generation = this.#generationOf(bundle);
    if (!entry.generations.has(generation)) {
      entry.worker.postMessage(bundleMessage(bundle, generation));
      entry.generations.add(generation);
    }
    const seq = ++this.#seq;
    return new Promise((resolve, reject) => {
      entry.pending.set(seq, { resolve, reject });
      const message: ToWorker = {
        kind: "sign",
        seq,
        generation,
        csr: new Uint8Array(csr), // a copy: a view would carry its whole underlying buffer
        id: id.toString(),
        ttlMs: timing.ttlMs,
        skewMs: timing.skewMs,
        nowMs: now.getTime(),
        dnsNames: [...dnsNames],
      };
      entry.worker.postMessage(message);
    });
  }

  /** Stops the workers; pending requests fail. */
  async close(): Promise<void> {
    this.#closed = true;
    await Promise.all(this.#workers.map((entry) => entry.worker.terminate()));
  }
}
