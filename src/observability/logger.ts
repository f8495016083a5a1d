/**
 * Logging in Dapr's formats: logrus-style text lines by default, or one JSON object per line
 * (`--log-as-json`) with `time`, `level`, `msg`, `scope`, `type`, `instance` and `ver`; to
 * stdout like Dapr's logger unless told otherwise. Level names are the `--log-level` values,
 * except that warnings are written `warning`, as logrus names them (log queries and alerts
 * written for Dapr match). Control and bidirectional-override characters in messages and
 * fields are written as `\uXXXX` escapes in both formats, so that no logged value (an app id,
 * a token) can forge or visually reorder a line.
 *
 * @module
 */
import { closeSync, openSync, writeSync } from "node:fs";
import { hostname } from "node:os";
import process from "node:process";

/** Log levels, least to most severe. */
export const LOG_LEVELS = ["debug", "info", "warn", "error", "fatal"] as const;
/** One of {@link LOG_LEVELS}. */
export type LogLevel = typeof LOG_LEVELS[number];

/** Where log lines go (stdout by default; `--log-file` and tests pass their own). */
export type LogSink = (line: string) => void;

/** Logger options. */
export interface LoggerOptions {
  level: LogLevel;
  json: boolean;
  scope: string;
  version: string;
  sink?: LogSink;
}

/** The level names written in log lines (logrus's names). */
const WRITTEN_LEVEL: Record<LogLevel, string> = {
  debug: "debug",
  info: "info",
  warn: "warning",
  error: "error",
  fatal: "fatal",
};

/** The {@link LogLevel} a `--log-level` value names, in any letter case (as Dapr). */
export function parseLogLevel(value: string): LogLevel | undefined {
  const level = value.toLowerCase();
  if (level === "warning") return "warn";
  return (LOG_LEVELS as readonly string[]).includes(level) ? level as LogLevel : undefined;
}

/**
 * A sink appending to the file at `path` (created with mode 0644, as Dapr's `--log-file`),
 * one synchronous write per line so that nothing is lost at exit. A failed write (a full disk)
 * is reported once on stderr and never stops the server. Throws when the file cannot be opened.
 */
export function fileLogSink(path: string): LogSink & { close(): void } {
  const fd = openSync(path, "a", 0o644);
  let failed = false;
  const sink = (line: string) => {
    try {
      writeSync(fd, line + "\n");
      failed = false;
    } catch (error) {
      if (failed) return;
      failed = true;
      process.stderr.write(
        `sentry: cannot write to --log-file ${path}: ${(error as Error).message}\n`,
      );
    }
  };
  return Object.assign(sink, { close: () => closeSync(fd) });
}

/**
 * Characters that could forge or visually reorder a log line: C0 controls, DEL, C1 controls,
 * the Unicode bidirectional marks, embeddings, overrides and isolates (U+061C, U+200E/F,
 * U+202A-U+202E, U+2066-U+2069) and the line and paragraph separators (U+2028/9).
 */
const UNSAFE =
  // deno-lint-ignore no-control-regex -- matching the control characters is the point
  /[\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g;

/**
 * Writes every {@link UNSAFE} character of a finished line as a `\uXXXX` escape. Lines are
 * built so that such characters can only stand inside JSON-quoted strings (text lines quote
 * any value outside a plain ASCII set; JSON lines are JSON), where the escape reads back as
 * the character: the line stays valid and a hostile app id or token cannot spoof another.
 */
function escapeUnsafe(line: string): string {
  return line.replace(UNSAFE, (char) => "\\u" + char.charCodeAt(0).toString(16).padStart(4, "0"));
}

function quoteIfNeeded(value: string): string {
  return /^[A-Za-z0-9._\-/:@+]+$/.test(value) ? value : JSON.stringify(value);
}

/** A scoped logger; cheap to call below its level. */
export class Logger {
  readonly #minimum: number;
  readonly #instance = hostname();
  readonly #sink: LogSink;

  /** Creates a logger writing to `options.sink` or stdout. */
  constructor(readonly options: LoggerOptions) {
    this.#minimum = LOG_LEVELS.indexOf(options.level);
    this.#sink = options.sink ?? ((line) => process.stdout.write(line + "\n"));
  }

  /** True when messages at `level` are written. */
  enabled(level: LogLevel): boolean {
    return LOG_LEVELS.indexOf(level) >= this.#minimum;
  }

  /** Writes one message at `level` with optional extra fields. */
  log(level: LogLevel, msg: string, fields: Record<string, string | number> = {}): void {
    if (!this.enabled(level)) return;
    const time = new Date().toISOString();
    const written = WRITTEN_LEVEL[level];
    const { scope, version } = this.options;
    if (this.options.json) {
      this.#sink(escapeUnsafe(JSON.stringify({
        instance: this.#instance,
        level: written,
        msg,
        scope,
        time,
        type: "log",
        ver: version,
        ...fields,
      })));
      return;
    }
    const extra = Object.entries(fields).map(([k, v]) => ` ${k}=${quoteIfNeeded(String(v))}`);
    this.#sink(escapeUnsafe(
      `time="${time}" level=${written} msg=${JSON.stringify(msg)}${extra.join("")} ` +
        `instance=${quoteIfNeeded(this.#instance)} scope=${scope} type=log ver=${version}`,
    ));
  }

  /** Debug-level message. */
  debug(msg: string, fields?: Record<string, string | number>): void {
    this.log("debug", msg, fields);
  }
  /** Info-level message. */
  info(msg: string, fields?: Record<string, string | number>): void {
    this.log("info", msg, fields);
  }
  /** Warning. */
  warn(msg: string, fields?: Record<string, string | number>): void {
    this.log("warn", msg, fields);
  }
  /** Error. */
  error(msg: string, fields?: Record<string, string | number>): void {
    this.log("error", msg, fields);
  }
}
