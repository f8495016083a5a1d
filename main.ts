/**
 * Entry point of the `sentry` program: dispatches the command line to a command. Startup runs
 * inside an async function because the single binary is CommonJS (no top-level await).
 *
 * @module
 */
import process from "node:process";
import { runServe } from "./src/cli/serve.ts";
import { runtimeDescription, VERSION } from "./src/version.ts";

async function main(argv: string[]): Promise<number> {
  const io = {
    env: process.env,
    now: () => new Date(),
    stdout: (text: string) => void process.stdout.write(text),
    stderr: (text: string) => void process.stderr.write(text),
  };
  const [first, ...rest] = argv;
  if (first === "--version" || first === "-version" || first === "version") {
    io.stdout(`sentry ${VERSION} (${runtimeDescription()})\n`);
    return 0;
  }
  if (first === "serve") return await runServe(rest, io);
  return await runServe(argv, io);
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (error) => {
    process.stderr.write(`sentry: unexpected error: ${(error as Error).stack ?? error}\n`);
    process.exit(1);
  },
);
