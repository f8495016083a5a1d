/**
 * Logging in Dapr's formats: logrus-style text lines by default, or one JSON object per line
 * (`--log-as-json`) with `time`, `level`, `msg`, `scope`, `type`, `instance` and `ver`.
 *
 * @module
 */
import { hostname } from "node:os";
import process from "node:process";

/** Log levels, least to most severe. */
export const LOG_LEVELS = ["debug", "info", "warn", "error", "fatal"] as const;
/** One of {@link LOG_LEVELS}. */
export type LogLevel = typeof LOG_LEVELS[number];

/** Where log lines go (stderr by default; tests pass their own). */
export type LogSink = (line: string) => void;

/** Logger options. */
export interface LoggerOptions {
  level: LogLevel;
  json: boolean;
  scope: string;
  version: string;
  sink?: LogSink;
}

function quoteIfNeeded(value: string): string {
  return /^[A-Za-z0-9._\-/:@+]+$/.test(value) ? value : JSON.stringify(value);
}

/** A scoped logger; cheap to call below its level. */
export class Logger {
  readonly #minimum: number;
  readonly #instance = hostname();
  readonly #sink: LogSink;

  /** Creates a logger writing to `options.sink` or stderr. */
  constructor(readonly options: LoggerOptions) {
    this.#minimum = LOG_LEVELS.indexOf(options.level);
    this.#sink = options.sink ?? ((line) => process.stderr.write(line + "\n"));
  }

  /** True when messages at `level` are written. */
  enabled(level: LogLevel): boolean {
    return LOG_LEVELS.indexOf(level) >= this.#minimum;
  }

  /** Writes one message at `level` with optional extra fields. */
  log(level: LogLevel, msg: string, fields: Record<string, string | number> = {}): void {
    if (!this.enabled(level)) return;
    const time = new Date().toISOString();
    const { scope, version } = this.options;
    if (this.options.json) {
      this.#sink(JSON.stringify({
        instance: this.#instance,
        level,
        msg,
        scope,
        time,
        type: "log",
        ver: version,
        ...fields,
      }));
      return;
    }
    const extra = Object.entries(fields).map(([k, v]) => ` ${k}=${quoteIfNeeded(String(v))}`);
    this.#sink(
      `time="${time}" level=${level} msg=${JSON.stringify(msg)}${extra.join("")} ` +
        `instance=${quoteIfNeeded(this.#instance)} scope=${scope} type=log ver=${version}`,
    );
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
