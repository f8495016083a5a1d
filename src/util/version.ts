/**
 * The program's version (from deno.json, embedded at build time) and the runtime running it.
 *
 * @module
 */
import process from "node:process";
import meta from "../../deno.json" with { type: "json" };

/** sentry's version. */
export const VERSION: string = meta.version;

/** `deno 2.9.6` or `node v20.20.2`. */
export function runtimeDescription(): string {
  const deno = (globalThis as { Deno?: { version: { deno: string } } }).Deno;
  return deno ? `deno ${deno.version.deno}` : `node ${process.version}`;
}
