/**
 * A logger for unit tests that keeps the messages it is given, so a test can check what was
 * logged (a warning once, nothing at all, ...).
 *
 * @module
 */
import { Logger, type LogLevel } from "../../src/observability/logger.ts";

/** A JSON logger at `level` whose messages (the `msg` of each line) land in `messages`. */
export function captureLog(level: LogLevel = "debug"): { logger: Logger; messages: string[] } {
  const messages: string[] = [];
  const logger = new Logger({
    level,
    json: true,
    scope: "test",
    version: "0",
    sink: (line) => messages.push(JSON.parse(line).msg),
  });
  return { logger, messages };
}
