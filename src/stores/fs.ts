/**
 * The filesystem credential store (`--store fs`, self-hosted default): `ca.crt`, `issuer.crt`
 * and `issuer.key` in the `--issuer-credentials` directory, names from the
 * `--issuer-*-filename` flags (an absolute name replaces directory + name, as in Dapr), plus
 * `ca.key` beside `ca.crt` only when the operator keeps the root key (`sentry init
 * --keep-root-key`).
 *
 * Beyond Dapr: a directory holding only some of the files is refused (Dapr would regenerate
 * and overwrite all three); new files are written to a temporary name and linked into place
 * without overwriting anything; a replacement (`sentry renew`) first checks that the files
 * still hold what the caller read (compare-and-swap), then renames new files over them.
 *
 * @module
 */
import { randomBytes } from "node:crypto";
import { link, mkdir, open, readFile, rename, rm, stat } from "node:fs/promises";
import { dirname, isAbsolute, join } from "node:path";
import { type BundlePem, sameBundlePem } from "../ca/bundle.ts";
import { watchFiles } from "../config/file-watcher.ts";
import { type CredentialStore, StoreConflictError, StoreError } from "./store.ts";
import { errorCode } from "../util/file-errors.ts";

/** Where the files are. */
export interface FsStoreOptions {
  directory: string;
  caFilename: string;
  issuerCertFilename: string;
  issuerKeyFilename: string;
}

type Part = "caCrt" | "issuerCrt" | "issuerKey";
/** Write order: the key before its certificate, the anchors last. */
const PARTS: readonly Part[] = ["issuerKey", "issuerCrt", "caCrt"];
/** Name of the optional root key file, beside ca.crt. */
export const ROOT_KEY_FILENAME = "ca.key";

async function readIfExists(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, "utf8");
  } catch (error) {
    if (errorCode(error) === "ENOENT") return undefined;
    throw new StoreError(`cannot read ${path}: ${(error as Error).message}`, { cause: error });
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch (error) {
    if (errorCode(error) === "ENOENT") return false;
    throw new StoreError(`cannot access ${path}: ${(error as Error).message}`, { cause: error });
  }
}

/** Writes `content` to a new synced file (mode 0600) next to `path`; returns its name. */
async function writeTemporary(path: string, content: string): Promise<string> {
  const temporary = join(dirname(path), `.${randomBytes(6).toString("hex")}.tmp`);
  const handle = await open(temporary, "wx", 0o600);
  try {
    await handle.writeFile(content);
    await handle.sync();
  } finally {
    await handle.close();
  }
  return temporary;
}

/** Creates `path` with `content` unless it exists; returns false if it already existed. */
async function createFileAtomically(path: string, content: string): Promise<boolean> {
  const temporary = await writeTemporary(path, content);
  try {
    await link(temporary, path);
    return true;
  } catch (error) {
    if (errorCode(error) === "EEXIST") return false;
    throw error;
  } finally {
    await rm(temporary, { force: true });
  }
}

/** Replaces `path` with `content` in one rename. */
async function replaceFileAtomically(path: string, content: string): Promise<void> {
  const temporary = await writeTemporary(path, content);
  try {
    await rename(temporary, path);
  } catch (error) {
    await rm(temporary, { force: true });
    throw error;
  }
}

/** A trust bundle kept as files. */
export class FsCredentialStore implements CredentialStore {
  readonly description: string;
  readonly names: Record<Part, string>;
  readonly paths: Record<Part, string>;
  /** Where the root key goes when it is kept. */
  readonly rootKeyPath: string;

  /** Resolves the paths; nothing is touched until a method is called. */
  constructor(options: FsStoreOptions) {
    const resolve = (name: string) => isAbsolute(name) ? name : join(options.directory, name);
    this.paths = {
      caCrt: resolve(options.caFilename),
      issuerCrt: resolve(options.issuerCertFilename),
      issuerKey: resolve(options.issuerKeyFilename),
    };
    this.names = { ...this.paths };
    this.rootKeyPath = join(dirname(this.paths.caCrt), ROOT_KEY_FILENAME);
    this.description = `directory ${options.directory}`;
  }

  /** Loads the files: null if none of the three exists, StoreError naming the missing ones if some do. */
  async load(): Promise<BundlePem | null> {
    const present = await Promise.all(PARTS.map((part) => exists(this.paths[part])));
    if (present.every((p) => !p)) return null;
    const missing = PARTS.filter((_, i) => !present[i]).map((part) => this.paths[part]);
    if (missing.length > 0) {
      const found = PARTS.filter((_, i) => present[i]).map((part) => this.paths[part]);
      throw new StoreError(
        `incomplete credentials in ${this.description}: missing ${missing.join(", ")} ` +
          `(found ${found.join(", ")}). sentry never overwrites part of a bundle: restore the ` +
          `missing file(s), or remove the others to let sentry generate a new CA`,
      );
    }
    const [issuerKey, issuerCrt, caCrt, caKey] = await Promise.all(
      [...PARTS.map((part) => this.paths[part]), this.rootKeyPath].map(readIfExists),
    );
    if (issuerKey === undefined || issuerCrt === undefined || caCrt === undefined) {
      throw new StoreError(`a file of the bundle in ${this.description} vanished while being read`);
    }
    return { caCrt, issuerCrt, issuerKey, ...(caKey !== undefined ? { caKey } : {}) };
  }

  async #makeDirectories(): Promise<void> {
    for (const path of [...PARTS.map((part) => this.paths[part]), this.rootKeyPath]) {
      const directory = dirname(path);
      try {
        await mkdir(directory, { recursive: true, mode: 0o700 });
      } catch (error) {
        throw new StoreError(`cannot create directory ${directory}: ${(error as Error).message}`, {
          cause: error,
        });
      }
    }
  }

  /**
   * Creates the files (directories 0700, files 0600) without overwriting any. If some file
   * appeared meanwhile, nothing of ours replaces it and the stored bundle is returned.
   */
  async create(bundle: BundlePem): Promise<BundlePem> {
    await this.#makeDirectories();
    const files: [string, string][] = PARTS.map((part) => [this.paths[part], bundle[part]]);
    if (bundle.caKey) files.push([this.rootKeyPath, bundle.caKey]);
    for (const [path, content] of files) {
      let created: boolean;
      try {
        created = await createFileAtomically(path, content);
      } catch (error) {
        throw new StoreError(`cannot write ${path}: ${(error as Error).message}`, { cause: error });
      }
      if (!created) {
        const winner = await this.load();
        if (winner) return winner;
        throw new StoreError(`${path} appeared while sentry was writing a new bundle`);
      }
    }
    return bundle;
  }

  /**
   * Replaces the stored bundle with `bundle` if the files still hold `expected`; otherwise
   * throws StoreConflictError and changes nothing. Each file is renamed into place; `ca.key`
   * is written when `bundle` has a root key and removed when it has none but one is stored.
   */
  async replace(bundle: BundlePem, expected: BundlePem): Promise<BundlePem> {
    const current = await this.load();
    if (!current || !sameBundlePem(current, expected)) {
      throw new StoreConflictError(
        `the bundle in ${this.description} changed since it was read; nothing was written: run again`,
      );
    }
    await this.#makeDirectories();
    try {
      for (const part of PARTS) {
        if (bundle[part] !== current[part]) {
          await replaceFileAtomically(this.paths[part], bundle[part]);
        }
      }
      if (bundle.caKey) {
        if (bundle.caKey !== current.caKey) {
          await replaceFileAtomically(this.rootKeyPath, bundle.caKey);
        }
      } else if (current.caKey !== undefined) {
        await rm(this.rootKeyPath, { force: true });
      }
    } catch (error) {
      throw new StoreError(
        `cannot write the new bundle into ${this.description}: ${(error as Error).message}`,
      );
    }
    return bundle;
  }

  /** Watches the directories of the files (edits, renames, symlink swaps). */
  watch(onChange: () => void): { close(): void } {
    return watchFiles(PARTS.map((part) => this.paths[part]), onChange);
  }
}
