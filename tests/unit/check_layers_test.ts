/**
 * scripts/check-layers.ts: the import checks CI runs on the shipped code, on small made-up
 * module graphs.
 */
import assert from "node:assert/strict";
import { cycles, importsOf, layerViolations } from "../../scripts/check-layers.ts";

Deno.test("imports are read as repository paths, single- and multi-line, types too", () => {
  const source = `import { a } from "./a.ts";
import type {
  B,
  C,
} from "../ca/b.ts";
export { d } from "./d.ts";
import meta from "../../deno.json" with { type: "json" };
const lazy = await import("../x509/e.ts");
import { Buffer } from "node:buffer";`;
  assert.deepEqual(importsOf("src/server/x.ts", source), [
    "src/server/a.ts",
    "src/ca/b.ts",
    "src/server/d.ts",
    "src/x509/e.ts",
  ]);
});

Deno.test("an import up a layer, across one layer, or out of src/ is refused; down is fine", () => {
  const graph = new Map([
    ["src/ca/signer.ts", ["src/x509/der.ts", "src/ca/spiffe.ts"]],
    ["src/x509/der.ts", ["src/ca/spiffe.ts"]],
    ["src/kubernetes/client.ts", ["src/vault/client.ts"]],
    ["src/cli/serve.ts", ["src/server/grpc.ts", "tests/helpers/x.ts"]],
    ["main.ts", ["src/cli/serve.ts"]],
    ["src/newfolder/a.ts", []],
  ]);
  const problems = layerViolations(graph);
  assert.equal(problems.length, 4, problems.join("\n"));
  assert.match(problems[0], /src\/x509\/der\.ts \(layer x509\) imports src\/ca\/spiffe\.ts/);
  assert.match(problems[1], /src\/kubernetes\/client\.ts .* imports src\/vault\/client\.ts/);
  assert.match(problems[2], /imports tests\/helpers\/x\.ts, outside src\//);
  assert.match(problems[3], /src\/newfolder has no layer/);
});

Deno.test("cycles are found, within a folder too", () => {
  const graph = new Map([
    ["src/ca/profiles.ts", ["src/ca/workload-tbs.ts"]],
    ["src/ca/workload-tbs.ts", ["src/ca/profiles.ts"]],
    ["src/ca/signer.ts", ["src/ca/profiles.ts"]],
  ]);
  assert.deepEqual(cycles(graph), [
    "src/ca/profiles.ts -> src/ca/workload-tbs.ts -> src/ca/profiles.ts",
  ]);
  assert.deepEqual(cycles(new Map([["src/ca/signer.ts", ["src/ca/profiles.ts"]]])), []);
});
