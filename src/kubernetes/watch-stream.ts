/**
 * Reading a Kubernetes watch stream: the body of a `?watch=true` answer, one JSON event per
 * line, split at any byte by the network. {@link readWatchStream} cuts it into lines, decodes
 * each event and hands it to the caller in order, turns an `ERROR` event into a
 * {@link KubeApiError} (410 / `Expired` when the resourceVersion is too old), and ends the
 * stream (dropping the connection) when the caller's handler throws, the signal aborts, the
 * stream stays open past its limit or breaks.
 *
 * @module
 */
import { type HttpStream, HttpTransportError } from "../net/http.ts";
import { isRecord } from "../util/records.ts";
import { setSafeTimeout } from "../util/timers.ts";
import { type KubeRequestError, preview, statusError } from "./errors.ts";

/** One event of a watch stream (`ERROR` events are turned into errors, not delivered). */
export interface WatchEvent<T> {
  type: "ADDED" | "MODIFIED" | "DELETED" | "BOOKMARK";
  object: T;
}

/** What {@link readWatchStream} needs besides the stream. */
export interface WatchStreamContext {
  /** The method and path as messages show them (`WATCH`, `/api/v1/namespaces/x/secrets`). */
  label: string;
  path: string;
  /** Ends the stream; the watch rejects with the signal's reason. */
  signal?: AbortSignal;
  /** Ends the stream with `error()` when it is still open `ms` after reading started. */
  limit?: { ms: number; error(): Error };
  /** A {@link KubeRequestError} of this watch (a broken stream, a malformed event). */
  requestError(code: string, detail: string, cause?: unknown): KubeRequestError;
}

/** The lines of a stream of UTF-8 chunks (`\n`-separated; the last one may lack its `\n`). */
export async function* splitLines(chunks: AsyncIterable<Uint8Array>): AsyncGenerator<string> {
  const decoder = new TextDecoder();
  let buffer = "";
  for await (const chunk of chunks) {
    buffer += decoder.decode(chunk, { stream: true });
    let newline: number;
    while ((newline = buffer.indexOf("\n")) >= 0) {
      yield buffer.slice(0, newline);
      buffer = buffer.slice(newline + 1);
    }
  }
  buffer += decoder.decode();
  if (buffer !== "") yield buffer;
}

/**
 * The event on one line; undefined for a blank line (a keepalive). Throws a
 * {@link KubeRequestError} `EBADRESPONSE` for a line that is not an event, and a
 * {@link KubeApiError} for an `ERROR` event (its `Status` code, 500 when it has none).
 */
export function decodeWatchEvent<T>(
  line: string,
  context: WatchStreamContext,
): WatchEvent<T> | undefined {
  const trimmed = line.trim();
  if (trimmed === "") return undefined;
  let event: unknown;
  try {
    event = JSON.parse(trimmed);
  } catch {
    // reported below
  }
  if (!isRecord(event) || typeof event.type !== "string") {
    throw context.requestError("EBADRESPONSE", `malformed watch event: ${preview(trimmed, 120)}`);
  }
  if (event.type === "ERROR") {
    const status = isRecord(event.object) ? event.object : {};
    const code = typeof status.code === "number" ? status.code : 500;
    throw statusError(context.label, context.path, code, status, trimmed, 1);
  }
  return event as unknown as WatchEvent<T>;
}

/**
 * Calls `onEvent` for each event of `stream` in order, awaiting it when it returns a promise
 * (which holds back further events), and resolves when the server ends the stream. Rejects
 * with what {@link decodeWatchEvent} throws, with the error `onEvent` throws, with the
 * signal's reason, with the limit's error, or with a {@link KubeRequestError} when the stream
 * breaks. The connection is dropped whenever the watch ends early.
 */
export async function readWatchStream<T>(
  stream: HttpStream,
  context: WatchStreamContext,
  onEvent: (event: WatchEvent<T>) => void | Promise<void>,
): Promise<void> {
  const { signal, limit } = context;
  let stopped: unknown;
  const guard = limit && setSafeTimeout(
    () => {
      stopped ??= limit.error();
      stream.close();
    },
    limit.ms,
    true,
  );
  const check = () => {
    if (stopped !== undefined) throw stopped;
    signal?.throwIfAborted();
  };
  try {
    for await (const line of splitLines(stream.body)) {
      check();
      const event = decodeWatchEvent<T>(line, context);
      if (event !== undefined) await onEvent(event);
      check();
    }
    check();
  } catch (error) {
    check();
    if (error instanceof HttpTransportError) {
      throw context.requestError(error.code, `watch stream broke: ${error.message}`, error);
    }
    throw error;
  } finally {
    clearTimeout(guard);
    stream.close();
  }
}
