/**
 * Words for a failed file operation that an operator understands: the Node error code, and a
 * reason that names the usual cases ("file not found", "permission denied", "is a directory")
 * instead of Node's `ENOENT: no such file or directory, open '...'`, and for the others Node's
 * reason without the path it names ("no space left on device (ENOSPC)").
 *
 * @module
 */
import { FileRefusedError } from "./bounded-read.ts";

/** The `code` of a Node system error (`ENOENT`, `EACCES`, ...), if any. */
export function errorCode(error: unknown): string | undefined {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === "string" ? code : undefined;
}

/**
 * A short reason for a failed read or write of a file.
 *
 * @example
 * ```ts
 * try { await readFile(path, "utf8"); }
 * catch (error) { throw new Error(`${path}: ${fileErrorReason(error)}`, { cause: error }); }
 * ```
 */
export function fileErrorReason(error: unknown): string {
  if (error instanceof FileRefusedError) return `refused: ${error.reason}`;
  switch (errorCode(error)) {
    case "ENOENT":
      return "file not found";
    case "EACCES":
      return "permission denied";
    case "EISDIR":
      return "is a directory";
    default:
      // Node's "ENOSPC: no space left on device, open '<path>'": the reason without the path
      // (often a temporary file's), as "no space left on device (ENOSPC)"; callers name the file.
      return String((error as Error)?.message ?? error).replace(
        /^([A-Z][A-Z0-9]+): (.*?), \w+(?: '.*')?$/s,
        "$2 ($1)",
      );
  }
}
