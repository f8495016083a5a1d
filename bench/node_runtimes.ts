/**
 * Which Node.js runtime should the release binary embed? Runs the in-process signing benchmark
 * (bench/signer.ts: decode + verify a CSR, build and sign a workload certificate, one core) on
 * this machine's `node` and on each pinned official release (scripts/node-runtime.ts, fetched
 * from the npm registry and checked against its integrity), for an ECDSA P-256 CSR (older
 * sidecars, our default) and an Ed25519 CSR (Dapr v1.18 sidecars), each run twice in turn to
 * show the noise. Prints numbers and one JSON line; asserts nothing.
 *
 * `deno run -A bench/node_runtimes.ts [--seconds 4]`
 */
import { join } from "node:path";
import { bundleForNode } from "../scripts/node-bundle.ts";
import { PINNED_NODES, pinnedNode } from "../scripts/node-runtime.ts";

const secondsIndex = Deno.args.indexOf("--seconds");
const seconds = secondsIndex >= 0 ? Deno.args[secondsIndex + 1] : "4";

async function output(program: string, args: string[], cwd?: string): Promise<string> {
  const out = await new Deno.Command(program, { args, cwd, stdout: "piped", stderr: "piped" })
    .output();
  if (!out.success) {
    throw new Error(`${program} ${args.join(" ")}: ${new TextDecoder().decode(out.stderr)}`);
  }
  return new TextDecoder().decode(out.stdout).trim();
}

const work = await Deno.makeTempDir({ prefix: "node-runtimes-" });
const signer = join(work, "signer.cjs");
await bundleForNode("bench/signer.ts", signer);
const csrs = { "ecdsa-p256": ["ec", "-pkeyopt", "ec_paramgen_curve:P-256"], ed25519: ["ed25519"] };
for (const [name, key] of Object.entries(csrs)) {
  await output("openssl", [
    "req",
    "-new",
    "-newkey",
    ...key,
    "-nodes",
    "-keyout",
    join(work, `${name}.key`),
    "-subj",
    "/CN=bench",
    "-out",
    join(work, `${name}.csr`),
  ]);
}

const runtimes = [{ label: "machine", node: "node" }];
for (const pinned of PINNED_NODES) {
  runtimes.push({ label: `npm ${pinned.version}`, node: await pinnedNode(pinned) });
}

const results: Record<string, unknown>[] = [];
for (const round of [1, 2]) {
  for (const runtime of runtimes) {
    const versions = JSON.parse(
      await output(runtime.node, ["-p", "JSON.stringify(process.versions)"]),
    );
    for (const csr of Object.keys(csrs)) {
      const measured = JSON.parse(
        (await output(runtime.node, [signer, join(work, `${csr}.csr`), seconds])).split("\n").at(
          -1,
        )!,
      );
      const result = {
        round,
        runtime: runtime.label,
        node: versions.node,
        openssl: versions.openssl,
        csr,
        certificatesPerSecond: measured.certificatesPerSecond,
      };
      results.push(result);
      console.log(
        `round ${round}  node ${versions.node.padEnd(8)} (OpenSSL ${
          versions.openssl.padEnd(6)
        })  ` +
          `${csr.padEnd(10)}  ${String(measured.certificatesPerSecond).padStart(6)} certificates/s`,
      );
    }
  }
}
console.log(JSON.stringify({ seconds: Number(seconds), results }));
await Deno.remove(work, { recursive: true });
