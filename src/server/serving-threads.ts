/**
 * The main thread's side of the serving threads (`--serving-threads N`, serving-thread.ts):
 * starts N threads that bind the gRPC port beside the main thread (SO_REUSEPORT), answers the
 * calls they relay with the same handler the main thread's own server uses, passes them the
 * renewed serving certificate, sums their open connections, reports their refusals, and shuts
 * them down with the main server (gracefully, or at once).
 *
 * A thread that dies is logged and not replaced: the main thread and the other threads keep
 * serving the port (the kernel stops giving connections to a closed socket).
 *
 * @module
 */
import { Buffer } from "node:buffer";
import { Worker } from "node:worker_threads";
import type { Logger } from "../observability/logger.ts";
import {
  detachedCopy,
  type FromServingThread,
  type RefusalReason,
  type ServingThreadSetup,
  type ToServingThread,
} from "./serving-thread.ts";
import { type ServingTls, toGrpcError } from "./unary-grpc.ts";
import type { WorkerScript } from "./worker-script.ts";

/** What the threads need from the main server. */
export interface ServingThreadsOptions {
  count: number;
  script: WorkerScript;
  /** Everything but the port, which {@link ServingThreads.start} is given. */
  setup: Omit<ServingThreadSetup, "port">;
  /** Answers one relayed call (rejects with unary-grpc.ts's GrpcError for a failure). */
  handle(path: string, message: Buffer): Promise<Buffer>;
  /** A connection a thread closed at once, or for a late preface. */
  onRefused(reason: RefusalReason): void;
  logger: Logger;
}

interface ServingThread {
  worker: Worker;
  open: number;
  closed: boolean;
}

/** Running serving threads. */
export class ServingThreads {
  readonly #options: ServingThreadsOptions;
  readonly #threads: ServingThread[] = [];
  #onClosed?: () => void;

  constructor(options: ServingThreadsOptions) {
    this.#options = options;
  }

  /** Connections open on the threads (as last reported, at most half a second old). */
  get open(): number {
    return this.#threads.reduce((sum, thread) => sum + thread.open, 0);
  }

  /** Starts the threads on `port` (already bound by the main thread with SO_REUSEPORT). */
  async start(port: number): Promise<void> {
    const setup: ServingThreadSetup = { ...this.#options.setup, port };
    await Promise.all(
      Array.from({ length: this.#options.count }, () => this.#spawn(setup)),
    );
  }

  #spawn(setup: ServingThreadSetup): Promise<void> {
    const { script } = this.#options;
    const worker = new Worker(script.source, { eval: script.eval, workerData: setup });
    const thread: ServingThread = { worker, open: 0, closed: false };
    this.#threads.push(thread);
    return new Promise((resolve, reject) => {
      let listening = false;
      worker.on("message", (message: FromServingThread) => {
        switch (message.kind) {
          case "listening":
            listening = true;
            resolve();
            break;
          case "listen-failed":
            reject(new Error(message.message));
            break;
          case "call":
            this.#answer(worker, message.seq, message.path, message.message);
            break;
          case "connections":
            thread.open = message.open;
            break;
          case "refused":
            this.#options.onRefused(message.reason);
            break;
          case "closed":
            this.#threadClosed(thread);
            break;
        }
      });
      worker.on("error", (error: unknown) => {
        if (!listening) reject(error);
        else this.#options.logger.error(`a serving thread failed: ${(error as Error).message}`);
      });
      worker.on("exit", (code) => {
        thread.open = 0;
        if (!listening) {
          reject(new Error(`a serving thread exited (code ${code}) before listening`));
        } else if (!thread.closed && !this.#onClosed) {
          this.#options.logger.error(
            `a serving thread stopped (exit code ${code}); the main thread and the other ` +
              "threads keep serving the port",
          );
        }
        this.#threadClosed(thread);
      });
    });
  }

  #answer(worker: Worker, seq: number, path: string, message: Uint8Array): void {
    const request = Buffer.from(message.buffer, message.byteOffset, message.byteLength);
    this.#options.handle(path, request).then(
      (answer) => {
        const copy = detachedCopy(answer);
        this.#post(worker, { kind: "answer", seq, message: copy }, [copy.buffer]);
      },
      (error) => {
        const failure = toGrpcError(error);
        this.#post(worker, { kind: "fail", seq, code: failure.code, details: failure.message });
      },
    );
  }

  #post(worker: Worker, message: ToServingThread, transfer?: ArrayBuffer[]): void {
    try {
      worker.postMessage(message, transfer);
    } catch {
      // The thread is gone: its connection went with it.
    }
  }

  /** Presents `tls` from the threads' next handshakes on. */
  setTls(tls: ServingTls): void {
    for (const { worker } of this.#threads) this.#post(worker, { kind: "tls", tls });
  }

  /**
   * Sends GOAWAY on every thread's connections; resolves once each thread has closed them
   * all (calls in progress finish first) and has exited.
   */
  shutdown(): Promise<void> {
    return new Promise((resolve) => {
      this.#onClosed = resolve;
      for (const { worker } of this.#threads) this.#post(worker, { kind: "shutdown" });
      this.#checkAllClosed();
    });
  }

  /** Closes every thread's connections at once and stops the threads. */
  forceShutdown(): void {
    for (const thread of this.#threads) {
      this.#post(thread.worker, { kind: "force" });
      void thread.worker.terminate();
    }
  }

  #threadClosed(thread: ServingThread): void {
    if (thread.closed) return;
    thread.closed = true;
    void thread.worker.terminate();
    this.#checkAllClosed();
  }

  #checkAllClosed(): void {
    if (this.#onClosed && this.#threads.every((thread) => thread.closed)) {
      const done = this.#onClosed;
      this.#onClosed = undefined;
      done();
    }
  }
}
