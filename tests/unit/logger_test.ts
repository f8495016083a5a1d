/**
 * The logger's line formats: control characters (C0, DEL, C1), Unicode bidirectional
 * overrides and isolates, and line/paragraph separators in messages and field values are
 * written as escapes, in text and JSON lines alike, so a hostile app id or token cannot forge
 * or visually reorder log lines.
 */
import assert from "node:assert/strict";
import { Logger } from "../../src/observability/logger.ts";

function capture(json: boolean): { logger: Logger; lines: string[] } {
  const lines: string[] = [];
  const logger = new Logger({
    level: "debug",
    json,
    scope: "dapr.sentry",
    version: "test",
    sink: (line) => lines.push(line),
  });
  return { logger, lines };
}

/** Characters that must never reach a log line raw. */
const HOSTILE = [
  "\n",
  "\r",
  "\x1b",
  "\x7f",
  "\x85",
  "\x9b",
  "\u061c",
  "\u200e",
  "\u200f",
  "\u2028",
  "\u2029",
  "\u202a",
  "\u202b",
  "\u202c",
  "\u202d",
  "\u202e",
  "\u2066",
  "\u2067",
  "\u2068",
  "\u2069",
];

function escaped(char: string): string {
  return "\\u" + char.charCodeAt(0).toString(16).padStart(4, "0");
}

Deno.test("text lines: controls and bidi characters in messages and fields are escaped", () => {
  const { logger, lines } = capture(false);
  for (const char of HOSTILE) {
    logger.info(`app my${char}app refused`, { appId: `my${char}app`, n: 1 });
  }
  assert.equal(lines.length, HOSTILE.length);
  for (const [index, line] of lines.entries()) {
    const char = HOSTILE[index];
    for (const bad of HOSTILE) assert.ok(!line.includes(bad), `raw ${escaped(bad)} in ${line}`);
    assert.ok(/^[\x20-\x7e]*$/.test(line), `non-printable in ${JSON.stringify(line)}`);
    if (char !== "\n" && char !== "\r") {
      assert.ok(line.includes(`my${escaped(char)}app`), line);
    }
  }
  // An ordinary line is unchanged.
  logger.info("plain message", { appId: "myapp" });
  assert.match(lines.at(-1)!, / msg="plain message" appId=myapp /);
});

Deno.test("JSON lines: bidi characters are escaped too, and the line still parses", () => {
  const { logger, lines } = capture(true);
  for (const char of HOSTILE) {
    logger.warn(`token for my${char}app`, { appId: `my${char}app` });
  }
  for (const [index, line] of lines.entries()) {
    const char = HOSTILE[index];
    assert.ok(/^[\x20-\x7e]*$/.test(line), `non-printable in ${JSON.stringify(line)}`);
    const parsed = JSON.parse(line);
    assert.equal(parsed.msg, `token for my${char}app`);
    assert.equal(parsed.appId, `my${char}app`);
    assert.equal(parsed.level, "warning");
  }
});

Deno.test("other non-ASCII text is kept as it is", () => {
  for (const json of [false, true]) {
    const { logger, lines } = capture(json);
    logger.info("clé für 日本", { who: "Zoë" });
    assert.ok(lines[0].includes("clé für 日本"), lines[0]);
    assert.ok(lines[0].includes("Zoë"), lines[0]);
  }
});
