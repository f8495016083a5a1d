/**
 * Reading a small file that someone else may have replaced with something that is not one: a
 * FIFO (whose `open` blocks until a writer appears, freezing a thread of the I/O pool for good),
 * a device such as `/dev/zero` (endless), or a huge file. The path is opened non-blocking
 * (symlinks are followed, so Kubernetes' `..data` links to mounted Secrets keep working), the
 * opened descriptor must be a regular file, and at most `maxBytes` are read: anything else is
 * refused with a {@link FileRefusedError} naming the file and the reason.
 *
 * @module
 */
import { closeSync, constants, fstatSync, openSync, readSync } from "node:fs";
import { open } from "node:fs/promises";
import { Buffer } from "node:buffer";

/** 1 MiB: far more than any PEM bundle, token, JWKS or configuration file sentry reads. */
export const MAX_SMALL_FILE_BYTES = 1024 * 1024;

/** The file was opened but is not a regular file of acceptable size; nothing was read. */
export class FileRefusedError extends Error {
  override name = "FileRefusedError";

  /** `message` is "refused to read <path>: <reason>". */
  constructor(readonly path: string, readonly reason: string) {
    super(`refused to read ${path}: ${reason}`);
  }
}

/** Options for {@link readSmallFile}. */
export interface ReadSmallFileOptions {
  /** The largest accepted size (default {@link MAX_SMALL_FILE_BYTES}). */
  maxBytes?: number;
}

const OPEN_FLAGS = constants.O_RDONLY | constants.O_NONBLOCK;

function kind(
  stats: {
    isFIFO(): boolean;
    isCharacterDevice(): boolean;
    isBlockDevice(): boolean;
    isDirectory(): boolean;
    isSocket(): boolean;
  },
): string {
  if (stats.isFIFO()) return "a FIFO";
  if (stats.isCharacterDevice()) return "a character device";
  if (stats.isBlockDevice()) return "a block device";
  if (stats.isDirectory()) return "a directory";
  if (stats.isSocket()) return "a socket";
  return "not a regular file";
}

function refusal(path: string, reason: string): FileRefusedError {
  return new FileRefusedError(path, reason);
}

function tooLarge(path: string, maxBytes: number): FileRefusedError {
  return refusal(path, `larger than ${maxBytes} bytes`);
}

/**
 * Reads `path` as UTF-8 if it is a regular file of at most `maxBytes` (after symlinks).
 * Errors of `open` (ENOENT, EACCES, ...) are thrown as they are; a FIFO, a device, a directory
 * or a larger file is refused with {@link FileRefusedError}.
 *
 * @example
 * ```ts
 * const pem = await readSmallFile("/var/run/secrets/dapr.io/credentials/ca.crt");
 * ```
 */
export async function readSmallFile(
  path: string,
  options: ReadSmallFileOptions = {},
): Promise<string> {
  return (await readSmallFileBytes(path, options)).toString("utf8");
}

/**
 * {@link readSmallFile}'s bytes, undecoded (DER input, for one): the same checks and refusals.
 *
 * @example
 * ```ts
 * const der = await readSmallFileBytes("cert.der");
 * ```
 */
export async function readSmallFileBytes(
  path: string,
  options: ReadSmallFileOptions = {},
): Promise<Buffer> {
  const maxBytes = options.maxBytes ?? MAX_SMALL_FILE_BYTES;
  const handle = await open(path, OPEN_FLAGS);
  try {
    const stats = await handle.stat();
    if (!stats.isFile()) throw refusal(path, `it is ${kind(stats)}`);
    if (stats.size > maxBytes) throw tooLarge(path, maxBytes);
    // The file may grow after fstat: read at most one byte more than allowed to notice it.
    const buffer = Buffer.alloc(Math.min(stats.size, maxBytes) + 1);
    let length = 0;
    while (length < buffer.length) {
      const { bytesRead } = await handle.read(buffer, length, buffer.length - length, length);
      if (bytesRead === 0) break;
      length += bytesRead;
    }
    if (length > maxBytes) throw tooLarge(path, maxBytes);
    return buffer.subarray(0, length);
  } finally {
    await handle.close();
  }
}

/** {@link readSmallFile}, synchronously (start-up only). */
export function readSmallFileSync(path: string, options: ReadSmallFileOptions = {}): string {
  const maxBytes = options.maxBytes ?? MAX_SMALL_FILE_BYTES;
  const fd = openSync(path, OPEN_FLAGS);
  try {
    const stats = fstatSync(fd);
    if (!stats.isFile()) throw refusal(path, `it is ${kind(stats)}`);
    if (stats.size > maxBytes) throw tooLarge(path, maxBytes);
    const buffer = Buffer.alloc(Math.min(stats.size, maxBytes) + 1);
    let length = 0;
    while (length < buffer.length) {
      const bytesRead = readSync(fd, buffer, length, buffer.length - length, length);
      if (bytesRead === 0) break;
      length += bytesRead;
    }
    if (length > maxBytes) throw tooLarge(path, maxBytes);
    return buffer.subarray(0, length).toString("utf8");
  } finally {
    closeSync(fd);
  }
}
