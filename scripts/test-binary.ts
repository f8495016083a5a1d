/**
 * `deno task test:binary`: runs the end-to-end suite against the release binary the way an
 * operator uses it: `dist/sentry` copied alone into an empty directory, run from another
 * empty directory with an empty HOME (tests/helpers/sentry_process.ts does that for
 * SENTRY_BIN), and, where this user may create one, inside a network namespace that has
 * only a loopback interface, which proves the binary needs no network.
 */
import { copyFile, mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL("../", import.meta.url));
const dir = await mkdtemp(join(tmpdir(), "sentry-binary-"));
const binary = join(dir, "sentry");
await copyFile(join(ROOT, "dist", "sentry"), binary);
await Deno.chmod(binary, 0o755);

const testCommand = [Deno.execPath(), "test", "--allow-all", "--parallel", "tests/e2e/"];
const canIsolate = (await new Deno.Command("unshare", { args: ["-n", "true"], stderr: "null" })
  .output().catch(() => ({ success: false }))).success;
const [program, ...args] = canIsolate
  ? ["unshare", "-n", "sh", "-c", `ip link set lo up && exec "$@"`, "sh", ...testCommand]
  : testCommand;
console.log(
  canIsolate
    ? `e2e suite against ${binary}, in a network namespace with loopback only`
    : `e2e suite against ${binary} (no network namespace available here: network left as is)`,
);
const status = await new Deno.Command(program, {
  args,
  cwd: ROOT,
  env: { SENTRY_BIN: binary },
  stdout: "inherit",
  stderr: "inherit",
}).spawn().status;
process.exit(status.code);
