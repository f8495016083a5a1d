/**
 * Keeps watching one named Kubernetes object the way informers do: list (to get a
 * resourceVersion), then watch from it; reconnect from the last seen version when the stream
 * ends; list again after 410 Gone; back off on errors. The callback only hears "it may have
 * changed" and re-reads, so duplicate notifications are harmless.
 *
 * Where RBAC grants no list/watch on the collection (Dapr's chart gives sentry only get and
 * update on its Secret) or the server does not serve them (404, 405), it says so in one log
 * line and polls the object with GET instead, calling back when its resourceVersion changes.
 *
 * @module
 */
import type { Logger } from "../observability/logger.ts";
import { isForbidden, isGone, isNotFound, KubeApiError, type KubeClient } from "./client.ts";
import { Backoff } from "../util/backoff.ts";
import { delay } from "../util/timers.ts";
import { formatDuration } from "../util/duration.ts";

/** A running watch; `close()` stops it. */
export interface ObjectWatch {
  close(): void;
}

/** What {@link watchObject} watches and whom it tells. */
export interface ObjectWatchOptions {
  /** The collection, e.g. `/api/v1/namespaces/dapr-system/secrets`. */
  listPath: string;
  /** The object's name in it. */
  name: string;
  /** Called after every event, after a relist, and when a poll sees a new version. */
  onChange: () => void;
  logger?: Logger;
  /** Interval of the GET polling used when list/watch is not allowed (default 10 s). */
  pollIntervalMs?: number;
}

/** Default interval of the GET polling fallback. */
export const DEFAULT_POLL_INTERVAL_MS = 10_000;

/** True when list/watch is refused for good (RBAC, or not served): poll instead. */
function watchNotAllowed(error: unknown): boolean {
  return isForbidden(error) || isNotFound(error) ||
    (error instanceof KubeApiError && error.status === 405);
}

/**
 * Watches the object `options.name` in `options.listPath` and calls `options.onChange` after
 * every event, and after every relist that follows a broken watch (changes may have been
 * missed). Falls back to GET polling when list/watch is refused (see the module comment).
 */
export function watchObject(
  client: Pick<KubeClient, "get" | "list" | "watch">,
  options: ObjectWatchOptions,
): ObjectWatch {
  const { listPath, name, onChange, logger } = options;
  const pollIntervalMs = options.pollIntervalMs ?? DEFAULT_POLL_INTERVAL_MS;
  const controller = new AbortController();
  const { signal } = controller;
  const fieldSelector = `metadata.name=${name}`;

  /** GET every pollIntervalMs; a changed resourceVersion (or existence) is a change. */
  const poll = async (since: string | undefined) => {
    let seen = since;
    while (!signal.aborted) {
      await delay(pollIntervalMs, signal).catch(() => undefined);
      if (signal.aborted) return;
      let version: string | undefined;
      try {
        const object = await client.get<{ metadata?: { resourceVersion?: string } }>(
          `${listPath}/${encodeURIComponent(name)}`,
          { signal },
        );
        version = object.metadata?.resourceVersion ?? "";
      } catch (error) {
        if (signal.aborted) return;
        if (!isNotFound(error)) {
          logger?.warn(`polling ${listPath}/${name} failed: ${(error as Error).message}`);
          continue;
        }
        version = undefined; // absent
      }
      if (version !== seen) {
        seen = version;
        onChange();
      }
    }
  };

  const run = async () => {
    let resourceVersion: string | undefined;
    const backoff = new Backoff({ initialMs: 500, maxMs: 30_000 });
    let first = true;
    while (!signal.aborted) {
      try {
        if (resourceVersion === undefined) {
          const list = await client.list<{ metadata?: { resourceVersion?: string } }>(listPath, {
            fieldSelector,
            signal,
          });
          resourceVersion = list.metadata.resourceVersion;
          if (!first) onChange(); // events may have been missed while relisting
          first = false;
        }
        await client.watch<{ metadata?: { resourceVersion?: string } }>(
          listPath,
          { resourceVersion, fieldSelector, timeoutSeconds: 300, signal },
          (event) => {
            resourceVersion = event.object?.metadata?.resourceVersion ?? resourceVersion;
            if (event.type !== "BOOKMARK") onChange();
          },
        );
        backoff.reset();
      } catch (error) {
        if (signal.aborted) return;
        if (isGone(error)) {
          resourceVersion = undefined; // too old: list again
          continue;
        }
        if (watchNotAllowed(error)) {
          logger?.info(
            `cannot list/watch ${listPath}/${name} (${(error as KubeApiError).status} ${
              (error as KubeApiError).reason
            }): reading it with GET every ${formatDuration(pollIntervalMs)} instead`,
          );
          const current = await client.get<{ metadata?: { resourceVersion?: string } }>(
            `${listPath}/${encodeURIComponent(name)}`,
            { signal },
          ).then((object) => object.metadata?.resourceVersion ?? "", () => undefined);
          if (!first) onChange();
          return await poll(current);
        }
        const retryDelay = backoff.next();
        logger?.warn(
          `watch of ${listPath}/${name} failed, retrying in ${retryDelay / 1000}s: ${
            (error as Error).message
          }`,
        );
        await delay(retryDelay, signal);
        resourceVersion = undefined;
      }
    }
  };
  void run();
  return { close: () => controller.abort() };
}
