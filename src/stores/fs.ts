/**
 * The filesystem credential store (`--store fs`, self-hosted default): `ca.crt`, `issuer.crt`
 * and `issuer.key` in the `--issuer-credentials` directory, names from the
 * `--issuer-*-filename` flags (an absolute name replaces directory + name, as in Dapr), plus
 * `ca.key` beside `ca.crt` only when the operator keeps the root key (`sentry init
 * --keep-root-key`), plus the JWT signing key `jwt.key` (0600) and its `jwks.json` when JWT
 * issuing has stored them (names from `--jwt-key-filename` and `--jwks-filename`), plus, during
 * a root rotation, its parts beside `ca.crt` as Dapr's development branch names them
 * (`rotation-ca.crt`, `rotation-issuer.crt`, `rotation-issuer.key`, `rotation-ca.key` when root
 * keys are kept, and `rotation-state.json`). As in Dapr, `rotation-state.json` is written last
 * and removed first: its presence marks a rotation in progress, and rotation files without it
 * are leftovers, ignored (one warning) and overwritten by the next rotation; with it, a missing
 * new root or issuer is refused as partial.
 *
 * Beyond Dapr: a directory holding only some of the files is refused (Dapr would regenerate
 * and overwrite all three, and regenerates `jwt.key` when `jwks.json` is missing). Every write
 * is all or nothing: the new files are written and synced as `.sentry-tmp-*` files beside their
 * destinations, a manifest listing them is written in a `.sentry-staging-*` directory, and only
 * then are they put in place: linked without overwriting anything on a first boot, renamed over
 * the old files by a replacement (`sentry renew`, after a compare-and-swap check that the files
 * still hold what the caller read). The next load finishes a change whose manifest exists and
 * removes the leftovers of one killed before (at once when the writer was a sentry on this host
 * that is gone, else once stale); a failure such as a full disk leaves nothing behind. Keys
 * are 0600, certificates and `jwks.json` 0644 (daprd, as another user, reads `ca.crt`). Only regular files of at most 1 MiB are read (a FIFO or
 * `/dev/zero` planted as a credential is refused, never blocks); a group/world-writable
 * directory or a readable key is warned about.
 *
 * @module
 */
import { randomBytes } from "node:crypto";
import { hostname } from "node:os";
import process from "node:process";
import { link, mkdir, open, readdir, rename, rm, stat } from "node:fs/promises";
import { basename, dirname, isAbsolute, join } from "node:path";
import { type BundlePem, type JwtKeyPem, type RotationPem, sameBundlePem } from "../ca/bundle.ts";
import { DEFAULT_JWT_NAMES, type JwtNames } from "../ca/jwt-keys.ts";
import { ROTATION_FILE_NAMES } from "../ca/root-rotation.ts";
import { watchFiles } from "../config/file-watcher.ts";
import {
  type CredentialStore,
  StoreConflictError,
  StoreError,
  StoreUnavailableError,
} from "./store.ts";
import { FileRefusedError, readSmallFile } from "../util/bounded-read.ts";
import { errorCode, fileErrorReason } from "../util/file-errors.ts";

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
/** A part of a root rotation in progress. */
type RotationPart = keyof RotationPem;
/** Write order of the rotation parts: keys before certificates, the state last (as in Dapr). */
const ROTATION_PARTS: readonly RotationPart[] = [
  "issuerKey",
  "caKey",
  "issuerCrt",
  "caCrt",
  "stateJson",
];
/** The rotation parts required while a rotation is in progress (the root key is optional). */
const REQUIRED_ROTATION_PARTS: readonly RotationPart[] = ["caCrt", "issuerCrt", "issuerKey"];
/** File modes of the rotation parts: keys are secret, the rest public. */
const ROTATION_MODES: Record<RotationPart, number> = {
  stateJson: 0o644,
  caCrt: 0o644,
  issuerCrt: 0o644,
  issuerKey: 0o600,
  caKey: 0o600,
};
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
 * This process's mark in the names of its staging directories and temporary files:
 * `<host>.<pid>.`. The next start recognises a killed writer's leftovers by it (same host, a
 * process id that is gone or its own) and removes them at once instead of after
 * {@link STALE_AFTER_MS}.
 */
const HOST = hostname().replace(/[^A-Za-z0-9-]/g, "-") || "host";
const OWNED = /^([A-Za-z0-9-]+)\.(\d+)\.[0-9a-f]{12}$/;
/** Names this process is writing right now (never a killed writer's, even with the same pid). */
const writing = new Set<string>();

/** The owner part of the names written by process `pid` on this host: `<host>.<pid>.`. */
export function ownerMark(pid: number = process.pid): string {
  return `${HOST}.${pid}.`;
}

/** A new staging or temporary name (`prefix` + owner + random), registered as being written. */
function ownName(prefix: string): string {
  const name = `${prefix}${ownerMark()}${randomBytes(6).toString("hex")}`;
  writing.add(name);
  return name;
}

/**
 * Whether `name` (after `prefix`) was written by a sentry on this host that is gone: its
 * process id no longer exists, or it is ours (a restarted container's pid 1) but not one of
 * the names this process is writing.
 */
function isAbandoned(name: string, prefix: string): boolean {
  const owner = OWNED.exec(name.slice(prefix.length));
  if (!owner || owner[1] !== HOST) return false;
  const pid = Number(owner[2]);
  if (pid === process.pid) return !writing.has(name);
  try {
    process.kill(pid, 0);
    return false;
  } catch (error) {
    return errorCode(error) === "ESRCH";
  }
}

/** The lock file that makes a replacement's read-compare-write one step across processes. */
export const LOCK_NAME = ".sentry-lock";
/** A lock older than this is a killed writer's, whoever it was (a replacement takes ms). */
const LOCK_STALE_MS = 10_000;
/** How long a replacement waits for another process's lock before giving up. */
const LOCK_WAIT_MS = 10_000;

/**
 * Runs `work` holding the lock file `path` (created exclusively; its content names this
 * process). A lock whose writer is gone (same host, pid gone) or that is older than
 * {@link LOCK_STALE_MS} is removed; a live one is waited for, up to {@link LOCK_WAIT_MS}.
 */
async function withLock<T>(path: string, work: () => Promise<T>): Promise<T> {
  const owner = ownName("");
  const deadline = Date.now() + LOCK_WAIT_MS;
  try {
    while (true) {
      try {
        await writeNewFile(path, owner, 0o600, (handle, text) => handle.writeFile(text));
        break;
      } catch (error) {
        if (errorCode(error) !== "EEXIST") throw naming(path, error);
      }
      const holder = await readIfExists(path).catch(() => undefined);
      if (holder !== undefined && (isAbandoned(holder.trim(), "") || await isOlder(path))) {
        // Removed only if it still names the same holder (a fresh lock is left alone).
        if (await readIfExists(path).catch(() => undefined) === holder) {
          await rm(path, { force: true });
        }
        continue;
      }
      if (Date.now() > deadline) {
        throw new StoreUnavailableError(
          `${path} is held by another writer (${holder?.trim() ?? "gone"}) for more than ` +
            `${LOCK_WAIT_MS / 1000}s; nothing was written`,
        );
      }
      await new Promise((resolve) => setTimeout(resolve, 10 + Math.random() * 20));
    }
    try {
      return await work();
    } finally {
      await rm(path, { force: true });
    }
  } finally {
    writing.delete(owner);
  }
}

/** Whether `path` was last modified more than {@link LOCK_STALE_MS} ago (false if gone). */
async function isOlder(path: string): Promise<boolean> {
  try {
    return Date.now() - (await stat(path)).mtimeMs > LOCK_STALE_MS;
  } catch {
    return false;
  }
}

/** An error naming the destination `target` (a temporary name says nothing to an operator). */
function naming(target: string, error: unknown): Error {
  const message = `${target}: ${fileErrorReason(error)}`;
  return Object.assign(new Error(message, { cause: error }), { code: errorCode(error) });
}

/**
 * Writes `content` to the new file `path` (exactly `mode`, whatever the umask), synced and
 * closed; the file is removed again if anything fails (a full disk leaves nothing behind).
 */
async function writeNewFile(
  path: string,
  content: string,
  mode: number,
  write: WriteContent,
): Promise<void> {
  const handle = await open(path, "wx", mode);
  try {
    try {
      await handle.chmod(mode);
      await write(handle, content);
      await handle.sync();
    } finally {
      await handle.close();
    }
  } catch (error) {
    await rm(path, { force: true });
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

/** Whether `path` was last modified more than {@link STALE_AFTER_MS} ago (false if gone). */
async function isStale(path: string): Promise<boolean> {
  try {
    return Date.now() - (await stat(path)).mtimeMs > STALE_AFTER_MS;
  } catch {
    return false;
  }
}

/**
 * One file of a staged change: the temporary file beside its destination holding the new
 * content (`staged`, a name), the destination, its mode, and whether it is created (linked, never
 * over an existing file) or replaces the destination (renamed over it).
 */
interface StagedFile {
  staged: string;
  target: string;
  mode: number;
  create: boolean;
}

/** A staged change, as its manifest records it: files to put in place, then files to remove. */
interface Manifest {
  files: StagedFile[];
  remove: string[];
}

/** Where a staged file's new content is. */
function stagedPath(file: StagedFile): string {
  return join(dirname(file.target), file.staged);
}

/** Whether two paths are the same file (false if either is missing). */
async function sameFile(a: string, b: string): Promise<boolean> {
  try {
    const [x, y] = await Promise.all([stat(a), stat(b)]);
    return x.ino === y.ino && x.dev === y.dev;
  } catch {
    return false;
  }
}

/** Removes the created destinations that are links to their staged files (an aborted commit). */
async function unpublish(files: StagedFile[]): Promise<void> {
  for (const file of files) {
    if (file.create && await sameFile(stagedPath(file), file.target)) {
      await rm(file.target, { force: true });
    }
  }
}

/** Removes the staged files and the staging directory. */
async function discard(staging: string, manifest: Manifest): Promise<void> {
  for (const file of manifest.files) await rm(stagedPath(file), { force: true });
  await rm(staging, { recursive: true, force: true });
  writing.delete(basename(staging));
  for (const file of manifest.files) writing.delete(file.staged);
}

/** A commit that failed after it replaced a file: the manifest must stay to finish it. */
class PartialCommitError extends Error {}

/**
 * Puts a staged change in place: first the files it creates (linked, never over another file; a
 * destination that already holds the same content counts as created, by an earlier interrupted
 * commit), then the replacements (renamed over their destinations), then the removals. Returns
 * the first destination to be created that holds something else (another writer won): the
 * change is then undone, nothing was replaced. A staged file that is gone was put in place by
 * another process finishing the same change. Throws {@link PartialCommitError} when it fails
 * after a replacement.
 */
async function commit(manifest: Manifest): Promise<string | undefined> {
  const creates = manifest.files.filter((file) => file.create);
  for (const file of creates) {
    const source = stagedPath(file);
    try {
      await link(source, file.target);
    } catch (error) {
      if (errorCode(error) === "ENOENT" && !await exists(source)) continue;
      if (errorCode(error) !== "EEXIST") {
        await unpublish(creates);
        throw naming(file.target, error);
      }
      const [ours, theirs] = await Promise.all([readSmallFile(source), readIfExists(file.target)]);
      if (ours !== theirs) {
        await unpublish(creates);
        return file.target;
      }
    }
  }
  let replaced = false;
  for (const file of manifest.files.filter((file) => !file.create)) {
    try {
      await rename(stagedPath(file), file.target);
      replaced = true;
    } catch (error) {
      if (errorCode(error) === "ENOENT" && !await exists(stagedPath(file))) continue;
      if (!replaced) await unpublish(creates);
      const failure = naming(file.target, error);
      throw replaced ? new PartialCommitError(failure.message, { cause: error }) : failure;
    }
  }
  for (const path of manifest.remove) await rm(path, { force: true });
  const directories = [...manifest.files.map((file) => file.target), ...manifest.remove];
  for (const directory of new Set(directories.map((path) => dirname(path)))) {
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
  /** Paths of the parts of a root rotation in progress, beside ca.crt. */
  readonly rotationPaths: Record<RotationPart, string>;
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
    this.rotationPaths = Object.fromEntries(
      ROTATION_PARTS.map((
        part,
      ) => [part, join(dirname(this.paths.caCrt), ROTATION_FILE_NAMES[part])]),
    ) as Record<RotationPart, string>;
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
   * three X.509 files go together, and so do the two JWT files, which need the X.509 ones; a
   * rotation in progress needs its new root and issuer, and the X.509 files).
   */
  async load(): Promise<BundlePem | null> {
    await this.#recover();
    const present = await Promise.all(PARTS.map((part) => exists(this.paths[part])));
    const jwtPresent = await Promise.all(this.#jwtPaths.map(exists));
    const jwtFound = this.#jwtPaths.filter((_, i) => jwtPresent[i]);
    const rotating = await exists(this.rotationPaths.stateJson);
    if (present.every((p) => !p)) {
      const found = [...jwtFound, ...(rotating ? [this.rotationPaths.stateJson] : [])];
      if (found.length === 0) return null;
      throw new StoreError(
        `incomplete credentials in ${this.description}: found ${found.join(", ")} but no ` +
          `trust bundle (${PARTS.map((part) => this.paths[part]).join(", ")}). sentry does not ` +
          `generate a CA beside a JWT key or a root rotation in progress: restore the bundle, ` +
          `or remove ${found.length > 1 ? "those files" : "that file"}`,
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
    const rotation = await this.#loadRotation(rotating);
    await this.#checkPermissions(caKey !== undefined, jwt !== undefined, rotation);
    return {
      caCrt,
      issuerCrt,
      issuerKey,
      ...(caKey !== undefined ? { caKey } : {}),
      ...(jwt ? { jwt } : {}),
      ...(rotation ? { rotation } : {}),
    };
  }

  /**
   * The rotation in progress, when `rotation-state.json` exists (`rotating`): the new root and
   * issuer must be there too (StoreError naming the missing ones). Without the state, rotation
   * files are leftovers of a finished or abandoned rotation: ignored, with one warning.
   */
  async #loadRotation(rotating: boolean): Promise<RotationPem | undefined> {
    const texts = await Promise.all(
      ROTATION_PARTS.map((part) => readIfExists(this.rotationPaths[part])),
    );
    const read = Object.fromEntries(ROTATION_PARTS.map((part, i) => [part, texts[i]])) as Partial<
      RotationPem
    >;
    if (!rotating || read.stateJson === undefined) {
      const leftovers = ROTATION_PARTS.filter((part) => read[part] !== undefined)
        .map((part) => this.rotationPaths[part]);
      if (leftovers.length > 0) {
        this.#warnOnce(
          `ignoring ${leftovers.join(", ")}: no ${this.rotationPaths.stateJson}, so no root ` +
            `rotation is in progress (left over from a finished or abandoned one; the next ` +
            `rotation overwrites them)`,
        );
      }
      return undefined;
    }
    const missing = REQUIRED_ROTATION_PARTS.filter((part) => read[part] === undefined)
      .map((part) => this.rotationPaths[part]);
    if (missing.length > 0) {
      throw new StoreError(
        `incomplete root rotation in ${this.description}: ${this.rotationPaths.stateJson} ` +
          `says a rotation is in progress but ${missing.join(", ")} ` +
          `${missing.length > 1 ? "are" : "is"} missing. sentry does not continue a rotation ` +
          `without its new root and issuer: restore the missing file(s), or remove ` +
          `${this.rotationPaths.stateJson} to abandon the rotation`,
      );
    }
    const { stateJson, caCrt, issuerCrt, issuerKey, caKey } = read as RotationPem;
    return { stateJson, caCrt, issuerCrt, issuerKey, ...(caKey !== undefined ? { caKey } : {}) };
  }

  /** Every file the store may write. */
  get #allPaths(): string[] {
    return [
      ...PARTS.map((part) => this.paths[part]),
      this.rootKeyPath,
      ...this.#jwtPaths,
      ...ROTATION_PARTS.map((part) => this.rotationPaths[part]),
    ];
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
   * Finishes or removes what a killed writer left. A complete staging directory (its manifest
   * exists) is committed: files already in place count as done. An unfinished one, and
   * temporary files, are removed when their writer is known to be gone (this host, a process id
   * that no longer exists or is this process's own) or once older than {@link STALE_AFTER_MS}
   * (a younger one of another writer may still be being written).
   */
  async #recover(): Promise<void> {
    const directories = [...new Set(this.#allPaths.map((path) => dirname(path)))];
    const listings = await Promise.all(
      directories.map((directory) => readdir(directory).catch(() => [] as string[]) // no directory yet (or unreadable: load says)
      ),
    );
    // Stagings first: a complete one still needs its temporary files.
    for (const name of listings[directories.indexOf(this.#stagingRoot)] ?? []) {
      if (name.startsWith(STAGING_PREFIX)) await this.#recoverStaging(this.#stagingRoot, name);
    }
    for (const [i, directory] of directories.entries()) {
      for (const name of listings[i]) {
        const path = join(directory, name);
        const ours = name.startsWith(TEMPORARY_PREFIX);
        if (!ours && !LEGACY_TEMPORARY.test(name)) continue;
        if ((ours && isAbandoned(name, TEMPORARY_PREFIX)) || await isStale(path)) {
          this.#logger?.warn(`removing ${path}, left over from an interrupted write`);
          await rm(path, { force: true });
        }
      }
    }
  }

  async #recoverStaging(root: string, name: string): Promise<void> {
    const staging = join(root, name);
    const text = await readIfExists(join(staging, MANIFEST)).catch(() => undefined);
    const manifest = text === undefined ? undefined : this.#parseManifest(text);
    if (!manifest) {
      if (isAbandoned(name, STAGING_PREFIX) || await isStale(staging)) {
        this.#logger?.warn(`removing ${staging}, an unfinished change of a killed sentry`);
        await rm(staging, { recursive: true, force: true });
      }
      return;
    }
    let conflict: string | undefined;
    try {
      conflict = await commit(manifest);
    } catch (error) {
      throw new StoreError(
        `cannot finish the interrupted change of ${this.description} recorded in ${staging}: ` +
          (error as Error).message,
        { cause: error },
      );
    }
    this.#logger?.warn(
      conflict
        ? `removing ${staging}, an interrupted change: ${conflict} holds another file`
        : `finished the interrupted change of ${this.description} recorded in ${staging}`,
    );
    await discard(staging, manifest);
  }

  /** The manifest, only if each file is a temporary beside one of this store's paths. */
  #parseManifest(text: string): Manifest | undefined {
    try {
      const manifest = JSON.parse(text) as Manifest;
      const allowed = new Set(this.#allPaths);
      const valid = Array.isArray(manifest?.files) && Array.isArray(manifest.remove) &&
        manifest.files.every((file) =>
          typeof file?.staged === "string" && file.staged === basename(file.staged) &&
          file.staged.startsWith(TEMPORARY_PREFIX) && allowed.has(file.target) &&
          typeof file.mode === "number" && typeof file.create === "boolean"
        ) && manifest.remove.every((path) => allowed.has(path));
      return valid ? manifest : undefined;
    } catch {
      return undefined;
    }
  }

  /** Logs `message` unless it was logged before. */
  #warnOnce(message: string): void {
    if (!this.#logger || this.#warned.has(message)) return;
    this.#warned.add(message);
    this.#logger.warn(message);
  }

  /** Warns (once each) about a group/world-writable directory or readable private keys. */
  async #checkPermissions(
    hasRootKey: boolean,
    hasJwt: boolean,
    rotation?: RotationPem,
  ): Promise<void> {
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
    for (const part of ["issuerKey", "caKey"] as const) {
      if (rotation?.[part] === undefined) continue;
      checks.push([this.rotationPaths[part], 0o077, "is accessible to group or others; chmod 600"]);
    }
    for (const [path, mask, advice] of checks) {
      let mode: number;
      try {
        mode = (await stat(path)).mode & 0o777;
      } catch {
        continue;
      }
      if ((mode & mask) === 0) continue;
      this.#warnOnce(`${path} (mode ${mode.toString(8).padStart(4, "0")}) ${advice} ${path}`);
    }
  }

  /**
   * Creates the files without overwriting any (keys 0600, certificates 0644), all or nothing
   * (see {@link #change}). If some file appeared meanwhile, nothing of ours replaces it and the
   * stored bundle is returned. Rotation parts (rare at creation) replace leftovers of an older
   * rotation, once the bundle's own files were created.
   */
  async create(bundle: BundlePem): Promise<BundlePem> {
    const rotationPaths = new Set(Object.values(this.rotationPaths));
    const files = this.#bundleFiles(bundle).map(([target, content, mode]) => ({
      target,
      content,
      mode,
      create: !rotationPaths.has(target),
    }));
    let conflict: string | undefined;
    try {
      conflict = await this.#change(files, []);
    } catch (error) {
      const stored = await this.load().catch(() => null);
      if (stored && sameBundlePem(stored, bundle)) return bundle; // finished by another load
      throw error;
    }
    if (conflict) {
      const winner = await this.load();
      if (winner) return winner;
      throw new StoreError(`${conflict} appeared while sentry was writing a new bundle`);
    }
    return bundle;
  }

  /**
   * The files of `bundle`: path, content, mode (the root key, JWT and rotation files when
   * present; `rotation-state.json` last).
   */
  #bundleFiles(bundle: BundlePem): [string, string, number][] {
    const files: [string, string, number][] = PARTS.map((part) => [
      this.paths[part],
      bundle[part],
      MODES[part],
    ]);
    if (bundle.caKey) files.push([this.rootKeyPath, bundle.caKey, 0o600]);
    if (bundle.jwt) files.push(...this.#jwtFiles(bundle.jwt));
    const rotation = bundle.rotation;
    for (const part of rotation ? ROTATION_PARTS : []) {
      const content = rotation![part];
      if (content !== undefined) {
        files.push([this.rotationPaths[part], content, ROTATION_MODES[part]]);
      }
    }
    return files;
  }

  /**
   * Rotation files that replacing `current` by `bundle` removes: all of them (the state first)
   * when `bundle` ends the rotation, else `rotation-ca.key` when `bundle`'s rotation has no root
   * key but the file exists (stored, or a leftover that would otherwise join the rotation).
   */
  async #rotationRemovals(bundle: BundlePem, current: BundlePem): Promise<string[]> {
    if (!bundle.rotation) {
      if (!current.rotation) return [];
      return ["stateJson", ...ROTATION_PARTS.filter((part) => part !== "stateJson")].map((part) =>
        this.rotationPaths[part as RotationPart]
      );
    }
    const keyPath = this.rotationPaths.caKey;
    return bundle.rotation.caKey === undefined && await exists(keyPath) ? [keyPath] : [];
  }

  /** The JWT files to write for `jwt`: path, content, mode. */
  #jwtFiles(jwt: JwtKeyPem): [string, string, number][] {
    return JWT_PARTS.map((part, i) => [this.#jwtPaths[i], jwt[part], JWT_MODES[part]]);
  }

  /**
   * Makes a change all or nothing: each new file is written and synced as a temporary file
   * beside its destination, then a manifest listing them (and the files to remove) is written
   * in a `.sentry-staging-*` directory; only then are they put in place (see {@link commit}).
   * A sentry killed before the manifest exists leaves temporary files that the next
   * {@link load} removes; killed after, the next load finishes the change. A failure (a full
   * disk) leaves nothing behind, and the error names the destination that could not be written.
   * Returns the destination to be created that another writer created first, if any.
   */
  async #change(
    files: { target: string; content: string; mode: number; create: boolean }[],
    remove: string[],
  ): Promise<string | undefined> {
    await this.#makeDirectories();
    const staging = join(this.#stagingRoot, ownName(STAGING_PREFIX));
    const manifest: Manifest = { files: [], remove };
    try {
      await mkdir(staging, { mode: 0o700 }).catch((error) => {
        throw naming(this.#stagingRoot, error);
      });
      for (const { target, content, mode, create } of files) {
        const file = { staged: ownName(TEMPORARY_PREFIX), target, mode, create };
        manifest.files.push(file);
        await writeNewFile(stagedPath(file), content, mode, this.#write).catch((error) => {
          throw naming(target, error);
        });
      }
      await writeNewFile(join(staging, MANIFEST), JSON.stringify(manifest), 0o600, this.#write)
        .catch((error) => {
          throw naming(`${this.#stagingRoot} (the list of the new files)`, error);
        });
      await syncDirectory(staging);
    } catch (error) {
      await discard(staging, manifest);
      throw this.#writeError(error, false);
    }
    try {
      const conflict = await commit(manifest);
      await discard(staging, manifest);
      return conflict;
    } catch (error) {
      const partial = error instanceof PartialCommitError;
      if (!partial) await discard(staging, manifest);
      throw this.#writeError(error, partial);
    }
  }

  /** The StoreError for a failed {@link #change}: what failed, and whether anything changed. */
  #writeError(error: unknown, partial: boolean): StoreError {
    const outcome = partial
      ? "the change is recorded and the next start of sentry finishes it"
      : "nothing was changed";
    return new StoreError(
      `cannot write the new bundle into ${this.description}: ${(error as Error).message}; ` +
        outcome,
      { cause: error },
    );
  }

  /**
   * Replaces the stored bundle with `bundle` if the files still hold `expected`; otherwise
   * throws StoreConflictError and changes nothing. The changed files are replaced all or
   * nothing (see {@link #change}); `ca.key` is written when `bundle` has a root key and removed
   * when it has none but one is stored. JWT files are created when none are stored (never over
   * a file that appeared meanwhile), replaced when they differ, and left alone when `bundle` has
   * no `jwt`. Rotation files are written when they differ (over leftovers; the state last) and
   * removed (the state first) when `bundle` has no `rotation`: that ends a rotation.
   */
  replace(bundle: BundlePem, expected: BundlePem): Promise<BundlePem> {
    // Read, compare and write as one step across processes (replicas sharing the directory,
    // the CLI beside a running server): without it two writers can both pass the comparison.
    return withLock(join(this.#stagingRoot, LOCK_NAME), () => this.#replace(bundle, expected));
  }

  async #replace(bundle: BundlePem, expected: BundlePem): Promise<BundlePem> {
    const current = await this.load();
    if (!current || !sameBundlePem(current, expected)) {
      throw new StoreConflictError(
        `the bundle in ${this.description} changed since it was read; nothing was written: run again`,
      );
    }
    const stored = new Map(this.#bundleFiles(current).map(([path, content]) => [path, content]));
    const jwtPaths = new Set(this.#jwtPaths);
    const files = this.#bundleFiles({ ...bundle, jwt: bundle.jwt ?? current.jwt })
      .filter(([path, content]) => stored.get(path) !== content)
      .map(([target, content, mode]) => ({
        target,
        content,
        mode,
        create: jwtPaths.has(target) && !current.jwt,
      }));
    const remove = [
      ...(!bundle.caKey && current.caKey !== undefined ? [this.rootKeyPath] : []),
      ...await this.#rotationRemovals(bundle, current),
    ];
    if (files.length === 0 && remove.length === 0) return bundle;
    const conflict = await this.#change(files, remove);
    if (conflict) {
      throw new StoreConflictError(
        `${conflict} appeared while sentry was adding a JWT signing key; nothing was replaced`,
      );
    }
    return bundle;
  }

  /** Watches the directories of the files (edits, renames, symlink swaps). */
  watch(onChange: () => void): { close(): void } {
    return watchFiles(this.#allPaths, onChange);
  }
}
