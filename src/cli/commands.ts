/**
 * The table of sentry's subcommands and the top-level help. `sentry` with no subcommand (or
 * with flags only) is the server, as Dapr's binary.
 *
 * @module
 */
import type { CommandIO, CommandSpec } from "./command.ts";
import { EXPIRY_COMMAND, runExpiry } from "./expiry.ts";
import { INIT_COMMAND, runInit } from "./init.ts";
import { INSPECT_COMMAND, runInspect } from "./inspect.ts";
import { MINT_COMMAND, runMint } from "./mint.ts";
import { RENEW_COMMAND, runRenew } from "./renew.ts";
import { REQUEST_COMMAND, runRequest } from "./request.ts";
import { runServe, SERVE_SUMMARY, serveFlagsHelp } from "./serve.ts";
import { VERSION } from "../util/version.ts";

/** One subcommand. */
export interface Command {
  name: string;
  summary: string;
  run(argv: readonly string[], io: CommandIO): Promise<number>;
}

function entry(spec: CommandSpec, run: Command["run"]): Command {
  return { name: spec.name, summary: spec.summary, run };
}

/** Every subcommand, in help order. */
export const COMMANDS: readonly Command[] = [
  { name: "serve", summary: SERVE_SUMMARY, run: runServe },
  entry(INIT_COMMAND, runInit),
  entry(MINT_COMMAND, runMint),
  entry(INSPECT_COMMAND, runInspect),
  entry(EXPIRY_COMMAND, runExpiry),
  entry(RENEW_COMMAND, runRenew),
  entry(REQUEST_COMMAND, runRequest),
];

/** `sentry --help` without a subcommand. */
export function topLevelHelp(): string {
  const width = Math.max(...COMMANDS.map((command) => command.name.length));
  return `sentry ${VERSION}: a certificate authority for Dapr's mutual TLS

Usage:
  sentry [serve] [flags]     run the CA server (Dapr's flags; 'sentry serve --help')
  sentry COMMAND [flags]     one of the commands below ('sentry COMMAND --help')
  sentry --version

Commands:
${COMMANDS.map((command) => `  ${command.name.padEnd(width)}  ${command.summary}`).join("\n")}

${serveFlagsHelp()}`;
}
