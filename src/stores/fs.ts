/**
 * The filesystem credential store (`--store fs`, self-hosted default): `ca.crt`, `issuer.crt`
 * and `issuer.key` in the `--issuer-credentials` directory, names from the
 * `--issuer-*-filename` flags (an absolute name replaces directory + name, as in Dapr), plus
 * `ca.key` beside `ca.crt` only when the operator keeps the root key (`sentry init
 * --keep-root-key`), plus the JWT signing key `jwt.key` (0600) and its `jwks.json` when JWT
 * issuing has stored them (names from `--jwt-key-filename` and `--jwks-filename`).
 *
 * Beyond Dapr: a directory holding only some of the files is refused (Dapr would regenerate
 * and overwrite all three, and regenerates `jwt.key` when `jwks.json` is missing); a first boot
 * is all or nothing: the files are staged (synced, with a manifest) in a `.sentry-staging-*`
 * directory and linked into place without overwriting anything, and a staging left by a killed
 * sentry is published (or removed, if unfinished) by the next load; a replacement (`sentry
 * renew`) first checks that the files still hold what the caller read (compare-and-swap), then
 * renames new files over them. Keys are 0600, certificates and `jwks.json` 0644 (daprd, as
 * another user, reads `ca.crt`). Only regular files of at most 1 MiB are read (a FIFO or
 * `/dev/zero` planted as a credential is refused, never blocks); a group/world-writable
 * directory or a readable key is warned about.
 *
 * @module
 */
import { randomBytes } from "node:crypto";
import { link, mkdir, open, readdir, rename, rm, stat } from "node:fs/promises";
import { basename, dirname, isAbsolute, join } from "node:path";
import { type BundlePem, type JwtKeyPem, sameBundlePem } from "../ca/bundle.ts";
import { DEFAULT_JWT_NAMES, type JwtNames } from "../ca/jwt-keys.ts";
import { watchFiles } from "../config/file-watcher.ts";
import { type CredentialStore, StoreConflictError, StoreError } from "./store.ts";
import { FileRefusedError, readSmallFile } from "../util/bounded-read.ts";
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
  /** Where warnings about unsafe permissions go (each one once). */
  logger?: { warn(message: string): void };
  /** Test hook: writes `content` into a new file (default: the handle's writeFile). */
  writeContent?: (
    handle: { writeFile(data: string): Promise<void> },
    content: string,
  ) => Promise<void>;
}

type Part = "caCrt" | "issuerCrt" | "issuerKey";
/** Write order: the key before its certificate, the anchors last. */
const PARTS: readonly Part[] = ["issuerKey", "issuerCrt", "caCrt"];
/** File modes: keys are secret; certificates are public (daprd, as another user, reads ca.crt). */
const MODES: Record<Part, number> = { issuerKey: 0o600, issuerCrt: 0o644, caCrt: 0o644 };
/** The JWT parts, key first. */
const JWT_PARTS = ["keyPem", "jwksJson"] as const;
/** File modes of the JWT parts: the key is secret, the key set is public. */
const JWT_MODES = { keyPem: 0o600, jwksJson: 0o644 } as const;
/** Name of the optional root key file, beside ca.crt. */
export const ROOT_KEY_FILENAME = "ca.key";
/** Prefix of a first-boot staging directory (inside the directory of the issuer key). */
export const STAGING_PREFIX = ".sentry-staging-";
/** Prefix of a temporary file written next to the file it replaces. */
export const TEMPORARY_PREFIX = ".sentry-tmp-";
/** An older sentry's temporary file name. */
const LEGACY_TEMPORARY = /^\.[0-9a-f]{12}\.tmp$/;
/** The staging directory's list of files; written last, so its presence means "complete". */
const MANIFEST = "manifest.json";
/** Unfinished staging and temporary files older than this are left over from a killed writer. */
export const STALE_AFTER_MS = 30_000;

type WriteContent = NonNullable<FsStoreOptions["writeContent"]>;
const defaultWrite: WriteContent = (handle, content) => handle.writeFile(content);

async function readIfExists(path: string): Promise<string | undefined> {
  try {
    return await readSmallFile(path);
  } catch (error) {
    if (errorCode(error) === "ENOENT") return undefined;
    if (error instanceof FileRefusedError) throw new StoreError(error.message, { cause: error });
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

/**
 * Writes `content` to the new file `path` (exactly `mode`, whatever the umask), synced; the
 * file is removed again if anything fails (a full disk leaves nothing behind).
 */
async function writeNewFile(
  path: string,
  content: string,
  mode: number,
  write: WriteContent,
): Promise<void> {
  const handle = await open(path, "wx", mode);
  try {
    await handle.chmod(mode);
    await write(handle, content);
    await handle.sync();
  } catch (error) {
    await handle.close().catch(() => {});
    await rm(path, { force: true });
    throw error;
  }
  await handle.close();
}

/** Writes `content` to a new synced file next to `path`; returns its name. */
async function writeTemporary(
  path: string,
  content: string,
  mode: number,
  write: WriteContent,
): Promise<string> {
  const temporary = join(dirname(path), `${TEMPORARY_PREFIX}${randomBytes(6).toString("hex")}`);
  await writeNewFile(temporary, content, mode, write);
  return temporary;
}

/** Creates `path` with `content` unless it exists; returns false if it already existed. */
async function createFileAtomically(
  path: string,
  content: string,
  mode: number,
  write: WriteContent,
): Promise<boolean> {
  const temporary = await writeTemporary(path, content, mode, write);
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
async function replaceFileAtomically(
  path: string,
  content: string,
  mode: number,
  write: WriteContent,
): Promise<void> {
  const temporary = await writeTemporary(path, content, mode, write);
  try {
    await rename(temporary, path);
  } catch (error) {
    await rm(temporary, { force: true });
    throw error;
  }
}

/** Syncs a directory so that the names created in it survive a crash. */
async function syncDirectory(directory: string): Promise<void> {
  const handle = await open(directory, "r");
  try {
    await handle.sync();
  } catch {
    // Some filesystems do not sync directories: the files themselves are synced.
  } finally {
    await handle.close();
  }
}

/** Removes the destinations that are links to the staged files (a failed publication). */
async function unpublish(staging: string, files: StagedFile[]): Promise<void> {
  for (const file of files) {
    try {
      const [source, target] = await Promise.all([
        stat(join(staging, file.staged)),
        stat(file.target),
      ]);
      if (source.ino === target.ino && source.dev === target.dev) await rm(file.target);
    } catch {
      // not staged or not published: nothing to undo
    }
  }
}

/** Whether `path` was last modified more than {@link STALE_AFTER_MS} ago (false if gone). */
async function isStale(path: string): Promise<boolean> {
  try {
    return Date.now() - (await stat(path)).mtimeMs > STALE_AFTER_MS;
  } catch {
    return false;
  }
}

/** One file of a staged bundle: its name in the staging directory, its destination, its mode. */
interface StagedFile {
  staged: string;
  target: string;
  mode: number;
}

/**
 * Links the staged files into place without overwriting. A destination that exists with the
 * same content counts as published (an earlier, interrupted publication of the same staging);
 * returns the first destination that holds something else, if any (another writer won).
 */
async function publishStaged(staging: string, files: StagedFile[]): Promise<string | undefined> {
  for (const file of files) {
    const source = join(staging, file.staged);
    try {
      await link(source, file.target);
    } catch (error) {
      if (errorCode(error) !== "EEXIST") throw error;
      const [ours, theirs] = await Promise.all([readSmallFile(source), readIfExists(file.target)]);
      if (ours !== theirs) return file.target;
    }
  }
  for (const directory of new Set(files.map((file) => dirname(file.target)))) {
    await syncDirectory(directory);
  }
  return undefined;
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
  readonly #logger?: { warn(message: string): void };
  readonly #write: WriteContent;
  readonly #warned = new Set<string>();

  /** Resolves the paths; nothing is touched until a method is called. */
  constructor(options: FsStoreOptions) {
    this.#logger = options.logger;
    this.#write = options.writeContent ?? defaultWrite;
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
    await this.#recover();
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
    await this.#checkPermissions(caKey !== undefined, jwt !== undefined);
    return {
      caCrt,
      issuerCrt,
      issuerKey,
      ...(caKey !== undefined ? { caKey } : {}),
      ...(jwt ? { jwt } : {}),
    };
  }

  /** Every file the store may write. */
  get #allPaths(): string[] {
    return [...PARTS.map((part) => this.paths[part]), this.rootKeyPath, ...this.#jwtPaths];
  }

  /** Where first-boot staging happens: the directory of the issuer key. */
  get #stagingRoot(): string {
    return dirname(this.paths.issuerKey);
  }

  async #makeDirectories(): Promise<void> {
    for (const path of this.#allPaths) {
      const directory = dirname(path);
      try {
        // Traversable by all: daprd, as another user, reads ca.crt (the keys stay 0600).
        await mkdir(directory, { recursive: true, mode: 0o755 });
      } catch (error) {
        throw new StoreError(`cannot create directory ${directory}: ${(error as Error).message}`, {
          cause: error,
        });
      }
    }
  }

  /**
   * Finishes or removes what a killed writer left: a complete staging directory (its manifest
   * exists) is published, files already in place with the same content counting as published;
   * an unfinished one, and temporary files, are removed once older than
   * {@link STALE_AFTER_MS} (a younger one may belong to a writer still running).
   */
  async #recover(): Promise<void> {
    for (const directory of new Set(this.#allPaths.map((path) => dirname(path)))) {
      let names: string[];
      try {
        names = await readdir(directory);
      } catch {
        continue; // no directory yet (or unreadable: load reports it)
      }
      for (const name of names) {
        const path = join(directory, name);
        if (name.startsWith(STAGING_PREFIX) && directory === this.#stagingRoot) {
          await this.#recoverStaging(path);
        } else if (name.startsWith(TEMPORARY_PREFIX) || LEGACY_TEMPORARY.test(name)) {
          if (await isStale(path)) {
            this.#logger?.warn(`removing ${path}, left over from an interrupted write`);
            await rm(path, { force: true });
          }
        }
      }
    }
  }

  async #recoverStaging(staging: string): Promise<void> {
    const manifest = await readIfExists(join(staging, MANIFEST)).catch(() => undefined);
    const files = manifest === undefined ? undefined : this.#parseManifest(manifest);
    if (!files) {
      if (await isStale(staging)) {
        this.#logger?.warn(
          `removing ${staging}, an unfinished first-boot bundle of a killed sentry`,
        );
        await rm(staging, { recursive: true, force: true });
      }
      return;
    }
    let conflict: string | undefined;
    try {
      conflict = await publishStaged(staging, files);
    } catch (error) {
      if (errorCode(error) === "ENOENT") return; // another process finished it meanwhile
      throw new StoreError(
        `cannot finish the interrupted first boot from ${staging}: ${(error as Error).message}`,
        { cause: error },
      );
    }
    this.#logger?.warn(
      conflict
        ? `removing ${staging}, an interrupted first-boot bundle: ${conflict} holds another one`
        : `published the first-boot bundle of an interrupted sentry from ${staging}`,
    );
    await rm(staging, { recursive: true, force: true });
  }

  /** The manifest's files, only if each goes to one of this store's paths. */
  #parseManifest(text: string): StagedFile[] | undefined {
    try {
      const files = JSON.parse(text) as StagedFile[];
      const allowed = new Set(this.#allPaths);
      const valid = Array.isArray(files) &&
        files.every((file) =>
          typeof file?.staged === "string" && file.staged === basename(file.staged) &&
          file.staged !== MANIFEST && allowed.has(file.target) && typeof file.mode === "number"
        );
      return valid ? files : undefined;
    } catch {
      return undefined;
    }
  }

  /** Warns (once each) about a group/world-writable directory or readable private keys. */
  async #checkPermissions(hasRootKey: boolean, hasJwt: boolean): Promise<void> {
    if (!this.#logger) return;
    const checks: [string, number, string][] = [[
      this.#stagingRoot,
      0o022,
      "is writable by group or others: whoever can write there can replace the issuer key; " +
      "chmod go-w",
    ], [this.paths.issuerKey, 0o077, "is accessible to group or others; chmod 600"]];
    if (hasRootKey) {
      checks.push([this.rootKeyPath, 0o077, "is accessible to group or others; chmod 600"]);
    }
    if (hasJwt) {
      checks.push([this.jwtNames.key, 0o077, "is accessible to group or others; chmod 600"]);
    }
    for (const [path, mask, advice] of checks) {
      let mode: number;
      try {
        mode = (await stat(path)).mode & 0o777;
      } catch {
        continue;
      }
      if ((mode & mask) === 0) continue;
      const message = `${path} (mode ${mode.toString(8).padStart(4, "0")}) ${advice} ${path}`;
      if (this.#warned.has(message)) continue;
      this.#warned.add(message);
      this.#logger.warn(message);
    }
  }

  /**
   * Creates the files without overwriting any (keys 0600, certificates 0644), all or nothing:
   * they are written and synced in a staging directory with a manifest, then linked into place;
   * a sentry killed meanwhile leaves a staging directory that the next {@link load} publishes
   * (or removes, if it was unfinished). If some file appeared meanwhile, nothing of ours
   * replaces it and the stored bundle is returned.
   */
  async create(bundle: BundlePem): Promise<BundlePem> {
    await this.#makeDirectories();
    const files: [string, string, number][] = PARTS.map((
      part,
    ) => [this.paths[part], bundle[part], MODES[part]]);
    if (bundle.caKey) files.push([this.rootKeyPath, bundle.caKey, 0o600]);
    const jwt = bundle.jwt;
    if (jwt) files.push(...this.#jwtFiles(jwt));
    const staging = join(this.#stagingRoot, `${STAGING_PREFIX}${randomBytes(6).toString("hex")}`);
    const staged: StagedFile[] = files.map(([target, , mode], i) => ({
      staged: `f${i}`,
      target,
      mode,
    }));
    let conflict: string | undefined;
    try {
      await mkdir(staging, { mode: 0o700 });
      for (const [i, [, content, mode]] of files.entries()) {
        await writeNewFile(join(staging, staged[i].staged), content, mode, this.#write);
      }
      await writeNewFile(join(staging, MANIFEST), JSON.stringify(staged), 0o600, this.#write);
      await syncDirectory(staging);
      conflict = await publishStaged(staging, staged);
    } catch (error) {
      await unpublish(staging, staged);
      const stored = await this.load().catch(() => null);
      if (stored && sameBundlePem(stored, bundle)) return bundle; // finished by another load
      throw new StoreError(
        `cannot write the new bundle into ${this.description}: ${(error as Error).message}`,
        { cause: error },
      );
    } finally {
      await rm(staging, { recursive: true, force: true });
    }
    if (conflict) {
      const winner = await this.load();
      if (winner) return winner;
      throw new StoreError(`${conflict} appeared while sentry was writing a new bundle`);
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
          await replaceFileAtomically(this.paths[part], bundle[part], MODES[part], this.#write);
        }
      }
      if (bundle.caKey) {
        if (bundle.caKey !== current.caKey) {
          await replaceFileAtomically(this.rootKeyPath, bundle.caKey, 0o600, this.#write);
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
        if (!await createFileAtomically(path, content, mode, this.#write)) {
          throw new StoreConflictError(
            `${path} appeared while sentry was adding a JWT signing key; nothing was replaced`,
          );
        }
      } else if (content !== (path === this.jwtNames.key ? current.keyPem : current.jwksJson)) {
        await replaceFileAtomically(path, content, mode, this.#write);
      }
    }
  }

  /** Watches the directories of the files (edits, renames, symlink swaps). */
  watch(onChange: () => void): { close(): void } {
    return watchFiles([...PARTS.map((part) => this.paths[part]), ...this.#jwtPaths], onChange);
  }
}
