/**
 * The filesystem credential store (`--store fs`, self-hosted default): `ca.crt`, `issuer.crt`
 * and `issuer.key` in the `--issuer-credentials` directory, names from the
 * `--issuer-*-filename` flags (an absolute name replaces directory + name, as in Dapr), plus
 * `ca.key` beside `ca.crt` only when the operator keeps the root key (`sentry init
 * --keep-root-key`), plus the JWT signing key `jwt.key` (0600) and its `jwks.json` when JWT
 * issuing has stored them (names from `--jwt-key-filename` and `--jwks-filename`).
 *
 * Beyond Dapr: a directory holding only some of the files is refused (Dapr would regenerate
 * and overwrite all three, and regenerates `jwt.key` when `jwks.json` is missing); new files are written to a temporary name and linked into place
 * without overwriting anything; a replacement (`sentry renew`) first checks that the files
 * still hold what the caller read (compare-and-swap), then renames new files over them.
 *
 * @module
 */
import { randomBytes } from "node:crypto";
import { link, mkdir, open, readFile, rename, rm, stat } from "node:fs/promises";
import { dirname, isAbsolute, join } from "node:path";
import { type BundlePem, type JwtKeyPem, sameBundlePem } from "../ca/bundle.ts";
import { DEFAULT_JWT_NAMES, type JwtNames } from "../ca/jwt-keys.ts";
import { watchFiles } from "../config/file-watcher.ts";
import { type CredentialStore, StoreConflictError, StoreError } from "./store.ts";
import { errorCode } from "../util/file-errors.ts";

/** Where the files are. */
export interface FsStoreOptions {
  directory: string;
  caFilename: string;
  issuerCertFilename: string;
  issuerKeyFilename: string;
  /** The JWT signing key's file (default `jwt.key`). */
  jwtKeyFilename?: string;
  /** The JWKS file (default `jwks.json`). */
  jwksFilename?: string;
}

type Part = "caCrt" | "issuerCrt" | "issuerKey";
/** Write order: the key before its certificate, the anchors last. */
const PARTS: readonly Part[] = ["issuerKey", "issuerCrt", "caCrt"];
/** The JWT parts, key first. */
const JWT_PARTS = ["keyPem", "jwksJson"] as const;
/** File modes of the JWT parts: the key is secret, the key set is public. */
const JWT_MODES = { keyPem: 0o600, jwksJson: 0o644 } as const;
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

/** Writes `content` to a new synced file (mode 0600 by default) next to `path`; returns its name. */
async function writeTemporary(path: string, content: string, mode = 0o600): Promise<string> {
  const temporary = join(dirname(path), `.${randomBytes(6).toString("hex")}.tmp`);
  const handle = await open(temporary, "wx", mode);
  try {
    await handle.writeFile(content);
    await handle.sync();
  } finally {
    await handle.close();
  }
  return temporary;
}

/** Creates `path` with `content` unless it exists; returns false if it already existed. */
async function createFileAtomically(
  path: string,
  content: string,
  mode?: number,
): Promise<boolean> {
  const temporary = await writeTemporary(path, content, mode);
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
async function replaceFileAtomically(path: string, content: string, mode?: number): Promise<void> {
  const temporary = await writeTemporary(path, content, mode);
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
  /** Paths of the JWT key and JWKS (also their names in messages). */
  readonly jwtNames: JwtNames;

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
    this.jwtNames = {
      key: resolve(options.jwtKeyFilename ?? DEFAULT_JWT_NAMES.key),
      jwks: resolve(options.jwksFilename ?? DEFAULT_JWT_NAMES.jwks),
    };
    this.description = `directory ${options.directory}`;
  }

  /** Paths of the JWT parts, key first. */
  get #jwtPaths(): [string, string] {
    return [this.jwtNames.key, this.jwtNames.jwks];
  }

  /**
   * Loads the files: null if none exists, StoreError naming the missing ones if some do (the
   * three X.509 files go together, and so do the two JWT files, which need the X.509 ones).
   */
  async load(): Promise<BundlePem | null> {
    const present = await Promise.all(PARTS.map((part) => exists(this.paths[part])));
    const jwtPresent = await Promise.all(this.#jwtPaths.map(exists));
    const jwtFound = this.#jwtPaths.filter((_, i) => jwtPresent[i]);
    if (present.every((p) => !p)) {
      if (jwtFound.length === 0) return null;
      throw new StoreError(
        `incomplete credentials in ${this.description}: found ${jwtFound.join(", ")} but no ` +
          `trust bundle (${PARTS.map((part) => this.paths[part]).join(", ")}). sentry does not ` +
          `generate a CA beside a JWT key: restore the bundle, or remove the JWT files`,
      );
    }
    const missing = PARTS.filter((_, i) => !present[i]).map((part) => this.paths[part]);
    if (missing.length > 0) {
      const found = PARTS.filter((_, i) => present[i]).map((part) => this.paths[part]);
      throw new StoreError(
        `incomplete credentials in ${this.description}: missing ${missing.join(", ")} ` +
          `(found ${found.join(", ")}). sentry never overwrites part of a bundle: restore the ` +
          `missing file(s), or remove the others to let sentry generate a new CA`,
      );
    }
    if (jwtFound.length === 1) {
      const missing = this.#jwtPaths.find((_, i) => !jwtPresent[i]);
      throw new StoreError(
        `incomplete JWT key material in ${this.description}: missing ${missing} (found ` +
          `${jwtFound[0]}). sentry never overwrites part of it: restore the missing file, or ` +
          `remove the other to let sentry generate a new JWT signing key`,
      );
    }
    const [issuerKey, issuerCrt, caCrt, caKey, keyPem, jwksJson] = await Promise.all(
      [...PARTS.map((part) => this.paths[part]), this.rootKeyPath, ...this.#jwtPaths].map(
        readIfExists,
      ),
    );
    const jwtVanished = jwtFound.length === 2 && (keyPem === undefined || jwksJson === undefined);
    if (issuerKey === undefined || issuerCrt === undefined || caCrt === undefined || jwtVanished) {
      throw new StoreError(`a file of the bundle in ${this.description} vanished while being read`);
    }
    const jwt: JwtKeyPem | undefined = keyPem !== undefined && jwksJson !== undefined
      ? { keyPem, jwksJson }
      : undefined;
    return {
      caCrt,
      issuerCrt,
      issuerKey,
      ...(caKey !== undefined ? { caKey } : {}),
      ...(jwt ? { jwt } : {}),
    };
  }

  async #makeDirectories(): Promise<void> {
    for (
      const path of [...PARTS.map((part) => this.paths[part]), this.rootKeyPath, ...this.#jwtPaths]
    ) {
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
    const files: [string, string, number?][] = PARTS.map((
      part,
    ) => [this.paths[part], bundle[part]]);
    if (bundle.caKey) files.push([this.rootKeyPath, bundle.caKey]);
    const jwt = bundle.jwt;
    if (jwt) files.push(...this.#jwtFiles(jwt));
    for (const [path, content, mode] of files) {
      let created: boolean;
      try {
        created = await createFileAtomically(path, content, mode);
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

  /** The JWT files to write for `jwt`: path, content, mode. */
  #jwtFiles(jwt: JwtKeyPem): [string, string, number][] {
    return JWT_PARTS.map((part, i) => [this.#jwtPaths[i], jwt[part], JWT_MODES[part]]);
  }

  /**
   * Replaces the stored bundle with `bundle` if the files still hold `expected`; otherwise
   * throws StoreConflictError and changes nothing. Each file is renamed into place; `ca.key`
   * is written when `bundle` has a root key and removed when it has none but one is stored.
   * JWT files are created when none are stored (never over a file that appeared meanwhile),
   * replaced when they differ, and left alone when `bundle` has no `jwt`.
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
      if (bundle.jwt) await this.#writeJwt(bundle.jwt, current.jwt);
    } catch (error) {
      if (error instanceof StoreConflictError) throw error;
      throw new StoreError(
        `cannot write the new bundle into ${this.description}: ${(error as Error).message}`,
      );
    }
    return bundle;
  }

  /** Writes the JWT files: created when `current` has none, else replaced where they differ. */
  async #writeJwt(jwt: JwtKeyPem, current: JwtKeyPem | undefined): Promise<void> {
    for (const [path, content, mode] of this.#jwtFiles(jwt)) {
      if (!current) {
        if (!await createFileAtomically(path, content, mode)) {
          throw new StoreConflictError(
            `${path} appeared while sentry was adding a JWT signing key; nothing was replaced`,
          );
        }
      } else if (content !== (path === this.jwtNames.key ? current.keyPem : current.jwksJson)) {
        await replaceFileAtomically(path, content, mode);
      }
    }
  }

  /** Watches the directories of the files (edits, renames, symlink swaps). */
  watch(onChange: () => void): { close(): void } {
    return watchFiles([...PARTS.map((part) => this.paths[part]), ...this.#jwtPaths], onChange);
  }
}
