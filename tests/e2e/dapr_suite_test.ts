/**
 * Dapr's own sentry integration suite (the cases of `tests/integration/suite/sentry/...` in
 * Dapr's Go module, at the release pinned in tests/dapr/go.mod) run against our sentry and,
 * as the control, against Dapr's own sentry built from the same module. Prints one line per
 * case and the pass counts, and checks that every case passes on both, except the ones listed
 * in {@link KNOWN_DIFFERENCES} (docs/compatibility.md explains each). A case that starts
 * passing on ours, or one that newly fails, fails this test: the list must say the truth.
 *
 * @module
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { daprBinaries } from "../helpers/dapr_binaries.ts";
import { sentryCommand, tempDir } from "../helpers/sentry_process.ts";

/**
 * Cases that fail on our sentry today, with the reason (mirrored in docs/compatibility.md,
 * section "Dapr's sentry integration suite").
 */
const KNOWN_DIFFERENCES: Record<string, string> = {};

/**
 * The `sentry/helm/...` cases render Dapr's chart with Dapr's `helmtemplate` helper, a separate
 * Go module that Dapr's published module does not contain; they get the real Helm CLI
 * (tests/helm) as `helm template dapr <their arguments>` instead. They test the chart, so they
 * pass or fail alike on both sentries; tests/e2e/helm_chart_test.ts runs our binary with it.
 */
async function helmTemplate(helm: string): Promise<string> {
  return await executable([helm, "template", "dapr"]);
}

type Outcome = "PASS" | "FAIL";

/**
 * Runs the compiled suite with `env` (`DAPR_INTEGRATION_<PROGRAM>_PATH` variables naming the
 * sentry and helper programs to use); returns each top-level case's outcome.
 */
async function runSuite(
  suite: string,
  env: Record<string, string>,
  only?: string,
): Promise<{ outcomes: Map<string, Outcome>; output: string }> {
  const output = await new Deno.Command(suite, {
    args: [
      "-test.v",
      "-test.parallel",
      "4",
      "-test.timeout",
      "5m",
      ...(only
        ? [
          "-test.run",
          ["TestDaprSentrySuite", ...only.split("/")].map((part) => `^${part}$`).join("/"),
        ]
        : []),
    ],
    env,
    cwd: await tempDir("dapr-suite-"),
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(output.stdout) + new TextDecoder().decode(output.stderr);
  const outcomes = new Map<string, Outcome>();
  for (const match of text.matchAll(/^ {4}--- (PASS|FAIL): TestDaprSentrySuite\/(\S+) \(/gm)) {
    outcomes.set(match[2], match[1] as Outcome);
  }
  return { outcomes, output: text };
}

/**
 * Runs the whole suite, then once more each case whose outcome is not `expected(case)`, alone:
 * some of Dapr's cases wait on process timing (an exit within a few seconds) that a loaded
 * 2-core machine can miss. Retried cases are named in `retried`.
 */
async function runSuiteWithRetry(
  suite: string,
  env: Record<string, string>,
  expected: (name: string) => Outcome,
): Promise<{ outcomes: Map<string, Outcome>; output: string; retried: Set<string> }> {
  const first = await runSuite(suite, env);
  const retried = new Set<string>();
  let output = first.output;
  for (const [name, outcome] of first.outcomes) {
    if (outcome === expected(name)) continue;
    const again = await runSuite(suite, env, name);
    retried.add(name);
    output += `\n--- retry of ${name} ---\n${again.output}`;
    const outcomeAgain = again.outcomes.get(name);
    if (outcomeAgain) first.outcomes.set(name, outcomeAgain);
  }
  return { outcomes: first.outcomes, output, retried };
}

/**
 * An executable script that runs `command` with `env` added: the suite starts sentry with
 * only the variables a case sets, so whatever else a program needs is set here.
 */
async function executable(command: string[], env: Record<string, string> = {}): Promise<string> {
  const quote = (part: string) => `'${part.replaceAll("'", `'\\''`)}'`;
  const assignments = Object.entries(env).map(([name, value]) => `${name}=${quote(value)} `);
  const path = join(await tempDir("sentry-wrapper-"), "sentry");
  await Deno.writeTextFile(
    path,
    `#!/bin/sh\n${assignments.join("")}exec ${command.map(quote).join(" ")} "$@"\n`,
    { mode: 0o755 },
  );
  return path;
}

Deno.test("Dapr's sentry integration suite passes on ours, except the listed differences", async () => {
  const binaries = await daprBinaries();
  const expectedOnOurs = (name: string): Outcome => KNOWN_DIFFERENCES[name] ? "FAIL" : "PASS";
  const helm = await helmTemplate(binaries.helm);
  const [ours, dapr] = await Promise.all([
    runSuiteWithRetry(binaries.suite, {
      DAPR_INTEGRATION_SENTRY_PATH: await executable(sentryCommand()),
      DAPR_INTEGRATION_HELMTEMPLATE_PATH: helm,
    }, expectedOnOurs),
    // Dapr's sentry refuses to run as root in Kubernetes mode unless told it may (as CI is).
    runSuiteWithRetry(binaries.suite, {
      DAPR_INTEGRATION_SENTRY_PATH: await executable([binaries.sentry], {
        DAPR_UNSAFE_SKIP_CONTAINER_UID_GID_CHECK: "true",
      }),
      DAPR_INTEGRATION_HELMTEMPLATE_PATH: helm,
    }, () => "PASS"),
  ]);
  const cases = [...new Set([...ours.outcomes.keys(), ...dapr.outcomes.keys()])].sort();
  assert.ok(cases.length >= 10, `too few cases reported:\n${dapr.output}`);

  const rows = cases.map((name) =>
    `  ${name.padEnd(40)} dapr=${dapr.outcomes.get(name) ?? "-"} ours=${
      ours.outcomes.get(name) ?? "-"
    }${KNOWN_DIFFERENCES[name] ? `  (${KNOWN_DIFFERENCES[name]})` : ""}${
      ours.retried.has(name) || dapr.retried.has(name) ? "  [retried once]" : ""
    }`
  );
  const passed = (outcomes: Map<string, Outcome>) =>
    [...outcomes.values()].filter((outcome) => outcome === "PASS").length;
  console.log(
    `Dapr sentry suite: ours ${passed(ours.outcomes)}/${cases.length} passed, ` +
      `Dapr's ${passed(dapr.outcomes)}/${cases.length} passed\n${rows.join("\n")}`,
  );

  for (const name of cases) {
    assert.equal(
      dapr.outcomes.get(name),
      "PASS",
      `the control failed: ${name} fails on Dapr's own sentry, so this machine cannot run ` +
        `it:\n${dapr.output}`,
    );
    const expected = expectedOnOurs(name);
    assert.equal(
      ours.outcomes.get(name),
      expected,
      expected === "PASS"
        ? `${name} fails on our sentry:\n${ours.output}`
        : `${name} now passes on our sentry: remove it from KNOWN_DIFFERENCES and ` +
          `docs/compatibility.md`,
    );
  }
  for (const name of Object.keys(KNOWN_DIFFERENCES)) {
    assert.ok(cases.includes(name), `${name} is listed but Dapr's suite has no such case`);
  }
  for (const group of ["sentry/helm/", "sentry/validator/kubernetes/"]) {
    assert.ok(cases.some((name) => name.startsWith(group)), `no ${group} case ran`);
  }
});
