/**
 * parseFlags follows Go's `flag` package, which Dapr's sentry binary uses: one or two dashes,
 * `-name=value` or `-name value`, bare booleans, parsing stops at the first non-flag or `--`.
 */
import assert from "node:assert/strict";
import { type FlagSpec, formatFlagHelp, parseFlags, UsageError } from "../../src/cli/flags.ts";

const SPECS: readonly FlagSpec[] = [
  { name: "port", type: "int", default: 50001, help: "gRPC port of the CA service" },
  { name: "trust-domain", type: "string", default: "localhost", help: "Trust domain" },
  { name: "config", type: "string", default: "", help: "Path to the Configuration" },
  { name: "log-as-json", type: "bool", default: false, help: "Log one JSON object per line" },
  { name: "enable-metrics", type: "bool", default: true, help: "Serve Prometheus metrics" },
  {
    name: "mode",
    type: "string",
    default: "standalone",
    help: "Operating mode",
    choices: ["standalone", "kubernetes"],
  },
];

function usageError(pattern: RegExp) {
  return (error: Error) => {
    assert.ok(error instanceof UsageError, `not a UsageError: ${error}`);
    assert.match(error.message, pattern);
    return true;
  };
}

Deno.test("defaults apply when no flags are given", () => {
  const parsed = parseFlags(SPECS, []);
  assert.deepEqual(parsed.values, {
    port: 50001,
    "trust-domain": "localhost",
    config: "",
    "log-as-json": false,
    "enable-metrics": true,
    mode: "standalone",
  });
  assert.equal(parsed.given.size, 0);
  assert.deepEqual(parsed.positionals, []);
});

Deno.test("one or two dashes, with = or a separate value", async (t) => {
  const forms = [
    ["-port=1"],
    ["--port=1"],
    ["-port", "1"],
    ["--port", "1"],
  ];
  for (const argv of forms) {
    await t.step(argv.join(" "), () => {
      const parsed = parseFlags(SPECS, argv);
      assert.equal(parsed.values.port, 1);
      assert.deepEqual([...parsed.given], ["port"]);
      assert.deepEqual(parsed.positionals, []);
    });
  }
});

Deno.test("values are converted to the flag's type", () => {
  const parsed = parseFlags(SPECS, [
    "--port",
    "-5",
    "-trust-domain=cluster.local",
    "--config=/etc/dapr/config.yaml",
  ]);
  assert.equal(parsed.values.port, -5); // a non-bool flag takes the next argument as is
  assert.equal(typeof parsed.values.port, "number");
  assert.equal(parsed.values["trust-domain"], "cluster.local");
  assert.equal(parsed.values.config, "/etc/dapr/config.yaml");
});

Deno.test("string values may contain '=' and may be empty", () => {
  assert.equal(parseFlags(SPECS, ["-config=a=b"]).values.config, "a=b");
  assert.equal(parseFlags(SPECS, ["-trust-domain="]).values["trust-domain"], "");
  assert.equal(parseFlags(SPECS, ["-trust-domain", ""]).values["trust-domain"], "");
});

Deno.test("booleans: bare means true, =value sets it, a separate word is not a value", () => {
  assert.equal(parseFlags(SPECS, ["-log-as-json"]).values["log-as-json"], true);
  assert.equal(parseFlags(SPECS, ["--log-as-json"]).values["log-as-json"], true);
  assert.equal(parseFlags(SPECS, ["--enable-metrics=false"]).values["enable-metrics"], false);
  assert.equal(parseFlags(SPECS, ["-enable-metrics=0"]).values["enable-metrics"], false);
  for (const raw of ["1", "t", "T", "true", "TRUE", "True"]) {
    assert.equal(parseFlags(SPECS, [`-log-as-json=${raw}`]).values["log-as-json"], true, raw);
  }
  for (const raw of ["0", "f", "F", "false", "FALSE", "False"]) {
    assert.equal(parseFlags(SPECS, [`-enable-metrics=${raw}`]).values["enable-metrics"], false);
  }
  // Go: `-enable-metrics false` sets true and stops at the positional "false".
  const parsed = parseFlags(SPECS, ["-enable-metrics", "false", "-port=1"]);
  assert.equal(parsed.values["enable-metrics"], true);
  assert.equal(parsed.values.port, 50001);
  assert.deepEqual(parsed.positionals, ["false", "-port=1"]);
});

Deno.test("the last occurrence of a flag wins", () => {
  const parsed = parseFlags(SPECS, [
    "-port=1",
    "--port",
    "2",
    "-log-as-json",
    "-log-as-json=false",
  ]);
  assert.equal(parsed.values.port, 2);
  assert.equal(parsed.values["log-as-json"], false);
});

Deno.test("unknown flags: flag provided but not defined", () => {
  assert.throws(() => parseFlags(SPECS, ["-x"]), usageError(/^flag provided but not defined: -x$/));
  assert.throws(
    () => parseFlags(SPECS, ["--x=1"]),
    usageError(/^flag provided but not defined: -x$/),
  );
  assert.throws(
    () => parseFlags(SPECS, ["-port=1", "--Port=2"]),
    usageError(/^flag provided but not defined: -Port$/),
  );
  assert.throws(() => parseFlags(SPECS, ["---port=1"]), UsageError);
});

Deno.test("a non-bool flag at the end needs an argument", () => {
  assert.throws(() => parseFlags(SPECS, ["-port"]), usageError(/^flag needs an argument: -port$/));
  assert.throws(
    () => parseFlags(SPECS, ["-log-as-json", "--trust-domain"]),
    usageError(/^flag needs an argument: -trust-domain$/),
  );
});

Deno.test("bad integers and booleans are usage errors naming the flag", () => {
  for (const raw of ["abc", "", "1.5", "12a", " 1"]) {
    assert.throws(() => parseFlags(SPECS, [`-port=${raw}`]), (error: Error) => {
      assert.ok(error instanceof UsageError);
      assert.ok(error.message.includes(`invalid value ${JSON.stringify(raw)}`), error.message);
      assert.ok(error.message.includes("for flag -port"), error.message);
      return true;
    });
  }
  for (const raw of ["yes", "no", "on", "", "2"]) {
    assert.throws(
      () => parseFlags(SPECS, [`-log-as-json=${raw}`]),
      usageError(new RegExp(`invalid boolean value "${raw}" for .*-log-as-json`)),
      raw,
    );
  }
});

Deno.test("choices are enforced for string flags", () => {
  assert.equal(parseFlags(SPECS, ["-mode=kubernetes"]).values.mode, "kubernetes");
  assert.equal(parseFlags(SPECS, ["--mode", "standalone"]).values.mode, "standalone");
  assert.throws(
    () => parseFlags(SPECS, ["-mode=k8s"]),
    usageError(/invalid value "k8s" for flag -mode: use one of standalone, kubernetes/),
  );
  assert.throws(() => parseFlags(SPECS, ["-mode=Kubernetes"]), UsageError);
  assert.throws(() => parseFlags(SPECS, ["-mode="]), UsageError);
});

Deno.test("parsing stops at the first positional argument", () => {
  const parsed = parseFlags(SPECS, ["-port=1", "serve", "-port=2", "-x"]);
  assert.equal(parsed.values.port, 1);
  assert.deepEqual(parsed.positionals, ["serve", "-port=2", "-x"]);
  assert.deepEqual([...parsed.given], ["port"]);
  // A lone "-" is a positional too, as in Go.
  const dash = parseFlags(SPECS, ["-", "-port=3"]);
  assert.equal(dash.values.port, 50001);
  assert.deepEqual(dash.positionals, ["-", "-port=3"]);
});

Deno.test("parsing stops after --, which is consumed", () => {
  const parsed = parseFlags(SPECS, ["--log-as-json", "--", "-port=1", "--", "x"]);
  assert.equal(parsed.values["log-as-json"], true);
  assert.equal(parsed.values.port, 50001);
  assert.deepEqual(parsed.positionals, ["-port=1", "--", "x"]);
  assert.deepEqual(parseFlags(SPECS, ["--"]).positionals, []);
});

Deno.test("given holds exactly the flags set on the command line, even to their defaults", () => {
  const parsed = parseFlags(SPECS, ["-port=50001", "--enable-metrics", "-config", "c.yaml"]);
  assert.deepEqual([...parsed.given].sort(), ["config", "enable-metrics", "port"]);
  assert.equal(parsed.given.has("trust-domain"), false);
  assert.equal(parsed.given.has("mode"), false);
});

Deno.test("parseFlags does not share state between calls", () => {
  parseFlags(SPECS, ["-port=7"]);
  const again = parseFlags(SPECS, []);
  assert.equal(again.values.port, 50001);
  assert.equal(again.given.size, 0);
  assert.equal(SPECS[0].default, 50001);
});

Deno.test("formatFlagHelp lists every flag with its type, help and non-empty default", () => {
  const help = formatFlagHelp(SPECS);
  for (const spec of SPECS) {
    assert.ok(help.includes(`--${spec.name}`), `missing --${spec.name}`);
    assert.ok(help.includes(spec.help), `missing help of ${spec.name}`);
  }
  const lines = help.split("\n");
  assert.equal(lines.length, SPECS.length * 2);
  assert.ok(lines.includes("  --port int"));
  assert.ok(lines.includes("  --trust-domain string"));
  assert.ok(lines.includes("  --log-as-json"));
  assert.ok(help.includes("gRPC port of the CA service (default 50001)"));
  assert.ok(help.includes('Trust domain (default "localhost")'));
  assert.ok(help.includes("Serve Prometheus metrics (default true)"));
  // Go omits zero-value defaults: no "(default ...)" for "" and false.
  assert.ok(lines.includes("        Path to the Configuration"));
  assert.ok(lines.includes("        Log one JSON object per line"));
  // The order is the specs' order.
  const order = SPECS.map((spec) => help.indexOf(`--${spec.name}`));
  assert.deepEqual(order, [...order].sort((a, b) => a - b));
});

Deno.test("a computed default is computed only when flags are parsed or listed", () => {
  let calls = 0;
  const specs = [{
    name: "workers",
    type: "int" as const,
    default: () => ++calls,
    help: "Workers",
  }];
  assert.equal(calls, 0);
  assert.equal(parseFlags(specs, []).values.workers, 1);
  assert.equal(parseFlags(specs, ["--workers=7"]).values.workers, 7);
  assert.match(formatFlagHelp(specs), /Workers \(default 3\)/);
});
