/**
 * Type guards for data parsed from outside (JSON, YAML, API answers).
 *
 * @module
 */

/**
 * True for a plain mapping (not null, not a list).
 *
 * @example
 * ```ts
 * isRecord({ a: 1 }); // true
 * isRecord([1]); // false
 * ```
 */
export function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
