/**
 * Entry point of the `sentry` program: dispatches the command line to a subcommand (the
 * server when none is named, as with Dapr's binary). Startup runs inside an async function
 * because the single binary is CommonJS (no top-level await).
 *
 * @module
 */
import { Buffer } from "node:buffer";
import process from "node:process";
import type { CommandIO } from "./src/cli/command.ts";
import { COMMANDS, topLevelHelp, unknownCommandMessage } from "./src/cli/commands.ts";
import { runServe } from "./src/cli/serve.ts";
import { runtimeDescription, VERSION } from "./src/util/version.ts";

async function readStdin(): Promise<Uint8Array> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(Buffer.from(chunk));
  return Buffer.concat(chunks);
}

async function main(argv: string[]): Promise<number> {
  const io: CommandIO = {
    env: process.env,
    now: () => new Date(),
    stdout: (text: string) => void process.stdout.write(text),
    stderr: (text: string) => void process.stderr.write(text),
    readStdin,
  };
  const [first, ...rest] = argv;
  if (first === "--version" || first === "-version" || first === "version") {
    io.stdout(`sentry ${VERSION} (${runtimeDescription()})\n`);
    return 0;
  }
  if (first === "--help" || first === "-help" || first === "-h" || first === "help") {
    io.stdout(topLevelHelp());
    return 0;
  }
  const command = COMMANDS.find((candidate) => candidate.name === first);
  if (command) return await command.run(rest, io);
  if (first !== undefined && !first.startsWith("-")) {
    io.stderr(unknownCommandMessage(first));
    return 2;
  }
  return await runServe(argv, io);
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (error) => {
    process.stderr.write(`sentry: unexpected error: ${(error as Error).stack ?? error}\n`);
    process.exit(1);
  },
);
