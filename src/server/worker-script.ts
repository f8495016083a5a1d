/**
 * Where a worker thread's code comes from. Each kind of worker (signing, serving) is bundled on
 * its own (`deno task bundle` writes it beside dist/sentry.cjs; the single binary embeds it as a
 * SEA asset of the same name, scripts/build-binary.ts), so that a thread loads only the code it
 * runs. Deno cannot run these Node bundles in workers: there, no worker is started.
 *
 * @module
 */
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import process from "node:process";

/** The signing worker's bundle (src/server/signing-worker-main.ts). */
export const SIGNING_WORKER_BUNDLE = "sentry-signer.cjs";
/** The serving thread's bundle (src/server/serving-thread-main.ts). */
export const SERVING_THREAD_BUNDLE = "sentry-serving.cjs";

/** A worker's code: a file, or source text to evaluate. */
export interface WorkerScript {
  source: string;
  eval: boolean;
}

interface SeaModule {
  isSea(): boolean;
  getAsset(key: string, encoding: string): string;
}

/** The code of the worker bundled as `bundle`, or undefined where this runtime cannot run it. */
export function workerScript(bundle: string): WorkerScript | undefined {
  if ((globalThis as { Deno?: unknown }).Deno) return undefined;
  const getBuiltin = (process as { getBuiltinModule?: (id: string) => unknown })
    .getBuiltinModule;
  const sea = getBuiltin?.("node:sea") as SeaModule | undefined;
  if (sea?.isSea()) {
    try {
      return { source: sea.getAsset(bundle, "utf8"), eval: true };
    } catch {
      return undefined; // a binary built without the asset
    }
  }
  const main = process.argv[1];
  if (!main || !/\.c?js$/.test(main)) return undefined;
  const script = join(dirname(main), bundle);
  return existsSync(script) ? { source: script, eval: false } : undefined;
}
