/**
 * parseDuration must accept exactly Go's `time.ParseDuration` syntax (what Dapr's Configuration
 * uses for workloadCertTTL and allowedClockSkew), and formatDuration must print like Go.
 */
import assert from "node:assert/strict";
import { DurationError, formatDuration, parseDuration } from "../../src/util/duration.ts";

const HOUR = 3_600_000;
const MINUTE = 60_000;
const SECOND = 1000;

Deno.test("parseDuration accepts Go's duration syntax", async (t) => {
  const cases: Array<[string, number]> = [
    ["300ms", 300],
    ["1.5h", 1.5 * HOUR],
    ["2h45m", 2 * HOUR + 45 * MINUTE],
    ["25s", 25 * SECOND],
    ["-1m", -MINUTE],
    ["+5s", 5 * SECOND],
    ["0", 0],
    ["-0", 0],
    ["0s", 0],
    ["1.h", HOUR],
    [".5h", 0.5 * HOUR],
    ["1h0m0s", HOUR],
    ["24h", 24 * HOUR],
    ["15m", 15 * MINUTE],
    ["1m30s", 90 * SECOND],
    ["1.5s", 1500],
    ["100ms", 100],
    ["1h1m1s1ms", HOUR + MINUTE + SECOND + 1],
    ["2562047h", 2562047 * HOUR], // the largest whole number of hours in an int64 of nanoseconds
  ];
  for (const [text, expected] of cases) {
    await t.step(JSON.stringify(text), () => {
      assert.equal(parseDuration(text), expected);
    });
  }
});

Deno.test("parseDuration knows the sub-millisecond units ns, us, µs (U+00B5) and μs (U+03BC)", () => {
  assert.equal(parseDuration("1ns"), 1e-6);
  assert.equal(parseDuration("1us"), 1e-3);
  assert.equal(parseDuration("1\u00b5s"), 1e-3);
  assert.equal(parseDuration("1\u03bcs"), 1e-3);
  assert.equal(parseDuration("1µs"), parseDuration("1us"));
  assert.equal(parseDuration("1μs"), parseDuration("1us"));
  assert.equal(parseDuration("1500us"), 1.5);
  assert.equal(parseDuration("1000000ns"), 1);
});

Deno.test("parseDuration rejects what Go rejects", async (t) => {
  const rejected = [
    "", // empty
    "1", // missing unit
    "h", // missing number
    "1d", // no d unit in Go
    "1h2", // trailing number without unit
    ".", // no digits
    ".s",
    "-",
    "+",
    "-.s",
    "1.2.3s",
    "1H", // units are case-sensitive
    "1 h",
    " 1h",
    "1h ",
    "1hh",
    "1w",
    "1y",
    "abc",
    "9999999999999h", // overflows int64 nanoseconds
    "2562048h", // just past the int64 limit
  ];
  for (const text of rejected) {
    await t.step(JSON.stringify(text), () => {
      assert.throws(() => parseDuration(text), DurationError);
    });
  }
});

Deno.test("parseDuration messages quote the input; an unknown unit is named", () => {
  assert.throws(() => parseDuration("1d"), (error: Error) => {
    assert.ok(error instanceof DurationError);
    assert.match(error.message, /"1d"/);
    assert.match(error.message, /unknown unit "d"/);
    return true;
  });
  assert.throws(() => parseDuration("9999999999999h"), /overflow/);
  assert.throws(() => parseDuration("1h2"), /invalid duration "1h2"/);
});

Deno.test({
  name: "parseDuration treats names of Object.prototype members as unknown units",
  fn() {
    for (const text of ["1constructor", "1toString", "1__proto__", "1valueOf", "1hasOwnProperty"]) {
      assert.throws(() => parseDuration(text), DurationError, text);
    }
  },
});

Deno.test("extraUnits adds units only where given", () => {
  const extra = { d: 86_400_000 };
  assert.equal(parseDuration("2d", extra), 2 * 86_400_000);
  assert.equal(parseDuration("1d12h", extra), 36 * HOUR);
  assert.equal(parseDuration("1.5d", extra), 36 * HOUR);
  assert.equal(parseDuration("-1d", extra), -86_400_000);
  assert.equal(parseDuration("90m", extra), 90 * MINUTE);
  assert.throws(() => parseDuration("2d"), DurationError);
  assert.throws(() => parseDuration("2w", extra), /unknown unit "w".*d\)/);
});

Deno.test("formatDuration prints like Go's Duration.String", async (t) => {
  const cases: Array<[number, string]> = [
    [24 * HOUR, "24h0m0s"],
    [90 * SECOND, "1m30s"],
    [500, "500ms"],
    [0, "0s"],
    [SECOND, "1s"],
    [1500, "1.5s"],
    [HOUR + 2 * MINUTE + 3 * SECOND, "1h2m3s"],
    [15 * MINUTE, "15m0s"],
    [-90 * SECOND, "-1m30s"],
    [2 * HOUR + 45 * MINUTE, "2h45m0s"],
  ];
  for (const [ms, expected] of cases) {
    await t.step(expected, () => {
      assert.equal(formatDuration(ms), expected);
    });
  }
});

Deno.test("formatDuration output parses back to the same duration", () => {
  for (const ms of [0, 1, 999, 1000, 1500, 61_000, HOUR, 36 * HOUR + 1, 90 * MINUTE + 250]) {
    assert.equal(parseDuration(formatDuration(ms)), ms, `${ms} -> ${formatDuration(ms)}`);
  }
});
