/**
 * Reads a running sentry's Prometheus metrics.
 *
 * @module
 */
import assert from "node:assert/strict";

/** The /metrics text of the server on `port`. */
export async function metricsText(port: number): Promise<string> {
  const response = await fetch(`http://127.0.0.1:${port}/metrics`);
  assert.equal(response.status, 200);
  return await response.text();
}

/** The value of the first sample of `name` in `text` (fails if absent). */
export function metric(text: string, name: string): number {
  const line = text.split("\n").find((l) => l.startsWith(name + " ") || l.startsWith(name + "{"));
  assert.ok(line, `metric ${name} missing`);
  return Number(line.split(" ").pop());
}
