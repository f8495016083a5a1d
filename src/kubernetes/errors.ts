/**
 * Errors of the Kubernetes REST client: {@link KubeApiError} when the API server answered with
 * a failure (its `Status` reason and message quoted verbatim), {@link KubeRequestError} when it
 * could not be reached, did not answer in time or answered nonsense, and the predicates callers
 * use to tell NotFound, Conflict, AlreadyExists and Gone apart.
 *
 * @module
 */
import { STATUS_CODES } from "node:http";
import { isRecord } from "../util/records.ts";

/** Reasons Kubernetes uses for HTTP status codes, for answers that carry no `Status`. */
const REASON_BY_STATUS: Record<number, string> = {
  400: "BadRequest",
  401: "Unauthorized",
  403: "Forbidden",
  404: "NotFound",
  405: "MethodNotAllowed",
  406: "NotAcceptable",
  409: "Conflict",
  410: "Gone",
  413: "RequestEntityTooLarge",
  415: "UnsupportedMediaType",
  422: "Invalid",
  429: "TooManyRequests",
  500: "InternalError",
  503: "ServiceUnavailable",
  504: "Timeout",
};

/** A `meta/v1` `Status`, as the API server sends with failures. */
export interface KubeStatus {
  kind?: string;
  apiVersion?: string;
  status?: string;
  message?: string;
  reason?: string;
  code?: number;
  details?: {
    name?: string;
    group?: string;
    kind?: string;
    uid?: string;
    causes?: { reason?: string; message?: string; field?: string }[];
    retryAfterSeconds?: number;
  };
}

/** What a {@link KubeApiError} is built from. */
export interface KubeApiErrorInit {
  method: string;
  path: string;
  status: number;
  reason?: string;
  /** The server's message (the `Status` message, or the start of a non-Status body). */
  apiMessage?: string;
  statusObject?: KubeStatus;
  /** How many attempts were made (more than 1 after retries). */
  attempts?: number;
}

/**
 * The API server answered with a failure. `status` is the HTTP status (or the `code` of a
 * watch `ERROR` event), `reason` the `Status` reason (`NotFound`, `AlreadyExists`,
 * `Conflict`, `Expired`, `Gone`, `Forbidden`, `Unauthorized`, ...; derived from the status
 * when the body is not a Status), `apiMessage` the server's message, which the error message
 * quotes verbatim: `kubernetes API: GET /api/...: 403 Forbidden: secrets "x" is forbidden: ...`.
 */
export class KubeApiError extends Error {
  override name = "KubeApiError";
  readonly method: string;
  readonly path: string;
  readonly status: number;
  readonly reason: string;
  readonly apiMessage: string;
  readonly statusObject?: KubeStatus;
  readonly attempts: number;

  /** Builds the message from `init`. */
  constructor(init: KubeApiErrorInit) {
    const text = STATUS_CODES[init.status];
    const apiMessage = init.apiMessage ?? "";
    super(
      `kubernetes API: ${init.method} ${init.path}: ${init.status}${text ? " " + text : ""}` +
        (apiMessage ? `: ${apiMessage}` : init.reason ? ` (${init.reason})` : "") +
        ((init.attempts ?? 1) > 1 ? ` (gave up after ${init.attempts} attempts)` : ""),
    );
    this.method = init.method;
    this.path = init.path;
    this.status = init.status;
    this.reason = init.reason || REASON_BY_STATUS[init.status] || "Unknown";
    this.apiMessage = apiMessage;
    this.statusObject = init.statusObject;
    this.attempts = init.attempts ?? 1;
  }
}

/** What a {@link KubeRequestError} is built from. */
export interface KubeRequestErrorInit {
  method: string;
  path: string;
  /** The API server's base URL. */
  server: string;
  /** `ECONNREFUSED`, `ECONNRESET`, `ETIMEDOUT`, `ETOKEN` (token file unreadable),
   * `EBADRESPONSE` (not JSON), `ECLOSED` (client closed), a TLS error code, ... */
  code: string;
  detail: string;
  attempts?: number;
  /** The underlying error (a transport error, a file system error), if any. */
  cause?: unknown;
}

/** The API server could not be reached, did not answer in time, or answered nonsense. */
export class KubeRequestError extends Error {
  override name = "KubeRequestError";
  readonly method: string;
  readonly path: string;
  readonly server: string;
  readonly code: string;
  readonly detail: string;
  readonly attempts: number;

  /** Builds the message from `init`. */
  constructor(init: KubeRequestErrorInit) {
    const attempts = init.attempts ?? 1;
    super(
      `kubernetes API: ${init.method} ${init.path}: ${init.detail} (server ${init.server}` +
        (attempts > 1 ? `, gave up after ${attempts} attempts)` : ")"),
      init.cause === undefined ? undefined : { cause: init.cause },
    );
    this.method = init.method;
    this.path = init.path;
    this.server = init.server;
    this.code = init.code;
    this.detail = init.detail;
    this.attempts = attempts;
  }

  /** The same failure after `attempts` attempts. */
  withAttempts(attempts: number): KubeRequestError {
    const { method, path, server, code, detail, cause } = this;
    return new KubeRequestError({ method, path, server, code, detail, attempts, cause });
  }
}

/** True for a 404 / `NotFound` answer. */
export function isNotFound(error: unknown): boolean {
  return error instanceof KubeApiError && error.reason === "NotFound";
}

/** True for a 409 `Conflict` answer (a stale resourceVersion), not for `AlreadyExists`. */
export function isConflict(error: unknown): boolean {
  return error instanceof KubeApiError && error.reason === "Conflict";
}

/** True for a 409 `AlreadyExists` answer to a create. */
export function isAlreadyExists(error: unknown): boolean {
  return error instanceof KubeApiError && error.reason === "AlreadyExists";
}

/** True for a 403 `Forbidden` answer: RBAC does not grant the verb (or the object's name). */
export function isForbidden(error: unknown): boolean {
  return error instanceof KubeApiError && (error.status === 403 || error.reason === "Forbidden");
}

/** True for a 410 (`Gone` / `Expired`): the resourceVersion is too old; list again. */
export function isGone(error: unknown): boolean {
  return error instanceof KubeApiError &&
    (error.status === 410 || error.reason === "Gone" || error.reason === "Expired");
}

/** Collapses whitespace and shortens `text` for a message. */
export function preview(text: string, max = 300): string {
  const flat = text.replace(/\s+/g, " ").trim();
  return flat.length > max ? flat.slice(0, max) + "…" : flat;
}

/** A {@link KubeApiError} from a `Status` object (or whatever the server sent). */
export function statusError(
  method: string,
  path: string,
  httpStatus: number,
  body: unknown,
  text: string,
  attempts: number,
): KubeApiError {
  if (isRecord(body) && (body.kind === "Status" || typeof body.message === "string")) {
    const status = body as KubeStatus;
    return new KubeApiError({
      method,
      path,
      status: httpStatus || (typeof status.code === "number" ? status.code : 0),
      reason: typeof status.reason === "string" ? status.reason : undefined,
      apiMessage: typeof status.message === "string" ? status.message : "",
      statusObject: status,
      attempts,
    });
  }
  return new KubeApiError({
    method,
    path,
    status: httpStatus,
    apiMessage: preview(text),
    attempts,
  });
}
