/**
 * Go's `time.ParseDuration` syntax, which Dapr's Configuration uses for `workloadCertTTL` and
 * `allowedClockSkew`: `300ms`, `1.5h`, `2h45m`, `-1m`; units ns, us/µs/μs, ms, s, m, h.
 * Durations are returned in milliseconds (fractions allowed for sub-millisecond values).
 *
 * @module
 */

/** A string that is not a Go duration. */
export class DurationError extends Error {
  override name = "DurationError";
}

const UNIT_MS: Record<string, number> = {
  ns: 1e-6,
  us: 1e-3,
  "µs": 1e-3, // U+00B5 micro sign
  "μs": 1e-3, // U+03BC Greek mu
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
};

/** Go's limit: durations are int64 nanoseconds. */
const MAX_MS = 9_223_372_036_854.775;

/** Extra units accepted where a command documents them (for example `d` in CLI TTL flags). */
export type ExtraUnits = Record<string, number>;

/**
 * Parses a Go duration string into milliseconds. `extraUnits` adds units beyond Go's (such as
 * `{ d: 86_400_000 }`); the Configuration never passes any, so Dapr's syntax stays exact.
 */
export function parseDuration(text: string, extraUnits: ExtraUnits = {}): number {
  const invalid = () => new DurationError(`invalid duration ${JSON.stringify(text)}`);
  let rest = text;
  let sign = 1;
  if (rest.startsWith("-") || rest.startsWith("+")) {
    sign = rest[0] === "-" ? -1 : 1;
    rest = rest.slice(1);
  }
  if (rest === "0") return 0;
  if (rest === "") throw invalid();
  let total = 0;
  while (rest !== "") {
    const match = /^(\d*)(?:\.(\d*))?([^\d.]+)/.exec(rest);
    if (!match || (match[1] === "" && (match[2] ?? "") === "")) throw invalid();
    const unit = match[3];
    const scale = Object.hasOwn(UNIT_MS, unit)
      ? UNIT_MS[unit]
      : Object.hasOwn(extraUnits, unit)
      ? extraUnits[unit]
      : undefined;
    if (scale === undefined) {
      throw new DurationError(
        `invalid duration ${JSON.stringify(text)}: unknown unit ${JSON.stringify(unit)} ` +
          `(use ns, us, ms, s, m, h${Object.keys(extraUnits).map((u) => ", " + u).join("")})`,
      );
    }
    total += Number(`${match[1] || "0"}.${match[2] || "0"}`) * scale;
    rest = rest.slice(match[0].length);
  }
  if (total > MAX_MS) throw new DurationError(`invalid duration ${JSON.stringify(text)}: overflow`);
  return sign * total;
}

/** Formats milliseconds the way Go prints durations (`24h0m0s`, `1m30s`, `500ms`). */
export function formatDuration(ms: number): string {
  if (ms === 0) return "0s";
  const sign = ms < 0 ? "-" : "";
  let rest = Math.abs(ms);
  if (rest < 1000) return `${sign}${+rest.toFixed(6)}ms`;
  const hours = Math.floor(rest / 3_600_000);
  rest -= hours * 3_600_000;
  const minutes = Math.floor(rest / 60_000);
  rest -= minutes * 60_000;
  const seconds = +(rest / 1000).toFixed(9);
  if (hours > 0) return `${sign}${hours}h${minutes}m${seconds}s`;
  if (minutes > 0) return `${sign}${minutes}m${seconds}s`;
  return `${sign}${seconds}s`;
}

/** What a duration setting may hold. */
export interface DurationSettingRules {
  /** Whether "0" is allowed. */
  allowZero: boolean;
  /** An example shown when the value is not a string, e.g. "24h". */
  example: string;
}

/**
 * Reads an optional duration setting from a document (YAML/JSON value): undefined when absent
 * or empty, milliseconds when valid, otherwise a DurationError whose message describes the
 * value (callers prefix the setting's name).
 */
export function durationSetting(value: unknown, rules: DurationSettingRules): number | undefined {
  if (value === undefined || value === null || value === "") return undefined;
  if (typeof value !== "string") {
    throw new DurationError(
      `must be a duration string such as "${rules.example}", got ${JSON.stringify(value)}`,
    );
  }
  const ms = parseDuration(value);
  if (ms < 0 || (ms === 0 && !rules.allowZero)) {
    throw new DurationError(
      `must be ${rules.allowZero ? "zero or positive" : "positive"}, got ${JSON.stringify(value)}`,
    );
  }
  return ms;
}
