/**
 * `deno task compile`: builds `dist/sentry-deno` with `deno compile`. Deno downloads its
 * runtime image (denort) on first use; where that download cannot happen (as on machines that
 * only reach the npm registry) this prints one line saying so, and how to use a local runtime
 * through DENORT_BIN, instead of Deno's stack trace. The release binary is `deno task build`.
 */
import process from "node:process";
import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL("../", import.meta.url));
const output = await new Deno.Command(Deno.execPath(), {
  args: ["compile", "--allow-all", "--output", "dist/sentry-deno", "main.ts"],
  cwd: ROOT,
  stdout: "piped",
  stderr: "piped",
}).output();
const text = new TextDecoder().decode(output.stderr) + new TextDecoder().decode(output.stdout);
if (output.success) {
  console.log("built dist/sentry-deno");
} else if (/denort|download|dns|network|connect|fetch/i.test(text)) {
  console.error(
    "deno compile could not download Deno's runtime image (denort) from Deno's servers, which " +
      "this machine cannot reach: set DENORT_BIN=/path/to/denort (a local copy of the runtime " +
      "for Deno 2.9.6) and run 'deno task compile' again, or use 'deno task build' for the Node " +
      "single binary",
  );
  process.exit(1);
} else {
  console.error(text.trim());
  process.exit(output.code);
}
