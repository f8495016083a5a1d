/**
 * Watches files for changes the way configuration and credentials change in practice: in
 * place, by an editor's save-by-rename, or by Kubernetes' `..data` symlink swap in a mounted
 * directory. It watches the directories that hold the files and reports "something may have
 * changed" (debounced); callers re-read and compare, so spurious events are harmless. A slow
 * poll backs up the directory watch (a directory created later, a network filesystem).
 *
 * @module
 */
import { type FSWatcher, watch } from "node:fs";
import { dirname } from "node:path";

/** Options for {@link watchFiles}. */
export interface WatchOptions {
  /** Quiet time after the last event before `onChange` runs (default 250 ms). */
  debounceMs?: number;
  /** Also call `onChange` this often regardless of events (default 10 s; 0 disables). */
  pollMs?: number;
}

/** A running watch; `close()` stops it. */
export interface FileWatch {
  close(): void;
}

/** Calls `onChange` (debounced) whenever anything changes in the directories of `paths`. */
export function watchFiles(
  paths: readonly string[],
  onChange: () => void,
  options: WatchOptions = {},
): FileWatch {
  const debounceMs = options.debounceMs ?? 250;
  const pollMs = options.pollMs ?? 10_000;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let closed = false;
  const trigger = () => {
    if (closed) return;
    clearTimeout(timer);
    timer = setTimeout(onChange, debounceMs);
  };
  const watchers = new Map<string, FSWatcher>();
  const ensureWatching = () => {
    for (const directory of new Set(paths.map((path) => dirname(path)))) {
      if (watchers.has(directory)) continue;
      try {
        const watcher = watch(directory, { persistent: false }, trigger);
        watcher.on("error", () => {
          watcher.close();
          watchers.delete(directory);
        });
        watchers.set(directory, watcher);
      } catch {
        // The directory does not exist (yet): the poll retries.
      }
    }
  };
  ensureWatching();
  const poll = pollMs > 0
    ? setInterval(() => {
      ensureWatching();
      trigger();
    }, pollMs)
    : undefined;
  (poll as { unref?: () => void } | undefined)?.unref?.();
  return {
    close() {
      closed = true;
      clearTimeout(timer);
      clearInterval(poll);
      for (const watcher of watchers.values()) watcher.close();
      watchers.clear();
    },
  };
}
