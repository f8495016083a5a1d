/**
 * Limits on the gRPC port's connections beyond HTTP/2's own (issue 17.5): a
 * connection must finish its TLS handshake and send the HTTP/2 preface and SETTINGS within a
 * deadline or it is destroyed, and at most a fixed number of connections are open at once
 * (beyond it a new connection is closed as soon as it is accepted), so that connections
 * that never go away cannot use up the process's file descriptors and starve `/healthz`,
 * `/metrics` and the files sentry reads. Idle HTTP/2 sessions get GOAWAY and are closed by
 * unary-grpc.ts.
 *
 * @module
 */
import { readFileSync } from "node:fs";
import type { Socket } from "node:net";
import { setSafeTimeout } from "../util/timers.ts";

/**
 * How long a new connection has to complete the TLS handshake and send the HTTP/2 preface.
 * grpc-go allows 120 s; a client on any real network does both in well under a second, and
 * every one of these connections holds a descriptor, so 20 s is far above a slow client and
 * six times fewer descriptors held by silent ones.
 */
export const DEFAULT_PREFACE_TIMEOUT_MS = 20_000;

/**
 * How long an HTTP/2 connection with no call in progress stays open: then GOAWAY and close
 * (grpc-go's MaxConnectionIdle; its default is infinite). A sidecar renews its certificate
 * every few hours, so keeping its connection between renewals only holds a descriptor; it
 * reconnects when it next needs one.
 */
export const DEFAULT_IDLE_TIMEOUT_MS = 5 * 60_000;

/** Descriptors left for everything but gRPC connections: files, health/metrics, workers. */
export const DESCRIPTOR_RESERVE = 256;

/** The connection cap when the descriptor limit cannot be read. */
export const FALLBACK_MAX_CONNECTIONS = 4096;

/**
 * The open-files soft limit from `/proc/self/limits` (Linux), or undefined when unknown or
 * unlimited.
 */
export function descriptorLimit(limitsText?: string): number | undefined {
  let text = limitsText;
  if (text === undefined) {
    try {
      text = readFileSync("/proc/self/limits", "utf8");
    } catch {
      return undefined;
    }
  }
  const match = /^Max open files\s+(\S+)/m.exec(text);
  if (!match || !/^\d+$/.test(match[1])) return undefined;
  return Number(match[1]);
}

/**
 * The default cap on open gRPC connections: {@link FALLBACK_MAX_CONNECTIONS}, lowered to the
 * descriptor limit minus {@link DESCRIPTOR_RESERVE} (at least 16) when that is smaller, so
 * that gRPC connections alone can never exhaust the descriptors.
 */
export function defaultMaxConnections(limit = descriptorLimit()): number {
  if (limit === undefined) return FALLBACK_MAX_CONNECTIONS;
  return Math.max(16, Math.min(FALLBACK_MAX_CONNECTIONS, limit - DESCRIPTOR_RESERVE));
}

/** The events of Node's HTTP/2 server that the guard uses. */
export interface GuardedServer {
  prependListener(event: "connection", listener: (socket: Socket) => void): unknown;
  on(event: "session", listener: (session: GuardedSession) => void): unknown;
}

/** The part of an `Http2Session` the guard uses. */
export interface GuardedSession {
  readonly socket?: { remoteAddress?: string; remotePort?: number } | null;
  once(event: "remoteSettings" | "close", listener: () => void): unknown;
}

/** Settings of {@link guardConnections}. */
export interface ConnectionGuardOptions {
  maxConnections: number;
  prefaceTimeoutMs: number;
  /** Called for each connection closed because {@link maxConnections} were open. */
  onRefused: () => void;
  /** Called for each connection closed because its preface did not arrive in time. */
  onPrefaceTimeout: () => void;
}

/** Open connections of a guarded server, shared by every server of one gRPC port. */
export class ConnectionGuard {
  readonly #options: ConnectionGuardOptions;
  /** Connections still waiting for their preface, by remote address and port. */
  readonly #pending = new Map<string, () => void>();
  #open = 0;

  constructor(options: ConnectionGuardOptions) {
    this.#options = options;
  }

  /** Connections open now. */
  get open(): number {
    return this.#open;
  }

  /** Applies the cap and the preface deadline to `server`'s connections. */
  attach(server: GuardedServer): void {
    // Prepended: runs before the TLS server wraps the socket, so that a refused one is never
    // handshaken.
    server.prependListener("connection", (socket) => this.#onConnection(socket));
    server.on("session", (session) => {
      const key = keyOf(session.socket);
      const settled = key === undefined ? undefined : this.#pending.get(key);
      if (settled) session.once("remoteSettings", settled);
    });
  }

  #onConnection(socket: Socket): void {
    if (this.#open >= this.#options.maxConnections) {
      socket.destroy();
      this.#options.onRefused();
      return;
    }
    this.#open++;
    const key = keyOf(socket);
    // Safe: the deadline comes from a flag, and Node fires a delay above ~24.8 days at once.
    const timer = setSafeTimeout(() => {
      this.#options.onPrefaceTimeout();
      socket.destroy();
    }, this.#options.prefaceTimeoutMs);
    const settle = () => {
      clearTimeout(timer);
      if (key !== undefined && this.#pending.get(key) === settle) this.#pending.delete(key);
    };
    if (key !== undefined) this.#pending.set(key, settle);
    socket.once("close", () => {
      this.#open--;
      settle();
    });
  }
}

function keyOf(
  socket: { remoteAddress?: string; remotePort?: number } | null | undefined,
): string | undefined {
  if (!socket?.remoteAddress || socket.remotePort === undefined) return undefined;
  return `${socket.remoteAddress}|${socket.remotePort}`;
}
