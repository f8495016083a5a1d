/**
 * File input and output for the commands: reading an input with a message that names the flag
 * or role, and writing a set of outputs so that a failure leaves no partial file (and never a
 * new key next to an old certificate).
 *
 * @module
 */
import { randomBytes } from "node:crypto";
import { chmod, readFile, rename, rm, writeFile } from "node:fs/promises";
import { basename, dirname, join } from "node:path";

/** Reads a text file; the error names `what` (e.g. `--ca-key`, `trust anchors`) and the path. */
export async function readInputFile(path: string, what: string): Promise<string> {
  try {
    return await readFile(path, "utf8");
  } catch (error) {
    throw new Error(`cannot read ${what} ${path}: ${(error as Error).message}`, { cause: error });
  }
}

/** One output file. */
export interface OutputFile {
  path: string;
  content: string;
  /** Exact mode (e.g. 0o600 for keys), applied despite the umask. */
  mode: number;
}

/**
 * Writes every file to a temporary name next to it first, then renames them into place.
 * Temporary files are removed on failure.
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
        throw new Error(`cannot write ${file.path}: ${(error as Error).message}`, { cause: error });
      }
    }
    for (const { file, temporary } of staged) {
      try {
        await rename(temporary, file.path);
      } catch (error) {
        throw new Error(`cannot write ${file.path}: ${(error as Error).message}`, { cause: error });
      }
    }
  } finally {
    await Promise.all(staged.map(({ temporary }) => rm(temporary, { force: true })));
  }
}
