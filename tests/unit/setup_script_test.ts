/**
 * tests/setup.sh on a machine that lacks the reference tools (hardening issue, point 7): in a
 * private mount namespace, /dev/null is bind-mounted over `openssl`, `kubectl` and Debian's
 * `python3`, so the script sees a fresh Debian; a fake `apt-get` first on PATH records its
 * calls, "installs" openssl (by unmounting it again) and fails for python3-grpcio. The script
 * must install each package with its own call (one failure does not block the rest), build
 * kubectl from tests/kube/go.mod and link it, and name what is still missing.
 */
import assert from "node:assert/strict";
import { join } from "node:path";

const SETUP = new URL("../setup.sh", import.meta.url).pathname;

/** Runs `script` with sh in a private mount namespace; returns exit code and output. */
async function inMountNamespace(
  script: string,
  env: Record<string, string>,
): Promise<{ code: number; stdout: string; stderr: string }> {
  const output = await new Deno.Command("unshare", {
    args: ["-m", "sh", "-c", script],
    env,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder();
  return {
    code: output.code,
    stdout: text.decode(output.stdout),
    stderr: text.decode(output.stderr),
  };
}

/** The real path of a command (following symlinks), for bind-mounting over it. */
async function realPath(command: string): Promise<string> {
  const which = await new Deno.Command("sh", { args: ["-c", `command -v ${command}`] }).output();
  return await Deno.realPath(new TextDecoder().decode(which.stdout).trim());
}

Deno.test({
  name: "tests/setup.sh on a bare Debian: one apt-get call per package, kubectl built and linked",
  ignore: Deno.uid() !== 0,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "setup-script-" });
    try {
      const fakeBin = join(dir, "fake-bin");
      const linkDir = join(dir, "bin");
      await Deno.mkdir(fakeBin);
      const calls = join(dir, "apt-calls");
      const openssl = await realPath("openssl");
      const kubectl = await realPath("kubectl");
      await Deno.writeTextFile(
        join(fakeBin, "apt-get"),
        `#!/bin/sh\necho "$*" >> ${calls}\n` +
          `case "$*" in\n` +
          `  *install*python3-grpcio*) exit 100 ;;\n` +
          `  *install*openssl*) umount ${openssl} ;;\n` +
          `esac\nexit 0\n`,
        { mode: 0o755 },
      );
      const hide = [openssl, kubectl, "/usr/bin/python3"]
        .map((path) => `mount --bind /dev/null ${path}`)
        .join(" && ");
      const result = await inMountNamespace(`${hide} && exec sh ${SETUP}`, {
        PATH: `${fakeBin}:${linkDir}:${Deno.env.get("PATH")}`,
        HOME: Deno.env.get("HOME") ?? "/root",
        SENTRY_SETUP_BIN_DIR: linkDir,
      });
      const log = (await Deno.readTextFile(calls)).trim().split("\n");
      assert.equal(result.code, 1, result.stderr);
      assert.deepEqual(
        log.filter((line) => line.includes("install")).map((line) => line.split(" ").pop()),
        ["openssl", "python3-grpcio", "python3-cryptography"],
        "each package with its own apt-get install",
      );
      assert.match(result.stderr, /apt-get could not install: python3-grpcio\n/);
      assert.match(result.stderr, /missing python3-grpcio python3-cryptography;/);
      assert.doesNotMatch(result.stderr, /missing[^;]*openssl/, "openssl was installed");
      assert.doesNotMatch(
        result.stderr,
        /missing[^;]*kubectl/,
        `kubectl not linked: ${result.stderr}`,
      );
      const linked = await Deno.readLink(join(linkDir, "kubectl"));
      assert.match(linked, /sentry-kube\/v[\d.]+\/kubectl$/);
      const version = await new Deno.Command(join(linkDir, "kubectl"), {
        args: ["version", "--client", "-o", "json"],
      }).output();
      assert.ok(version.success, "the linked kubectl runs");
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "tests/setup.sh does nothing when every tool is there",
  ignore: Deno.uid() !== 0,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "setup-script-" });
    try {
      const calls = join(dir, "apt-calls");
      await Deno.writeTextFile(join(dir, "apt-get"), `#!/bin/sh\necho "$*" >> ${calls}\n`, {
        mode: 0o755,
      });
      const result = await new Deno.Command("sh", {
        args: [SETUP],
        env: { PATH: `${dir}:${Deno.env.get("PATH")}` },
        stderr: "piped",
      }).output();
      assert.equal(result.code, 0, new TextDecoder().decode(result.stderr));
      await assert.rejects(Deno.stat(calls), Deno.errors.NotFound, "apt-get was not called");
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
