/**
 * `deno task layers`: checks that the imports of the shipped code (`main.ts`, `src/`) point one
 * way. Each folder of `src/` belongs to a layer (the table below, lowest first, as in the
 * README's layout); a module may import modules of its own folder and of lower layers only,
 * and no chain of imports may come back to where it started (a cycle). Type-only imports count:
 * they tie modules together just the same. Prints every offending import and exits 1, or
 * prints a one-line summary and exits 0.
 *
 * @module
 */
import { readdirSync, readFileSync } from "node:fs";
import { dirname, join, normalize } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL("../", import.meta.url));

/** Folders of `src/`, lowest layer first; folders in one entry share a layer. */
export const LAYERS: readonly (readonly string[])[] = [
  ["util"],
  ["observability"],
  ["net"],
  ["x509"],
  ["ca"],
  ["proto"],
  ["kubernetes", "vault"],
  ["config"],
  ["stores"],
  ["identity"],
  ["server"],
  ["cli"],
];

/** main.ts sits above every folder. */
const TOP = LAYERS.length;

const IMPORT =
  /(?:^|\n)\s*(?:import|export)\b[^"';]*?from\s*["'](\.{1,2}\/[^"']+)["']|import\(\s*["'](\.{1,2}\/[^"']+)["']\s*\)/g;

/** The layer of a module path relative to the repository root, or undefined outside `src/`. */
export function layerOf(path: string): { folder: string; layer: number } | undefined {
  if (path === "main.ts") return { folder: "main.ts", layer: TOP };
  const match = /^src\/([^/]+)\//.exec(path);
  if (!match) return undefined;
  const layer = LAYERS.findIndex((folders) => folders.includes(match[1]));
  return { folder: match[1], layer };
}

/** The relative `.ts` imports of `source`, as repository paths. */
export function importsOf(path: string, source: string): string[] {
  const targets: string[] = [];
  for (const match of source.matchAll(IMPORT)) {
    const specifier = match[1] ?? match[2];
    if (!specifier.endsWith(".ts")) continue; // data (deno.json) and non-modules
    targets.push(normalize(join(dirname(path), specifier)));
  }
  return targets;
}

/** Each import that points up a layer, across a layer, or to a folder with no layer. */
export function layerViolations(graph: Map<string, string[]>): string[] {
  const problems: string[] = [];
  for (const [from, targets] of graph) {
    const source = layerOf(from)!;
    if (source.layer < 0) problems.push(`${from}: folder src/${source.folder} has no layer`);
    for (const to of targets) {
      const target = layerOf(to);
      if (!target) {
        problems.push(`${from} imports ${to}, outside src/`);
      } else if (target.folder !== source.folder && target.layer >= source.layer) {
        problems.push(
          `${from} (layer ${source.folder}) imports ${to} (layer ${target.folder}): ` +
            `imports must point to lower layers`,
        );
      }
    }
  }
  return problems;
}

/** Every import cycle, each reported once as `a -> b -> ... -> a`. */
export function cycles(graph: Map<string, string[]>): string[] {
  const found: string[] = [];
  const state = new Map<string, "open" | "done">();
  const stack: string[] = [];
  const visit = (node: string) => {
    state.set(node, "open");
    stack.push(node);
    for (const next of graph.get(node) ?? []) {
      if (state.get(next) === "open") {
        found.push([...stack.slice(stack.indexOf(next)), next].join(" -> "));
      } else if (!state.has(next)) {
        visit(next);
      }
    }
    stack.pop();
    state.set(node, "done");
  };
  for (const node of [...graph.keys()].sort()) if (!state.has(node)) visit(node);
  return found;
}

function modules(dir: string): string[] {
  return readdirSync(join(ROOT, dir), { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) return modules(path);
    return entry.name.endsWith(".ts") ? [path] : [];
  });
}

if (import.meta.main) {
  const graph = new Map<string, string[]>();
  for (const path of ["main.ts", ...modules("src")]) {
    graph.set(path, importsOf(path, readFileSync(join(ROOT, path), "utf8")));
  }
  const problems = [...layerViolations(graph), ...cycles(graph).map((c) => `cycle: ${c}`)];
  if (problems.length > 0) {
    console.error(`import layering: ${problems.length} problem(s)\n  ${problems.join("\n  ")}`);
    Deno.exit(1);
  }
  const edges = [...graph.values()].reduce((sum, targets) => sum + targets.length, 0);
  console.log(
    `import layering: ${graph.size} modules, ${edges} imports, all pointing down ` +
      `(${LAYERS.map((folders) => folders.join("+")).join(" < ")} < main.ts), no cycle`,
  );
}
