/**
 * File input and output for the commands: reading an input (bounded: a FIFO, a device or a huge
 * file is refused) with a message that names the flag or role, checking that a PEM input holds
 * what the flag expects, and writing a set of outputs through temporary files so that a failure
 * leaves no partial or temporary file. Messages name the file the user gave, never a temporary
 * one, and say why in plain words.
 *
 * @module
 */
import { randomBytes } from "node:crypto";
import { chmod, lstat, rename, rm, writeFile } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { FileRefusedError, readSmallFile } from "../util/bounded-read.ts";
import { errorCode, fileErrorReason } from "../util/file-errors.ts";
import { type PemKind, pemProblem } from "../x509/pem.ts";

/**
 * Reads a text file of at most 1 MiB; the error names `what` (e.g. `--ca-key`, `trust
 * anchors`), the path and the reason (`file not found`, `it is a FIFO`, ...).
 */
export async function readInputFile(path: string, what: string): Promise<string> {
  try {
    return await readSmallFile(path);
  } catch (error) {
    const reason = error instanceof FileRefusedError
      ? error.message.replace(`refused to read ${path}: `, "")
      : fileErrorReason(error);
    throw new Error(`cannot read ${what} ${path}: ${reason}`, { cause: error });
  }
}

/**
 * Reads a PEM input with {@link readInputFile} and checks that it holds a block of `kind`;
 * otherwise the error names the file and what is wrong (`ca.key: not a PEM private key (found
 * a CERTIFICATE block)`).
 */
export async function readPemInput(path: string, what: string, kind: PemKind): Promise<string> {
  const text = await readInputFile(path, what);
  const problem = pemProblem(text, kind);
  if (problem) throw new Error(`${what} ${path}: ${problem}`);
  return text;
}

/** One output file. */
export interface OutputFile {
  path: string;
  content: string;
  /** Exact mode (e.g. 0o600 for keys), applied despite the umask. */
  mode: number;
}

/** Why writing a file failed, without the temporary file's name. */
function writeErrorReason(error: unknown, temporary: string, file: OutputFile): string {
  switch (errorCode(error)) {
    case "ENOENT":
      return `directory ${dirname(file.path)} does not exist`;
    case "ENOTDIR":
      return `${dirname(file.path)} is not a directory`;
    case "EACCES":
    case "EPERM":
      return `permission denied (directory ${dirname(file.path)})`;
    case "EROFS":
      return "read-only file system";
    case "ENOSPC":
      return "no space left on device";
    case "EISDIR":
      return "it is a directory";
    default:
      return fileErrorReason(error).replaceAll(temporary, file.path);
  }
}

function writeError(error: unknown, temporary: string, file: OutputFile): Error {
  return new Error(`cannot write ${file.path}: ${writeErrorReason(error, temporary, file)}`, {
    cause: error,
  });
}

/** Refuses a destination that is a directory before anything is renamed into place. */
async function checkDestination(file: OutputFile, temporary: string): Promise<void> {
  const stats = await lstat(file.path).catch(() => undefined);
  if (stats?.isDirectory()) {
    throw writeError(Object.assign(new Error("EISDIR"), { code: "EISDIR" }), temporary, file);
  }
}

/**
 * Writes every file to a temporary name next to it first, then renames them into place.
 * Temporary files are removed on every failure; a destination that is a directory fails
 * before any file is replaced. Errors name the destination and the reason.
 */
export async function writeOutputFiles(files: readonly OutputFile[]): Promise<void> {
  const staged: { file: OutputFile; temporary: string }[] = [];
  try {
    for (const file of files) {
      const temporary = join(
        dirname(file.path),
        `.${basename(file.path)}.${randomBytes(6).toString("hex")}.tmp`,
      );
      staged.push({ file, temporary });
      try {
        await writeFile(temporary, file.content, { mode: file.mode, flag: "wx" });
        await chmod(temporary, file.mode);
      } catch (error) {
        throw writeError(error, temporary, file);
      }
    }
    for (const { file, temporary } of staged) await checkDestination(file, temporary);
    for (const { file, temporary } of staged) {
      try {
        await rename(temporary, file.path);
      } catch (error) {
        throw writeError(error, temporary, file);
      }
    }
  } finally {
    // A failed removal (e.g. ENOTDIR: the temporary was never created) must not hide the error.
    await Promise.all(
      staged.map(({ temporary }) => rm(temporary, { force: true }).catch(() => {})),
    );
  }
}
