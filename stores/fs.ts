/**
 * The filesystem credential store (`--store fs`, self-hosted default): `ca.crt`, `issuer.crt`
 * and `issuer.key` in the `--issuer-credentials` directory, names from the
 * `--issuer-*-filename` flags (an absolute name replaces directory + name, as in Dapr).
 *
 * Beyond Dapr: a directory holding only some of the files is refused (Dapr would regenerate
 * and overwrite all three); files are written to a temporary name and renamed into place.
 *
 * @module
 */
import { randomBytes } from "node:crypto";
import { link, mkdir, open, readFile, rm, stat } from "node:fs/promises";
import { dirname, isAbsolute, join } from "node:path";
import type { BundlePem } from "../src/ca/bundle.ts";
import { watchFiles } from "../src/config/file-watcher.ts";
import { type CredentialStore, StoreError } from "./store.ts";

/** Where the three files are. */
export interface FsStoreOptions {
  directory: string;
  caFilename: string;
  issuerCertFilename: string;
  issuerKeyFilename: string;
}

type Part = "caCrt" | "issuerCrt" | "issuerKey";
const PARTS: readonly Part[] = ["issuerKey", "issuerCrt", "caCrt"]; // write order: anchors last

function errorCode(error: unknown): string | undefined {
  return (error as { code?: string }).code;
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch (error) {
    if (errorCode(error) === "ENOENT") return false;
    throw new StoreError(`cannot access ${path}: ${(error as Error).message}`);
  }
}

/** Writes `content` to a new file next to `path` (mode 0600, synced), then links it in place
 * without replacing anything already there. Returns false if `path` already existed. */
async function createFileAtomically(path: string, content: string): Promise<boolean> {
  const temporary = join(dirname(path), `.${randomBytes(6).toString("hex")}.tmp`);
  const handle = await open(temporary, "wx", 0o600);
  try {
    await handle.writeFile(content);
    await handle.sync();
  } finally {
    await handle.close();
  }
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

/** A trust bundle kept as three files. */
export class FsCredentialStore implements CredentialStore {
  readonly description: string;
  readonly names: Record<Part, string>;
  readonly paths: Record<Part, string>;

  /** Resolves the three paths; nothing is touched until {@link load} or {@link create}. */
  constructor(options: FsStoreOptions) {
    const resolve = (name: string) => isAbsolute(name) ? name : join(options.directory, name);
    this.paths = {
      caCrt: resolve(options.caFilename),
      issuerCrt: resolve(options.issuerCertFilename),
      issuerKey: resolve(options.issuerKeyFilename),
    };
    this.names = {
      caCrt: this.paths.caCrt,
      issuerCrt: this.paths.issuerCrt,
      issuerKey: this.paths.issuerKey,
    };
    this.description = `directory ${options.directory}`;
  }

  /** Loads the three files: null if none exists, StoreError naming the missing ones if some do. */
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
    const [issuerKey, issuerCrt, caCrt] = await Promise.all(PARTS.map(async (part) => {
      try {
        return await readFile(this.paths[part], "utf8");
      } catch (error) {
        throw new StoreError(`cannot read ${this.paths[part]}: ${(error as Error).message}`);
      }
    }));
    return { caCrt, issuerCrt, issuerKey };
  }

  /**
   * Creates the three files (directories 0700, files 0600) without overwriting any. If some
   * file appeared meanwhile, nothing of ours replaces it and the stored bundle is returned.
   */
  async create(bundle: BundlePem): Promise<BundlePem> {
    for (const part of PARTS) {
      const directory = dirname(this.paths[part]);
      try {
        await mkdir(directory, { recursive: true, mode: 0o700 });
      } catch (error) {
        throw new StoreError(`cannot create directory ${directory}: ${(error as Error).message}`);
      }
    }
    for (const part of PARTS) {
      let created: boolean;
      try {
        created = await createFileAtomically(this.paths[part], bundle[part]);
      } catch (error) {
        throw new StoreError(`cannot write ${this.paths[part]}: ${(error as Error).message}`);
      }
      if (!created) {
        const winner = await this.load();
        if (winner) return winner;
        throw new StoreError(`${this.paths[part]} appeared while sentry was writing a new bundle`);
      }
    }
    return bundle;
  }

  /** Watches the directories of the three files (edits, renames, symlink swaps). */
  watch(onChange: () => void): { close(): void } {
    return watchFiles(PARTS.map((part) => this.paths[part]), onChange);
  }
}
