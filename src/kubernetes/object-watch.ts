/**
 * Keeps watching one named Kubernetes object the way informers do: list (to get a
 * resourceVersion), then watch from it; reconnect from the last seen version when the stream
 * ends; list again after 410 Gone; back off on errors. The callback only hears "it may have
 * changed" and re-reads, so duplicate notifications are harmless.
 *
 * @module
 */
import type { Logger } from "../observability/logger.ts";
import { isGone, type KubeClient } from "./client.ts";
import { Backoff } from "../util/backoff.ts";
import { delay } from "../util/timers.ts";

/** A running watch; `close()` stops it. */
export interface ObjectWatch {
  close(): void;
}

/**
 * Watches the object `name` in the collection at `listPath` (e.g.
 * `/api/v1/namespaces/dapr-system/secrets`) and calls `onChange` after every event, and after
 * every relist that follows a broken watch (changes may have been missed).
 */
export function watchObject(
  client: Pick<KubeClient, "list" | "watch">,
  listPath: string,
  name: string,
  onChange: () => void,
  logger?: Logger,
): ObjectWatch {
  const controller = new AbortController();
  const { signal } = controller;
  const fieldSelector = `metadata.name=${name}`;

  const run = async () => {
    let resourceVersion: string | undefined;
    const backoff = new Backoff({ initialMs: 500, maxMs: 30_000 });
    let first = true;
    while (!signal.aborted) {
      try {
        if (resourceVersion === undefined) {
          const list = await client.list(listPath, { fieldSelector, signal });
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
