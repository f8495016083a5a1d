/**
 * A serving thread (`--serving-threads`): it terminates TLS and HTTP/2 for its share of the
 * gRPC port's connections (the port is bound with SO_REUSEPORT by the main thread and every
 * serving thread; the kernel spreads new connections over them) and relays each call's request
 * message to the main thread, which validates, signs and answers it (serving-threads.ts). All
 * state — trust bundle, settings, validators, rate limits, metrics — stays in the main thread,
 * so it is the same for every connection by construction; a serving thread holds only its TLS
 * identity and its connections.
 *
 * This module is the thread's side and the messages both sides exchange.
 *
 * @module
 */
import { Buffer } from "node:buffer";
import { parentPort, workerData } from "node:worker_threads";
import { clearInterval, setInterval } from "node:timers";
import { ConnectionGuard } from "./connection-guard.ts";
import { GrpcError, GrpcStatus, type ServingTls, UnaryGrpcServer } from "./unary-grpc.ts";

/** What a serving thread is started with (its `workerData`). */
export interface ServingThreadSetup {
  host: string;
  /** The port the main thread bound (never 0). */
  port: number;
  tls: ServingTls;
  /** The paths of the calls the main thread answers. */
  paths: string[];
  maxMessageBytes: number;
  maxConcurrentStreams: number;
  idleTimeoutMs: number;
  /** This thread's share of `--max-connections`. */
  maxConnections: number;
  prefaceTimeoutMs: number;
}

/** Messages from the main thread to a serving thread. */
export type ToServingThread =
  | { kind: "answer"; seq: number; message: Uint8Array }
  | { kind: "fail"; seq: number; code: number; details: string }
  | { kind: "tls"; tls: ServingTls }
  | { kind: "shutdown" }
  | { kind: "force" };

/** Why a serving thread closed a connection as soon as it came (or soon after). */
export type RefusalReason = "max_connections" | "handshake_timeout";

/** Messages from a serving thread to the main thread. */
export type FromServingThread =
  | { kind: "listening" }
  | { kind: "listen-failed"; message: string }
  | { kind: "call"; seq: number; path: string; message: Uint8Array }
  | { kind: "connections"; open: number }
  | { kind: "refused"; reason: RefusalReason }
  | { kind: "closed" };

/** How often a thread reports its open connection count when it changed. */
const CONNECTION_REPORT_MS = 500;

/** The part of a MessagePort a serving thread uses (tests pass a channel's port). */
export interface ServingThreadPort {
  postMessage(message: FromServingThread, transfer?: ArrayBuffer[]): void;
  on(event: "message", listener: (message: ToServingThread) => void): unknown;
}

/** A copy of `bytes` in an ArrayBuffer of its own, to transfer without copying the rest. */
export function detachedCopy(bytes: Uint8Array): Uint8Array<ArrayBuffer> {
  return new Uint8Array(bytes);
}

/** Runs a serving thread on `port` (the worker's parent port) with `setup`. */
export function runServingThread(
  port: ServingThreadPort = parentPort as unknown as ServingThreadPort,
  setup: ServingThreadSetup = workerData as ServingThreadSetup,
): void {
  const pending = new Map<number, { resolve(answer: Buffer): void; reject(e: Error): void }>();
  let seq = 0;
  const relay = (path: string) => (message: Buffer): Promise<Buffer> =>
    new Promise((resolve, reject) => {
      const id = ++seq;
      pending.set(id, { resolve, reject });
      const copy = detachedCopy(message);
      port.postMessage({ kind: "call", seq: id, path, message: copy }, [copy.buffer]);
    });
  const server = new UnaryGrpcServer({
    handlers: new Map(setup.paths.map((path) => [path, relay(path)])),
    tls: setup.tls,
    maxMessageBytes: setup.maxMessageBytes,
    maxConcurrentStreams: setup.maxConcurrentStreams,
    idleTimeoutMs: setup.idleTimeoutMs,
  });
  const guard = new ConnectionGuard({
    maxConnections: setup.maxConnections,
    prefaceTimeoutMs: setup.prefaceTimeoutMs,
    onRefused: () => port.postMessage({ kind: "refused", reason: "max_connections" }),
    onPrefaceTimeout: () => port.postMessage({ kind: "refused", reason: "handshake_timeout" }),
  });
  guard.attach(server.http2);
  let reportedOpen = 0;
  const reporter = setInterval(() => {
    if (guard.open === reportedOpen) return;
    reportedOpen = guard.open;
    port.postMessage({ kind: "connections", open: reportedOpen });
  }, CONNECTION_REPORT_MS);

  port.on("message", (message) => {
    switch (message.kind) {
      case "answer": {
        const call = pending.get(message.seq);
        pending.delete(message.seq);
        call?.resolve(
          Buffer.from(
            message.message.buffer,
            message.message.byteOffset,
            message.message.byteLength,
          ),
        );
        break;
      }
      case "fail": {
        const call = pending.get(message.seq);
        pending.delete(message.seq);
        call?.reject(new GrpcError(message.code, message.details));
        break;
      }
      case "tls":
        server.setTls(message.tls);
        break;
      case "shutdown":
        clearInterval(reporter);
        server.tryShutdown(() => port.postMessage({ kind: "closed" }));
        break;
      case "force":
        clearInterval(reporter);
        server.forceShutdown();
        for (const call of pending.values()) {
          call.reject(new GrpcError(GrpcStatus.UNAVAILABLE, "sentry is shutting down"));
        }
        pending.clear();
        break;
    }
  });
  server.listen(setup.host, setup.port, true).then(
    () => port.postMessage({ kind: "listening" }),
    (error: Error) => port.postMessage({ kind: "listen-failed", message: error.message }),
  );
}
