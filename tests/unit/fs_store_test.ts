/**
 * The filesystem store's guarantees: create never overwrites, load refuses partial bundles,
 * replace is a compare-and-swap that writes nothing on a conflict, and the optional root key
 * follows the bundle. Files that are not regular files (a FIFO, /dev/zero) or too large are
 * refused without blocking; a Secret-style symlinked layout loads; first boot is all or nothing
 * (a killed writer's staging is finished or removed, a full disk leaves no file behind); unsafe
 * permissions are warned about.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { FsCredentialStore, type FsStoreOptions, STAGING_PREFIX } from "../../src/stores/fs.ts";
import { StoreConflictError, StoreError } from "../../src/stores/store.ts";

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

Deno.test("first boot killed after staging: the next start publishes or removes the staging", async (t) => {
  await t.step("complete staging, only issuer.key published: finished", async () => {
    const store = await newStore();
    const dir = join(store.paths.caCrt, "..");
    await Deno.mkdir(dir, { recursive: true });
    const staging = join(dir, `${STAGING_PREFIX}0123456789ab`);
    await Deno.mkdir(staging);
    const files = [
      [store.paths.issuerKey, A.issuerKey, 0o600],
      [store.paths.issuerCrt, A.issuerCrt, 0o644],
      [store.paths.caCrt, A.caCrt, 0o644],
    ] as const;
    for (const [i, [, content, mode]] of files.entries()) {
      await Deno.writeTextFile(join(staging, `f${i}`), content, { mode });
    }
    await Deno.writeTextFile(
      join(staging, "manifest.json"),
      JSON.stringify(files.map(([target, , mode], i) => ({ staged: `f${i}`, target, mode }))),
    );
    await Deno.link(join(staging, "f0"), store.paths.issuerKey); // killed here
    assert.deepEqual(await store.load(), A);
    assert.deepEqual(listDir(dir), ["ca.crt", "issuer.crt", "issuer.key"]);
  });
  await t.step(
    "unfinished staging of a killed writer: removed, a new bundle is created",
    async () => {
      const store = await newStore();
      const dir = join(store.paths.caCrt, "..");
      const staging = join(dir, `${STAGING_PREFIX}0123456789ab`);
      await Deno.mkdir(staging, { recursive: true });
      await Deno.writeTextFile(join(staging, "f0"), A.issuerKey);
      const old = new Date(Date.now() - 3600_000);
      await Deno.utime(staging, old, old);
      assert.equal(await store.load(), null);
      assert.deepEqual(listDir(dir), [], "the staging holding a key is gone");
      assert.deepEqual(await store.create(B), B);
      assert.deepEqual(listDir(dir), ["ca.crt", "ca.key", "issuer.crt", "issuer.key"]);
    },
  );
});

Deno.test("a full disk during first boot leaves no file behind", async () => {
  let writes = 0;
  const store = await newStore({
    writeContent: async (handle, content) => {
      if (++writes === 3) {
        throw Object.assign(new Error("ENOSPC: no space left on device"), { code: "ENOSPC" });
      }
      await handle.writeFile(content);
    },
  });
  await assert.rejects(store.create(A), /no space left on device/);
  assert.deepEqual(listDir(join(store.paths.caCrt, "..")), []);
  assert.equal(await store.load(), null, "the next start generates a bundle");
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
