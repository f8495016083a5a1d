/**
 * A server for unary gRPC calls on `node:http2`, TLS only: what sentry's one RPC needs and no
 * more. It replaces grpc-js on the serving side (grpc-js's generic server machinery — streams
 * wrapped in streams, metadata objects, interceptors — cost ~5% of the CPU per certificate and
 * ~13 MB of peak RSS under load; bench/run.ts), while clients (daprd, Dapr's integration suite,
 * the grpc-go load generator, grpc-js and Python's grpcio in the tests) judge the wire format.
 *
 * What it does, per the gRPC over HTTP/2 protocol:
 * - Requests: `POST`, `content-type: application/grpc[+proto|;...]` (else HTTP 415), a known
 *   path (else UNIMPLEMENTED), exactly one length-prefixed message no larger than
 *   `maxMessageBytes` (RESOURCE_EXHAUSTED as soon as the prefix announces more), not compressed
 *   (UNIMPLEMENTED, with `grpc-accept-encoding: identity`), `grpc-timeout` honoured
 *   (DEADLINE_EXCEEDED when it passes before the answer).
 * - Answers: headers, one message, trailers with `grpc-status` (0); failures are trailers-only
 *   with `grpc-status` and a percent-encoded `grpc-message`. A call the client cancelled gets
 *   nothing.
 * - Connections: at most `maxConcurrentStreams` calls per connection (HTTP/2 SETTINGS), GOAWAY
 *   and close after `idleTimeoutMs` without a call, PINGs answered by nghttp2, a graceful
 *   shutdown (GOAWAY, calls in progress finish) and a forced one.
 * - TLS: at least 1.2, ALPN `h2` only; the key and chain can be replaced for new handshakes
 *   while the port stays open ({@link UnaryGrpcServer.setTls}).
 *
 * @module
 */
import { Buffer } from "node:buffer";
import {
  constants,
  createSecureServer,
  type Http2SecureServer,
  type Http2Session,
  type IncomingHttpHeaders,
  type ServerHttp2Stream,
} from "node:http2";
import type { SecureContextOptions } from "node:tls";

/**
 * The gRPC status codes this module answers with itself (the same numbers as grpc-js's
 * `status`, which is not imported so that a serving thread's bundle stays small).
 */
export const GrpcStatus = {
  DEADLINE_EXCEEDED: 4,
  RESOURCE_EXHAUSTED: 8,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
} as const;

/** A call's failure: the gRPC status code and the message the client sees. */
export class GrpcError extends Error {
  constructor(readonly code: number, message: string) {
    super(message);
    this.name = "GrpcError";
  }
}

/**
 * How a handler's failure answers the client: a {@link GrpcError} as it is; anything else (a
 * fault) as INTERNAL, without its details.
 */
export function toGrpcError(error: unknown): GrpcError {
  return error instanceof GrpcError
    ? error
    : new GrpcError(GrpcStatus.INTERNAL, "internal error while handling the call");
}

/** Handles one call: the request message in, the answer message out (or a {@link GrpcError}). */
export type UnaryHandler = (message: Buffer) => Promise<Buffer>;

/** What the server presents in TLS handshakes. */
export interface ServingTls {
  keyPem: string;
  /** The certificate chain, leaf first. */
  chainPem: string;
  /** Anchors handed to TLS (no client certificate is requested). */
  anchorsPem: string;
}

/** Settings of a {@link UnaryGrpcServer}. */
export interface UnaryGrpcServerOptions {
  /** Handlers by path, `/package.Service/Method`. */
  handlers: ReadonlyMap<string, UnaryHandler>;
  tls: ServingTls;
  /** Largest request message accepted. */
  maxMessageBytes: number;
  /** Most calls at once on one connection. */
  maxConcurrentStreams: number;
  /** GOAWAY and close a connection with no call for this long (0: never). */
  idleTimeoutMs: number;
}

/** The length prefix of a gRPC message: a compressed flag byte and a 32-bit length. */
const PREFIX_BYTES = 5;

/** Largest header block a client may send: far above gRPC's few headers. */
const MAX_HEADER_LIST_BYTES = 16 * 1024;

const GRPC_CONTENT_TYPE = /^application\/grpc(?:$|[+;])/;

/** Units of `grpc-timeout` in milliseconds. */
const TIMEOUT_UNITS: Record<string, number> = {
  H: 3_600_000,
  M: 60_000,
  S: 1000,
  m: 1,
  u: 0.001,
  n: 0.000001,
};

/** `grpc-message`'s percent-encoding: bytes outside printable ASCII, and `%` itself. */
export function encodeGrpcMessage(text: string): string {
  let out = "";
  for (const byte of Buffer.from(text, "utf8")) {
    out += byte >= 0x20 && byte <= 0x7e && byte !== 0x25
      ? String.fromCharCode(byte)
      : `%${byte.toString(16).toUpperCase().padStart(2, "0")}`;
  }
  return out;
}

/** A `grpc-timeout` value in milliseconds, or undefined when absent or malformed. */
export function parseGrpcTimeout(value: string | undefined): number | undefined {
  const match = value === undefined ? null : /^(\d{1,8})([HMSmun])$/.exec(value);
  return match ? Number(match[1]) * TIMEOUT_UNITS[match[2]] : undefined;
}

function secureContextOptions(tls: ServingTls): SecureContextOptions {
  return { key: tls.keyPem, cert: tls.chainPem, ca: tls.anchorsPem, minVersion: "TLSv1.2" };
}

/** One call in progress: its stream, and whether it has been answered. */
class UnaryCall {
  #answered = false;
  #deadline?: ReturnType<typeof setTimeout>;

  constructor(readonly stream: ServerHttp2Stream) {}

  /** Fails the call with DEADLINE_EXCEEDED unless answered within `ms`. */
  expireAfter(ms: number): void {
    this.#deadline = setTimeout(
      () => this.fail(new GrpcError(GrpcStatus.DEADLINE_EXCEEDED, "deadline exceeded")),
      ms,
    );
  }

  /** Sends `message` with status OK. */
  answer(message: Buffer): void {
    if (!this.#settle()) return;
    const frame = Buffer.allocUnsafe(PREFIX_BYTES + message.length);
    frame[0] = 0;
    frame.writeUInt32BE(message.length, 1);
    message.copy(frame, PREFIX_BYTES);
    const stream = this.stream;
    stream.respond({
      ":status": 200,
      "content-type": "application/grpc",
      "grpc-accept-encoding": "identity",
    }, { waitForTrailers: true });
    stream.once("wantTrailers", () => stream.sendTrailers({ "grpc-status": "0" }));
    stream.end(frame);
  }

  /** Sends a trailers-only answer with `error`'s status and message, then stops reading. */
  fail(error: GrpcError): void {
    if (!this.#settle()) return;
    this.stream.respond({
      ":status": 200,
      "content-type": "application/grpc",
      "grpc-accept-encoding": "identity",
      "grpc-status": String(error.code),
      "grpc-message": encodeGrpcMessage(error.message),
    }, { endStream: true });
    // Whatever the client still sends is not wanted: RST_STREAM(NO_ERROR) after the answer.
    this.stream.close(constants.NGHTTP2_NO_ERROR);
  }

  /** Marks the call answered; false when it already was, or when the stream is gone. */
  #settle(): boolean {
    if (this.#answered) return false;
    this.#answered = true;
    clearTimeout(this.#deadline);
    return !this.stream.destroyed && !this.stream.closed;
  }

  /** Forgets the call (the stream closed): nothing will be sent. */
  abandon(): void {
    this.#answered = true;
    clearTimeout(this.#deadline);
  }
}

/** A connection's calls in progress, and its idle timer while it has none. */
interface SessionCalls {
  calls: number;
  idle?: ReturnType<typeof setTimeout>;
}

/** A listening unary gRPC server. */
export class UnaryGrpcServer {
  readonly #options: UnaryGrpcServerOptions;
  /** The HTTP/2 server (for the connection guard). */
  readonly http2: Http2SecureServer;
  /** Open sessions, with the calls in progress on each. */
  readonly #sessions = new Map<Http2Session, SessionCalls>();
  #closing = false;

  constructor(options: UnaryGrpcServerOptions) {
    this.#options = options;
    this.http2 = createSecureServer({
      ...secureContextOptions(options.tls),
      allowHTTP1: false,
      settings: {
        maxConcurrentStreams: options.maxConcurrentStreams,
        maxHeaderListSize: MAX_HEADER_LIST_BYTES,
      },
      maxSessionMemory: 16,
    });
    this.http2.on("session", (session) => this.#onSession(session));
    this.http2.on(
      "stream",
      (stream, headers) => this.#onStream(stream as ServerHttp2Stream, headers),
    );
    // A client's TLS or protocol error concerns that client only.
    this.http2.on("sessionError", () => {});
    this.http2.on("tlsClientError", () => {});
  }

  /**
   * Binds `host:port` (0: any free port) and resolves with the port bound. With `reusePort`
   * (SO_REUSEPORT), other threads of this process may bind the same port and the kernel spreads
   * new connections over them.
   */
  listen(host: string, port: number, reusePort = false): Promise<number> {
    return new Promise((resolve, reject) => {
      const onError = (error: Error) => reject(error);
      this.http2.once("error", onError);
      this.http2.listen({ port, host, reusePort }, () => {
        this.http2.off("error", onError);
        const address = this.http2.address();
        resolve(typeof address === "object" && address ? address.port : port);
      });
    });
  }

  /** Presents `tls` from the next handshake on; established connections keep theirs. */
  setTls(tls: ServingTls): void {
    this.http2.setSecureContext(secureContextOptions(tls));
  }

  /**
   * Stops accepting connections and sends GOAWAY on every open one; calls in progress finish.
   * `onClosed` runs once every connection has closed.
   */
  tryShutdown(onClosed: () => void): void {
    this.#closing = true;
    this.http2.close(() => onClosed());
    for (const session of this.#sessions.keys()) {
      if (!session.closed && !session.destroyed) session.close();
    }
  }

  /** Closes every connection at once, calls in progress included. */
  forceShutdown(): void {
    this.#closing = true;
    this.http2.close();
    for (const session of this.#sessions.keys()) session.destroy();
  }

  #onSession(session: Http2Session): void {
    const entry: SessionCalls = { calls: 0 };
    this.#sessions.set(session, entry);
    session.on("error", () => {});
    session.once("close", () => {
      clearTimeout(entry.idle);
      this.#sessions.delete(session);
    });
    if (this.#closing) session.close();
    else this.#armIdle(session, entry);
  }

  #armIdle(session: Http2Session, entry: SessionCalls) {
    const ms = this.#options.idleTimeoutMs;
    if (ms <= 0) return;
    clearTimeout(entry.idle);
    entry.idle = setTimeout(() => {
      if (entry.calls === 0 && !session.closed && !session.destroyed) session.close();
    }, ms);
    entry.idle.unref();
  }

  #onStream(stream: ServerHttp2Stream, headers: IncomingHttpHeaders): void {
    const session = stream.session;
    const entry = session ? this.#sessions.get(session) : undefined;
    if (entry && session) {
      entry.calls++;
      clearTimeout(entry.idle);
      stream.once("close", () => {
        entry.calls--;
        if (entry.calls === 0) this.#armIdle(session, entry);
      });
    }
    stream.on("error", () => {});
    const contentType = headers["content-type"];
    if (headers[":method"] !== "POST" || !contentType || !GRPC_CONTENT_TYPE.test(contentType)) {
      stream.respond({ ":status": headers[":method"] !== "POST" ? 405 : 415 }, { endStream: true });
      stream.close(constants.NGHTTP2_NO_ERROR);
      return;
    }
    const call = new UnaryCall(stream);
    stream.once("close", () => call.abandon());
    const path = headers[":path"] ?? "";
    const handler = this.#options.handlers.get(path);
    if (!handler) {
      call.fail(new GrpcError(GrpcStatus.UNIMPLEMENTED, `unknown method ${path}`));
      return;
    }
    const timeoutMs = parseGrpcTimeout(headers["grpc-timeout"] as string | undefined);
    if (timeoutMs !== undefined) call.expireAfter(timeoutMs);
    this.#readMessage(stream, call, headers["grpc-encoding"] as string | undefined, handler);
  }

  /** Reads the one request message, then hands it to `handler` and answers with its result. */
  #readMessage(
    stream: ServerHttp2Stream,
    call: UnaryCall,
    encoding: string | undefined,
    handler: UnaryHandler,
  ): void {
    const limit = this.#options.maxMessageBytes;
    const chunks: Buffer[] = [];
    let received = 0;
    /** The message length the prefix announced, once its 5 bytes are in. */
    let announced: number | undefined;
    let refused = false;
    const refuse = (error: GrpcError) => {
      refused = true;
      chunks.length = 0;
      call.fail(error);
    };
    stream.on("data", (chunk: Buffer) => {
      if (refused) return;
      chunks.push(chunk);
      received += chunk.length;
      if (received < PREFIX_BYTES) return;
      if (announced === undefined) {
        // The prefix is read once (a client sending tiny DATA frames must not make every
        // frame re-join the ones before it).
        const head = chunks.length === 1 ? chunks[0] : Buffer.concat(chunks);
        announced = head.readUInt32BE(1);
        if (head[0] !== 0) {
          refuse(
            new GrpcError(
              GrpcStatus.UNIMPLEMENTED,
              `compressed messages are not supported (grpc-encoding ${encoding ?? "none"})`,
            ),
          );
          return;
        }
        if (announced > limit) {
          refuse(
            new GrpcError(
              GrpcStatus.RESOURCE_EXHAUSTED,
              `received a message larger than the limit (${announced} > ${limit} bytes)`,
            ),
          );
          return;
        }
      }
      if (received > PREFIX_BYTES + announced) {
        refuse(
          new GrpcError(GrpcStatus.UNIMPLEMENTED, "more than one request message on a unary call"),
        );
      }
    });
    stream.once("end", () => {
      if (refused) return;
      const body = chunks.length === 1 ? chunks[0] : Buffer.concat(chunks);
      if (body.length < PREFIX_BYTES || body.length !== PREFIX_BYTES + body.readUInt32BE(1)) {
        call.fail(
          new GrpcError(
            GrpcStatus.INTERNAL,
            body.length === 0 ? "the call carried no request message" : "truncated request message",
          ),
        );
        return;
      }
      handler(body.subarray(PREFIX_BYTES)).then(
        (answer) => call.answer(answer),
        (error) => call.fail(toGrpcError(error)),
      );
    });
  }
}
