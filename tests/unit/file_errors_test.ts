/** src/util/file-errors.ts on real failed file operations. */
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { errorCode, fileErrorReason } from "../../src/util/file-errors.ts";

async function failure(path: string): Promise<unknown> {
  try {
    await readFile(path, "utf8");
  } catch (error) {
    return error;
  }
  throw new Error(`reading ${path} did not fail`);
}

Deno.test("fileErrorReason names the usual failures; others keep Node's message", async () => {
  const dir = await Deno.makeTempDir();
  const missing = await failure(join(dir, "nope"));
  assert.equal(errorCode(missing), "ENOENT");
  assert.equal(fileErrorReason(missing), "file not found");
  const directory = await failure(dir);
  assert.equal(fileErrorReason(directory), "is a directory");
  const other = Object.assign(new Error("disk on fire"), { code: "EIO" });
  assert.equal(fileErrorReason(other), "disk on fire");
  const full = Object.assign(
    new Error("ENOSPC: no space left on device, open '/d/.sentry-tmp-h.1.ab'"),
    { code: "ENOSPC" },
  );
  assert.equal(fileErrorReason(full), "no space left on device (ENOSPC)");
  const write = Object.assign(new Error("EROFS: read-only file system, write"), { code: "EROFS" });
  assert.equal(fileErrorReason(write), "read-only file system (EROFS)");
  assert.equal(errorCode("not an error"), undefined);
  assert.equal(errorCode(null), undefined);
});
