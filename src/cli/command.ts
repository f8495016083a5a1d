/**
 * What every subcommand shares: its I/O (replaceable in tests), exit codes (0 success,
 * 1 a failed check, 2 bad usage), `--help`, and the mapping of errors to those codes.
 *
 * @module
 */
import {
  durationFlag,
  type FlagSpec,
  formatFlagHelp,
  type ParsedFlags,
  parseFlags,
  UsageError,
} from "./flags.ts";

/** Process hooks of a command. */
export interface CommandIO {
  env: Record<string, string | undefined>;
  now: () => Date;
  stdout: (text: string) => void;
  stderr: (text: string) => void;
  /** Reads all of standard input (for `-` file arguments). */
  readStdin: () => Promise<Uint8Array>;
}

/** Exit codes of every command. */
export const Exit = { OK: 0, FAILED: 1, USAGE: 2 } as const;

/** A check the user asked for did not pass (exit code 1, message on stderr). */
export class CheckFailed extends Error {
  override name = "CheckFailed";
}

/** A subcommand's description. */
export interface CommandSpec {
  name: string;
  /** One line for `sentry --help`. */
  summary: string;
  /** Usage lines and explanation for `sentry NAME --help` (flags are appended). */
  usage: string;
  flags: readonly FlagSpec[];
  /** How many positional arguments the command takes at most (default none). */
  positionals?: number;
}

const HELP_FLAG: FlagSpec = { name: "help", type: "bool", default: false, help: "Show this help" };

/** The `--help` text of a command. */
export function commandHelp(spec: CommandSpec): string {
  return `${spec.usage.trim()}\n\nFlags:\n${formatFlagHelp([...spec.flags, HELP_FLAG])}\n`;
}

/**
 * Parses flags (positionals allowed anywhere), handles `--help`, runs `body`, and turns errors
 * into exit codes: UsageError -> 2, anything else -> 1, each with one line on stderr.
 */
export async function runCommand(
  spec: CommandSpec,
  argv: readonly string[],
  io: CommandIO,
  body: (parsed: ParsedFlags) => Promise<number>,
): Promise<number> {
  let parsed: ParsedFlags;
  try {
    parsed = parseFlags([...spec.flags, HELP_FLAG], argv, { interspersed: true });
  } catch (error) {
    io.stderr(
      `sentry ${spec.name}: ${
        (error as Error).message
      }\nRun 'sentry ${spec.name} --help' for usage.\n`,
    );
    return Exit.USAGE;
  }
  if (parsed.values.help) {
    io.stdout(commandHelp(spec));
    return Exit.OK;
  }
  const extra = parsed.positionals[spec.positionals ?? 0];
  if (extra !== undefined) {
    io.stderr(
      `sentry ${spec.name}: unexpected argument ${
        JSON.stringify(extra)
      }\nRun 'sentry ${spec.name} --help' for usage.\n`,
    );
    return Exit.USAGE;
  }
  try {
    return await body(parsed);
  } catch (error) {
    if (error instanceof UsageError) {
      io.stderr(
        `sentry ${spec.name}: ${error.message}\nRun 'sentry ${spec.name} --help' for usage.\n`,
      );
      return Exit.USAGE;
    }
    io.stderr(`sentry ${spec.name}: ${(error as Error).message}\n`);
    return Exit.FAILED;
  }
}

/** Typed accessors for parsed flag values. */
export function flagValues(parsed: ParsedFlags) {
  return {
    string: (name: string) => parsed.values[name] as string,
    int: (name: string) => parsed.values[name] as number,
    bool: (name: string) => parsed.values[name] as boolean,
    list: (name: string) => parsed.values[name] as string[],
    given: (name: string) => parsed.given.has(name),
  };
}

/** Days as a duration unit, accepted by the commands' TTL flags (not by the Configuration). */
export const DAY_UNIT = { d: 86_400_000 };

/** Parses a positive TTL flag value (Go duration or `Nd`); UsageError naming the flag otherwise. */
export function ttlFlag(name: string, value: string): number {
  return durationFlag(name, value, { extraUnits: DAY_UNIT });
}
