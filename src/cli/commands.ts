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
import { ROTATE_COMMAND, runRotate } from "./rotate.ts";
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
  entry(ROTATE_COMMAND, runRotate),
  entry(REQUEST_COMMAND, runRequest),
];

/** Edit distance of two short strings (insert, delete, replace, swap two neighbours). */
function editDistance(a: string, b: string): number {
  const d = Array.from({ length: a.length + 1 }, (_, i) => [i]);
  for (let j = 1; j <= b.length; j++) d[0][j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      d[i][j] = Math.min(
        d[i - 1][j] + 1,
        d[i][j - 1] + 1,
        d[i - 1][j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1),
      );
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) {
        d[i][j] = Math.min(d[i][j], d[i - 2][j - 2] + 1);
      }
    }
  }
  return d[a.length][b.length];
}

/** The command a mistyped name most likely meant (edit distance at most 2), if any. */
export function suggestCommand(name: string): string | undefined {
  let best: { name: string; distance: number } | undefined;
  for (const command of COMMANDS) {
    const distance = editDistance(name.toLowerCase(), command.name);
    if (distance <= 2 && (best === undefined || distance < best.distance)) {
      best = { name: command.name, distance };
    }
  }
  return best?.name;
}

/** The message for an unknown command: a 'did you mean' when one is close, else the help. */
export function unknownCommandMessage(name: string): string {
  const suggestion = suggestCommand(name);
  if (suggestion !== undefined) {
    return `sentry: unknown command ${JSON.stringify(name)}; did you mean '${suggestion}'?\n` +
      `Run 'sentry --help' for the commands.\n`;
  }
  return `sentry: unknown command ${JSON.stringify(name)}\n${topLevelHelp()}`;
}

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
