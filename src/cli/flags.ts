/**
 * Command-line flags with Go's `flag` package semantics, which Dapr's binaries use: long
 * names with one or two dashes (`-port=1`, `--port 1`), booleans as `-flag` or
 * `-flag=false`, parsing stops at the first non-flag argument or at `--`.
 * node:util parseArgs cannot read single-dash long names, hence this small parser.
 * Duration flags are strings read with {@link durationFlag} (Go's syntax: `20s`, `1m30s`).
 *
 * @module
 */

import { type ExtraUnits, parseDuration } from "../util/duration.ts";

/** The kinds of value a flag takes. */
export type FlagType = "string" | "int" | "bool" | "list";

/** A flag's value. */
export type FlagValue = string | number | boolean | string[];

/** One flag's definition. */
export interface FlagSpec {
  name: string;
  type: FlagType;
  /** The value when not given; a function is called only when flags are parsed or listed. */
  default: FlagValue | (() => FlagValue);
  help: string;
  /** Allowed values, checked after parsing (strings only). */
  choices?: readonly string[];
}

/** Parsed values by flag name, plus what came after the flags. */
export interface ParsedFlags {
  values: Record<string, FlagValue>;
  /** Names of flags given explicitly on the command line. */
  given: Set<string>;
  positionals: string[];
}

/** Bad command-line usage (exit code 2). */
export class UsageError extends Error {
  override name = "UsageError";
}

function parseBool(name: string, raw: string): boolean {
  if (["1", "t", "T", "true", "TRUE", "True"].includes(raw)) return true;
  if (["0", "f", "F", "false", "FALSE", "False"].includes(raw)) return false;
  throw new UsageError(`invalid boolean value ${JSON.stringify(raw)} for flag -${name}`);
}

/** The default of `spec`, computed when it is a function. */
function defaultOf(spec: FlagSpec): FlagValue {
  return typeof spec.default === "function" ? spec.default() : spec.default;
}

function convert(spec: FlagSpec, raw: string): FlagValue {
  if (spec.type === "bool") return parseBool(spec.name, raw);
  if (spec.type === "int") {
    if (!/^-?\d+$/.test(raw)) {
      throw new UsageError(
        `invalid value ${JSON.stringify(raw)} for flag -${spec.name}: not an integer`,
      );
    }
    return Number(raw);
  }
  if (spec.choices && !spec.choices.includes(raw)) {
    throw new UsageError(
      `invalid value ${JSON.stringify(raw)} for flag -${spec.name}: use one of ${
        spec.choices.join(", ")
      }`,
    );
  }
  return raw;
}

/** Parsing options. */
export interface ParseOptions {
  /**
   * Allow positional arguments between flags (`inspect cert.pem --json`), as subcommands do;
   * Dapr's server flags stop at the first positional, like Go's flag package.
   */
  interspersed?: boolean;
}

/**
 * Parses `argv` against `specs`; throws {@link UsageError} on unknown flags or bad values.
 * A `list` flag may be repeated and takes comma-separated values.
 */
export function parseFlags(
  specs: readonly FlagSpec[],
  argv: readonly string[],
  options: ParseOptions = {},
): ParsedFlags {
  const byName = new Map(specs.map((spec) => [spec.name, spec]));
  const values: ParsedFlags["values"] = {};
  for (const spec of specs) {
    const value = defaultOf(spec);
    values[spec.name] = Array.isArray(value) ? [...value] : value;
  }
  const given = new Set<string>();
  const positionals: string[] = [];
  let i = 0;
  for (; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === "--") {
      i++;
      break;
    }
    if (!arg.startsWith("-") || arg === "-") {
      if (!options.interspersed) break;
      positionals.push(arg);
      continue;
    }
    const body = arg.replace(/^--?/, "");
    const eq = body.indexOf("=");
    const name = eq === -1 ? body : body.slice(0, eq);
    const spec = byName.get(name);
    if (!spec) throw new UsageError(`flag provided but not defined: -${name}`);
    let raw: string;
    if (eq !== -1) {
      raw = body.slice(eq + 1);
    } else if (spec.type === "bool") {
      raw = "true";
    } else {
      if (i + 1 >= argv.length) throw new UsageError(`flag needs an argument: -${name}`);
      raw = argv[++i];
    }
    if (spec.type === "list") {
      const previous = given.has(name) ? values[name] as string[] : [];
      values[name] = [...previous, ...raw.split(",").map((v) => v.trim()).filter((v) => v !== "")];
    } else {
      values[name] = convert(spec, raw);
    }
    given.add(name);
  }
  return { values, given, positionals: [...positionals, ...argv.slice(i)] };
}

/** Formats a help text listing every flag with its default, in Go's style. */
export function formatFlagHelp(specs: readonly FlagSpec[]): string {
  return specs.map((spec) => {
    const kind = spec.type === "bool"
      ? ""
      : spec.type === "list"
      ? " value[,value]"
      : ` ${spec.type}`;
    const value = defaultOf(spec);
    const shown = spec.type === "string" ? JSON.stringify(value) : String(value);
    const empty = value === "" || value === false || (Array.isArray(value) && value.length === 0);
    const fallback = empty ? "" : ` (default ${shown})`;
    return `  --${spec.name}${kind}\n        ${spec.help}${fallback}`;
  }).join("\n");
}

/** What {@link durationFlag} accepts besides positive durations. */
export interface DurationFlagOptions {
  /** Whether `0` is allowed (for example "0: no limit"). */
  allowZero?: boolean;
  /** Units beyond Go's that the flag documents, such as `{ d: 86_400_000 }`. */
  extraUnits?: ExtraUnits;
}

/**
 * The value of duration flag `--name` in milliseconds, in Go's syntax (`300ms`, `20s`, `1h30m`):
 * a {@link UsageError} naming the flag when `value` is not a duration, is negative, or is zero
 * without {@link DurationFlagOptions.allowZero}.
 *
 * @example
 * ```ts
 * durationFlag("handshake-timeout", "20s"); // 20000
 * ```
 */
export function durationFlag(
  name: string,
  value: string,
  options: DurationFlagOptions = {},
): number {
  let ms: number;
  try {
    ms = parseDuration(value, options.extraUnits);
  } catch (error) {
    throw new UsageError(`--${name}: ${(error as Error).message}`, { cause: error });
  }
  if (ms < 0 || (ms === 0 && !options.allowZero)) {
    throw new UsageError(
      `--${name} must be ${options.allowZero ? "0 or more" : "positive"}, got ${
        JSON.stringify(value)
      }`,
    );
  }
  return ms;
}
