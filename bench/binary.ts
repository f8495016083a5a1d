/**
 * Start-up and footprint of the ways to run sentry (not a test: prints numbers):
 * file size, median time of `--version`, time from spawn to /healthz = 200 on a new
 * credentials directory, and the server's peak RSS after 10,000 signed certificates.
 * Compares the release binary (dist/sentry, built by `deno task build`), `deno task sentry`
 * (bundle + node), and main.ts on Deno.
 * Usage: deno run -A bench/binary.ts [--certificates N]
 */
import { readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { SentryClient } from "../tests/helpers/grpc_client.ts";
import { generateKey, makeCsr } from "../tests/helpers/openssl.ts";
import { startSentry, tempDir } from "../tests/helpers/sentry_process.ts";

const ROOT = fileURLToPath(new URL("../", import.meta.url));
const countFlag = Deno.args.indexOf("--certificates");
const CERTIFICATES = countFlag >= 0 ? Number(Deno.args[countFlag + 1]) : 10_000;
const DENO = Deno.execPath();

const WAYS: { name: string; command: string[]; file?: string }[] = [
  {
    name: "release binary dist/sentry",
    command: [join(ROOT, "dist/sentry")],
    file: join(ROOT, "dist/sentry"),
  },
  {
    name: "deno task sentry (bundle + node)",
    command: [DENO, "task", "-q", "--cwd", ROOT, "sentry"],
  },
  { name: "main.ts on deno", command: [DENO, "run", "--allow-all", join(ROOT, "main.ts")] },
];

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

/** Peak resident set (VmHWM, KiB) of the largest process in the tree under `pid`. */
function peakRssKb(pid: number): number {
  const tree = [pid];
  for (const entry of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue;
    try {
      const stat = readFileSync(`/proc/${entry.name}/stat`, "utf8");
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      if (tree.includes(ppid)) tree.push(Number(entry.name));
    } catch { /* gone */ }
  }
  return Math.max(...tree.map((p) => {
    try {
      return Number(/VmHWM:\s+(\d+)/.exec(readFileSync(`/proc/${p}/status`, "utf8"))?.[1] ?? 0);
    } catch {
      return 0;
    }
  }));
}

async function versionMs(command: string[]): Promise<number> {
  const times: number[] = [];
  for (let i = 0; i < 7; i++) {
    const start = performance.now();
    const output = await new Deno.Command(command[0], { args: [...command.slice(1), "--version"] })
      .output();
    if (!output.success) throw new Error(`${command.join(" ")} --version failed`);
    times.push(performance.now() - start);
  }
  return median(times);
}

const work = await tempDir("sentry-bench-binary-");
const csr = await makeCsr(work, await generateKey("ec-p256"));
console.log(
  `| way of running | size | --version (median of 7) | start to healthy | peak RSS after ${CERTIFICATES} certificates |`,
);
console.log("| --- | --- | --- | --- | --- |");
for (const way of WAYS) {
  if (way.file) {
    try {
      statSync(way.file);
    } catch {
      console.log(`| ${way.name} | missing: run deno task build | | | |`);
      continue;
    }
  }
  const size = way.file ? `${(statSync(way.file).size / 1048576).toFixed(1)} MiB` : "-";
  const version = await versionMs(way.command);
  const sentry = await startSentry({ command: way.command, dir: join(work, crypto.randomUUID()) });
  let rss = "-";
  try {
    const anchors = await Deno.readTextFile(join(sentry.dir, "ca.crt"));
    const client = new SentryClient(sentry.grpcPort, anchors);
    let issued = 0;
    await Promise.all(Array.from({ length: 32 }, async () => {
      while (issued < CERTIFICATES) {
        issued++;
        await client.sign({ id: "app", namespace: "default", certificateSigningRequest: csr });
      }
    }));
    client.close();
    rss = `${(peakRssKb(sentry.child.pid) / 1024).toFixed(0)} MB`;
  } finally {
    await sentry.stop();
  }
  console.log(
    `| ${way.name} | ${size} | ${version.toFixed(0)} ms | ${
      sentry.startupMs.toFixed(0)
    } ms | ${rss} |`,
  );
}
await Deno.remove(work, { recursive: true });
