/**
 * The filesystem store's guarantees: create never overwrites, load refuses partial bundles,
 * replace is a compare-and-swap that writes nothing on a conflict, and the optional root key
 * follows the bundle. Files that are not regular files (a FIFO, /dev/zero) or too large are
 * refused without blocking; a Secret-style symlinked layout loads; first boot is all or nothing
 * (a killed writer's change is finished when its manifest exists, else its leftovers are removed:
 * at once when the writer is gone, else once stale), as is a replacement; a full disk leaves no
 * file behind and the error names the destination; unsafe permissions are warned about. A root
 * rotation in progress is stored beside ca.crt, compared, and removed by a bundle without it;
 * its state without its new root is partial, and rotation files without the state are ignored
 * leftovers.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import {
  FsCredentialStore,
  type FsStoreOptions,
  LOCK_NAME,
  ownerMark,
  STAGING_PREFIX,
  TEMPORARY_PREFIX,
} from "../../src/stores/fs.ts";
import { StoreConflictError, StoreError } from "../../src/stores/store.ts";
import { parseRotationState, ROTATION_FILE_NAMES } from "../../src/ca/root-rotation.ts";
import { assertLoads } from "../helpers/store_assertions.ts";
import { rotatingBundles } from "../helpers/rotation_bundle.ts";

/** Modes of the rotation files (keys private). */
const ROTATION_MODES = {
  stateJson: 0o644,
  caCrt: 0o644,
  issuerCrt: 0o644,
  issuerKey: 0o600,
  caKey: 0o600,
};

const A = { caCrt: "ca-a\n", issuerCrt: "issuer-a\n", issuerKey: "key-a\n" };
const B = { caCrt: "ca-b\n", issuerCrt: "issuer-b\n", issuerKey: "key-b\n", caKey: "root-b\n" };

async function newStore(options: Partial<FsStoreOptions> = {}) {
  const directory = join(await Deno.makeTempDir({ prefix: "sentry-fs-store-" }), "certs");
  return new FsCredentialStore({
    directory,
    caFilename: "ca.crt",
    issuerCertFilename: "issuer.crt",
    issuerKeyFilename: "issuer.key",
    ...options,
  });
}

/** `promise`, or a rejection naming `what` after 5 s (a blocked read must fail the test). */
function within<T>(promise: Promise<T>, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  return Promise.race([
    promise,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: still blocked after 5 s`)), 5000);
    }),
  ]).finally(() => clearTimeout(timer));
}

function listDir(path: string): string[] {
  return [...Deno.readDirSync(path)].map((entry) => entry.name).sort();
}

Deno.test("create writes private files once and never overwrites", async () => {
  const store = await newStore();
  assert.equal(await store.load(), null);
  assert.equal(await store.create(A), A);
  // Keys private; certificates and the directory readable by daprd running as another user.
  assert.equal((await Deno.stat(join(store.paths.caCrt, ".."))).mode! & 0o777, 0o755);
  assert.equal((await Deno.stat(store.paths.issuerKey)).mode! & 0o777, 0o600);
  assert.equal((await Deno.stat(store.paths.issuerCrt)).mode! & 0o777, 0o644);
  assert.equal((await Deno.stat(store.paths.caCrt)).mode! & 0o777, 0o644);
  assert.deepEqual(await store.load(), A);
  // A second writer gets the first one's bundle back and changes nothing.
  assert.deepEqual(await store.create(B), A);
  assert.deepEqual(await store.load(), A);
});

Deno.test("load refuses a partial bundle, naming what is missing", async () => {
  const store = await newStore();
  await store.create(A);
  await Deno.remove(store.paths.issuerCrt);
  await assert.rejects(store.load(), (error: Error) => {
    assert.ok(error instanceof StoreError);
    assert.match(error.message, /missing .*issuer\.crt \(found .*issuer\.key, .*ca\.crt\)/);
    return true;
  });
});

Deno.test("replace is a compare-and-swap; the root key follows the bundle", async () => {
  const store = await newStore();
  await store.create(A);
  const stale = { ...A, issuerCrt: "something else\n" };
  await assert.rejects(store.replace(B, stale), StoreConflictError);
  assert.deepEqual(await store.load(), A, "nothing written on a conflict");

  await store.replace(B, A);
  assert.deepEqual(await store.load(), B);
  assert.equal(await Deno.readTextFile(store.rootKeyPath), "root-b\n");
  assert.equal((await Deno.stat(store.rootKeyPath)).mode! & 0o777, 0o600);

  // A bundle without a root key removes the stored one (it would no longer match).
  await store.replace(A, B);
  assert.deepEqual(await store.load(), A);
  await assert.rejects(Deno.stat(store.rootKeyPath));
  // No temporary files are left behind.
  const names = [...Deno.readDirSync(join(store.paths.caCrt, ".."))].map((entry) => entry.name)
    .sort();
  assert.deepEqual(names, ["ca.crt", "issuer.crt", "issuer.key"]);
});

Deno.test("a FIFO, a device or an oversized file is refused at once, naming the file", async (t) => {
  await t.step("a FIFO as issuer.key does not block", async () => {
    const store = await newStore();
    await store.create(A);
    await Deno.remove(store.paths.issuerKey);
    await new Deno.Command("mkfifo", { args: [store.paths.issuerKey] }).output();
    await assert.rejects(within(store.load(), "load"), (error: Error) => {
      assert.ok(error instanceof StoreError, String(error));
      assert.match(error.message, /refused to read .*issuer\.key: it is a FIFO/);
      return true;
    });
  });
  await t.step("ca.crt linked to /dev/zero", async () => {
    const store = await newStore();
    await store.create(A);
    await Deno.remove(store.paths.caCrt);
    await Deno.symlink("/dev/zero", store.paths.caCrt);
    await assert.rejects(within(store.load(), "load"), (error: Error) => {
      assert.ok(error instanceof StoreError, String(error));
      assert.match(error.message, /refused to read .*ca\.crt: it is a character device/);
      return true;
    });
  });
  await t.step("a 2 MiB issuer.crt", async () => {
    const store = await newStore();
    await store.create(A);
    await Deno.truncate(store.paths.issuerCrt, 2 * 1024 * 1024);
    await assert.rejects(store.load(), /refused to read .*issuer\.crt: larger than 1048576 bytes/);
  });
});

Deno.test("a Secret-style layout of ..data symlinks loads", async () => {
  const store = await newStore();
  const dir = join(store.paths.caCrt, "..");
  await Deno.mkdir(join(dir, "..2026_01_01_00_00_00.1"), { recursive: true });
  for (
    const [name, content] of Object.entries({
      "ca.crt": A.caCrt,
      "issuer.crt": A.issuerCrt,
      "issuer.key": A.issuerKey,
    })
  ) {
    await Deno.writeTextFile(join(dir, "..2026_01_01_00_00_00.1", name), content);
    await Deno.symlink(join("..data", name), join(dir, name));
  }
  await Deno.symlink("..2026_01_01_00_00_00.1", join(dir, "..data"));
  assert.deepEqual(await store.load(), A);
});

/** A pid that no longer exists (a process that ran and was reaped). */
async function deadPid(): Promise<number> {
  const child = new Deno.Command("true").spawn();
  await child.status;
  return child.pid;
}

/**
 * Leaves on disk what a writer with process id `pid` (on this host) killed after writing its
 * manifest leaves (or before, with `manifest: false`): temporary files beside the destinations
 * and a staging directory. Returns the temporary paths, in the order of `files`.
 */
async function leaveChange(
  files: { target: string; content: string; create: boolean }[],
  options: { pid: number; manifest?: boolean; remove?: string[] },
): Promise<string[]> {
  const mark = ownerMark(options.pid);
  const staging = join(join(files[0].target, ".."), `${STAGING_PREFIX}${mark}00000000000a`);
  await Deno.mkdir(staging, { recursive: true });
  const entries = [];
  for (const [i, { target, content, create }] of files.entries()) {
    const staged = `${TEMPORARY_PREFIX}${mark}00000000000${i}`;
    await Deno.writeTextFile(join(target, "..", staged), content, { mode: 0o600 });
    entries.push({ staged, target, mode: 0o600, create });
  }
  if (options.manifest !== false) {
    await Deno.writeTextFile(
      join(staging, "manifest.json"),
      JSON.stringify({ files: entries, remove: options.remove ?? [] }),
    );
  }
  return entries.map((entry) => join(entry.target, "..", entry.staged));
}

/** The three X.509 files of `store` with the contents of `bundle`. */
function bundleFiles(
  store: FsCredentialStore,
  bundle: Pick<typeof A, keyof typeof A>,
  create: boolean,
) {
  return (["issuerKey", "issuerCrt", "caCrt"] as const).map((part) => ({
    target: store.paths[part],
    content: bundle[part],
    create,
  }));
}

Deno.test("a killed writer's change: finished when its manifest exists, else removed", async (t) => {
  await t.step("first boot, manifest written, only issuer.key linked: finished", async () => {
    const store = await newStore();
    const dir = join(store.paths.caCrt, "..");
    const staged = await leaveChange(bundleFiles(store, A, true), { pid: await deadPid() });
    await Deno.link(staged[0], store.paths.issuerKey); // killed here
    assert.deepEqual(await store.load(), A);
    assert.deepEqual(listDir(dir), ["ca.crt", "issuer.crt", "issuer.key"]);
  });
  await t.step("renew, manifest written, only issuer.key renamed: finished", async () => {
    const store = await newStore();
    const dir = join(store.paths.caCrt, "..");
    await store.create(B);
    const staged = await leaveChange(bundleFiles(store, A, false), {
      pid: await deadPid(),
      remove: [store.rootKeyPath],
    });
    await Deno.rename(staged[0], store.paths.issuerKey); // killed here: key A, certificates B
    assert.deepEqual(await store.load(), A);
    assert.deepEqual(listDir(dir), ["ca.crt", "issuer.crt", "issuer.key"]);
  });
  await t.step(
    "young leftovers of a sentry on this host that is gone: removed at once",
    async () => {
      const store = await newStore();
      const dir = join(store.paths.caCrt, "..");
      await leaveChange(bundleFiles(store, A, true), { pid: await deadPid(), manifest: false });
      assert.equal(await store.load(), null);
      assert.deepEqual(listDir(dir), [], "the staging and the temporary key are gone");
      assert.deepEqual(await store.create(B), B);
      assert.deepEqual(listDir(dir), ["ca.crt", "ca.key", "issuer.crt", "issuer.key"]);
    },
  );
  await t.step("young leftovers of this pid (a restarted container's pid 1): removed", async () => {
    const store = await newStore();
    const dir = join(store.paths.caCrt, "..");
    await leaveChange(bundleFiles(store, A, true), { pid: Deno.pid, manifest: false });
    assert.equal(await store.load(), null);
    assert.deepEqual(listDir(dir), []);
  });
  await t.step("young leftovers of a running writer: left alone until stale", async () => {
    const store = await newStore();
    const dir = join(store.paths.caCrt, "..");
    await leaveChange(bundleFiles(store, A, true), { pid: Deno.ppid, manifest: false });
    assert.equal(await store.load(), null);
    assert.equal(listDir(dir).length, 4, "a running writer's files stay");
    const old = new Date(Date.now() - 3600_000);
    for (const name of listDir(dir)) await Deno.utime(join(dir, name), old, old);
    assert.equal(await store.load(), null);
    assert.deepEqual(listDir(dir), [], "stale leftovers are removed whoever wrote them");
  });
});

Deno.test("a full disk during first boot leaves no file behind, naming the destination", async () => {
  let writes = 0;
  const store = await newStore({
    writeContent: async (handle, content) => {
      if (++writes === 2) {
        // As Node says it: with the temporary file's name, which must not reach the operator.
        const message = `ENOSPC: no space left on device, open '/d/${TEMPORARY_PREFIX}x'`;
        throw Object.assign(new Error(message), { code: "ENOSPC" });
      }
      await handle.writeFile(content);
    },
  });
  await assert.rejects(store.create(A), (error: Error) => {
    assert.ok(error instanceof StoreError);
    assert.match(
      error.message,
      /^cannot write the new bundle into directory .*certs: .*certs\/issuer\.crt: no space left on device \(ENOSPC\); nothing was changed$/,
    );
    assert.doesNotMatch(error.message, /sentry-tmp|sentry-staging/);
    return true;
  });
  assert.deepEqual(listDir(join(store.paths.caCrt, "..")), []);
  assert.equal(await store.load(), null, "the next start generates a bundle");
});

Deno.test("a full disk during a replacement changes nothing, naming the destination", async () => {
  let failing = false;
  const store = await newStore({
    writeContent: async (handle, content) => {
      if (failing) {
        throw Object.assign(new Error("ENOSPC: no space left on device, write"), {
          code: "ENOSPC",
        });
      }
      await handle.writeFile(content);
    },
  });
  await store.create(A);
  failing = true;
  await assert.rejects(
    store.replace(B, A),
    /certs\/issuer\.key: no space left on device \(ENOSPC\); nothing was changed/,
  );
  assert.deepEqual(await store.load(), A);
  assert.deepEqual(listDir(join(store.paths.caCrt, "..")), ["ca.crt", "issuer.crt", "issuer.key"]);
});

Deno.test("unsafe permissions are warned about, once each", async () => {
  const warnings: string[] = [];
  const store = await newStore({ logger: { warn: (message) => warnings.push(message) } });
  await store.create(A);
  const dir = join(store.paths.caCrt, "..");
  await Deno.chmod(dir, 0o777);
  await Deno.chmod(store.paths.issuerKey, 0o640);
  await store.load();
  await store.load();
  assert.equal(warnings.length, 2, warnings.join("\n"));
  assert.match(warnings[0], /certs \(mode 0777\) is writable by group or others/);
  assert.match(
    warnings[1],
    /issuer\.key \(mode 0640\) is accessible to group or others; chmod 600/,
  );
});

/** The rotation files beside ca.crt, by part. */
function rotationFile(store: FsCredentialStore, part: keyof typeof ROTATION_FILE_NAMES): string {
  return join(store.paths.caCrt, "..", ROTATION_FILE_NAMES[part]);
}

Deno.test("a rotation in progress: written beside ca.crt, loaded, compared, removed", async () => {
  const { before, during } = await rotatingBundles({ keepRootKey: true });
  const store = await newStore();
  const dir = join(store.paths.caCrt, "..");
  await store.create(before);
  await store.replace(during, before);
  assert.deepEqual(await store.load(), during);
  for (const [part, mode] of Object.entries(ROTATION_MODES)) {
    const path = rotationFile(store, part as keyof typeof ROTATION_FILE_NAMES);
    assert.equal((await Deno.stat(path)).mode! & 0o777, mode, path);
  }
  assert.deepEqual(parseRotationState(during.rotation!.stateJson).phase, "distributing");

  // Compare-and-swap: a reader that saw other rotation parts (alone) writes nothing.
  const otherState = { ...during.rotation!, stateJson: during.rotation!.stateJson + " " };
  await assert.rejects(
    store.replace(before, { ...during, rotation: otherState }),
    StoreConflictError,
  );
  await assert.rejects(
    store.replace(before, { ...during, rotation: undefined }),
    StoreConflictError,
  );
  assert.deepEqual(await store.load(), during, "nothing written on a conflict");

  // Only the changed part is written; a rotation without a root key removes rotation-ca.key.
  const { caKey: _newRootKey, ...withoutKey } = during.rotation!;
  const switched = { ...during, rotation: { ...withoutKey, stateJson: otherState.stateJson } };
  await store.replace(switched, during);
  assert.deepEqual(await store.load(), switched);
  await assert.rejects(Deno.stat(rotationFile(store, "caKey")));

  // A bundle without rotation ends it: every rotation file goes, the JWT-like keep rule does not apply.
  await store.replace(before, switched);
  assert.deepEqual(await store.load(), before);
  assert.deepEqual(listDir(dir), ["ca.crt", "ca.key", "issuer.crt", "issuer.key"]);
});

Deno.test("rotation-state.json without the new root is refused as partial, naming it", async () => {
  const { before, during } = await rotatingBundles();
  const store = await newStore();
  await store.create(before);
  await store.replace(during, before);
  await Deno.remove(rotationFile(store, "caCrt"));
  await assertLoads(
    store,
    /incomplete root rotation .*rotation-state\.json says a rotation is in progress but .*certs\/rotation-ca\.crt is missing/,
  );
  // Without the bundle itself, a rotation state is refused too (no CA is generated beside it).
  const alone = await newStore();
  await Deno.mkdir(join(alone.paths.caCrt, ".."), { recursive: true });
  await Deno.writeTextFile(rotationFile(alone, "stateJson"), during.rotation!.stateJson);
  await assertLoads(alone, /found .*rotation-state\.json but no trust bundle/);
});

Deno.test("rotation files without rotation-state.json are leftovers: ignored, then overwritten", async () => {
  const { before, during } = await rotatingBundles();
  const warnings: string[] = [];
  const store = await newStore({ logger: { warn: (message) => warnings.push(message) } });
  await store.create(before);
  await Deno.writeTextFile(rotationFile(store, "caCrt"), "old new root\n");
  await Deno.writeTextFile(rotationFile(store, "caKey"), "old new root key\n", { mode: 0o600 });
  assert.deepEqual(await store.load(), before);
  assert.deepEqual(await store.load(), before);
  assert.equal(warnings.length, 1, warnings.join("\n"));
  assert.match(
    warnings[0],
    /ignoring .*rotation-ca\.key, .*rotation-ca\.crt: no .*rotation-state\.json/,
  );
  // The next rotation overwrites them (and does not adopt the stray root key).
  await store.replace(during, before);
  assert.deepEqual(await store.load(), during);
  assert.equal(await Deno.readTextFile(rotationFile(store, "caCrt")), during.rotation!.caCrt);
  await assert.rejects(Deno.stat(rotationFile(store, "caKey")));
});

Deno.test("a readable rotation-issuer.key is warned about", async () => {
  const { before, during } = await rotatingBundles();
  const warnings: string[] = [];
  const store = await newStore({ logger: { warn: (message) => warnings.push(message) } });
  await store.create(before);
  await store.replace(during, before);
  await Deno.chmod(rotationFile(store, "issuerKey"), 0o640);
  await store.load();
  assert.equal(warnings.length, 1, warnings.join("\n"));
  assert.match(warnings[0], /rotation-issuer\.key \(mode 0640\) is accessible to group or others/);
});

Deno.test("a killed writer's rotation change is finished from its manifest", async () => {
  const { before, during } = await rotatingBundles();
  const store = await newStore();
  await store.create(before);
  const files = [
    ...bundleFiles(store, during, false),
    ...(["issuerKey", "issuerCrt", "caCrt", "stateJson"] as const).map((part) => ({
      target: rotationFile(store, part),
      content: during.rotation![part]!,
      create: false,
    })),
  ];
  await leaveChange(files, { pid: await deadPid() });
  assert.deepEqual(await store.load(), during);
});

Deno.test("concurrent replacements of one bundle: exactly one wins, across store instances", async () => {
  const first = await newStore();
  await first.create(A);
  // Five writers (separate store objects, as separate processes would have) all read A.
  const writers = [
    first,
    ...Array.from({ length: 4 }, () =>
      new FsCredentialStore({
        directory: first.paths.caCrt.replace(/\/ca\.crt$/, ""),
        caFilename: "ca.crt",
        issuerCertFilename: "issuer.crt",
        issuerKeyFilename: "issuer.key",
      })),
  ];
  const results = await Promise.allSettled(
    writers.map((store, i) =>
      store.replace({ ...A, caCrt: `ca-${i}\n`, issuerCrt: `issuer-${i}\n` }, A)
    ),
  );
  const won = results.flatMap((result, i) => result.status === "fulfilled" ? [i] : []);
  assert.equal(won.length, 1, JSON.stringify(results.map((r) => r.status)));
  for (const result of results) {
    if (result.status === "rejected") assert.ok(result.reason instanceof StoreConflictError);
  }
  const stored = await first.load();
  assert.equal(stored?.caCrt, `ca-${won[0]}\n`);
  assert.equal(stored?.issuerCrt, `issuer-${won[0]}\n`, "one writer's files, never a mix");
  assert.ok(!listDir(first.paths.caCrt.replace(/\/ca\.crt$/, "")).includes(LOCK_NAME), "released");
});

Deno.test("a killed writer's lock is taken over at once", async () => {
  const store = await newStore();
  await store.create(A);
  const directory = store.paths.caCrt.replace(/\/ca\.crt$/, "");
  await Deno.writeTextFile(join(directory, LOCK_NAME), `${ownerMark(await deadPid())}0123456789ab`);
  const started = performance.now();
  await store.replace(B, A);
  assert.ok(performance.now() - started < 2000, "not waited for");
  assert.equal((await store.load())?.caCrt, B.caCrt);
});
