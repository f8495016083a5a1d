/**
 * Starts the real sentry program for end-to-end tests, on free loopback ports, and stops it.
 * By default it runs the Node bundle `node dist/sentry.cjs` (built by `deno task bundle`,
 * which `deno task test` runs first); set SENTRY_BIN to a binary (for example dist/sentry)
 * to run the same tests against that, or SENTRY_RUNTIME=deno to run main.ts on Deno.
 *
 * @module
 */
import { mkdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath as fromFileUrl } from "node:url";

const REPO = fromFileUrl(new URL("../../", import.meta.url));

/** The command that starts sentry: SENTRY_BIN, Deno running main.ts, or the Node bundle. */
export function sentryCommand(): string[] {
  const bin = Deno.env.get("SENTRY_BIN");
  if (bin) return [bin];
  if (Deno.env.get("SENTRY_RUNTIME") === "deno") {
    return [Deno.execPath(), "run", "--allow-all", `${REPO}main.ts`];
  }
  const bundle = `${REPO}dist/sentry.cjs`;
  try {
    Deno.statSync(bundle);
  } catch {
    throw new Error(
      `${bundle} is missing: run 'deno task bundle' (deno task test does it for you)`,
    );
  }
  return ["node", bundle];
}

/**
 * Where and with which environment sentry runs. A binary under test (SENTRY_BIN) runs from
 * an empty directory with HOME pointing to another empty one, which proves it needs nothing
 * from the source tree or the user's files.
 */
function isolation(env: Record<string, string> | undefined, cwd?: string) {
  if (!Deno.env.get("SENTRY_BIN")) return { env, cwd };
  return {
    env: { HOME: Deno.makeTempDirSync({ prefix: "sentry-home-" }), ...env },
    cwd: cwd ?? Deno.makeTempDirSync({ prefix: "sentry-cwd-" }),
  };
}

/** Ports already handed out in this process, so that concurrent starts never share one. */
const handedOut = new Set<number>();

/**
 * Ports handed out come from below Linux's ephemeral range (32768-60999): the kernel gives
 * those to outgoing connections, which took a port between our probe and the program's bind
 * (a Dapr scheduler's etcd peer port, once). Test workers claim each port with a marker file,
 * so that two of them never hand out the same one at once.
 */
const PORT_RANGE = { first: 20_000, last: 32_767 };
const CLAIMS = join(tmpdir(), "sentry-test-port-claims");
/** A claim older than this is a finished run's. */
const CLAIM_STALE_MS = 10 * 60_000;

/** Claims `port` for this test worker (false when another worker holds a fresh claim). */
function claim(port: number): boolean {
  const marker = join(CLAIMS, String(port));
  try {
    writeFileSync(marker, String(Deno.pid), { flag: "wx" });
    return true;
  } catch {
    try {
      if (Date.now() - statSync(marker).mtimeMs > CLAIM_STALE_MS) rmSync(marker, { force: true });
    } catch {
      // gone meanwhile
    }
    return false;
  }
}

/** A free TCP port (bound on all interfaces once, then released), never the same twice here. */
export async function freePort(): Promise<number> {
  mkdirSync(CLAIMS, { recursive: true });
  while (true) {
    const port = PORT_RANGE.first +
      Math.floor(Math.random() * (PORT_RANGE.last - PORT_RANGE.first + 1));
    if (handedOut.has(port) || !claim(port)) continue;
    if (await canBind(port)) {
      handedOut.add(port);
      return port;
    }
  }
}

function canBind(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once("error", () => resolve(false));
    server.listen(port, "0.0.0.0", () => server.close(() => resolve(true)));
  });
}

/** A temporary directory removed when the returned disposer runs. */
export async function tempDir(prefix = "sentry-test-"): Promise<string> {
  return await Deno.makeTempDir({ prefix });
}

/** The result of a sentry run that ended. */
export interface Finished {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Server flags for a run that is expected to end (a refused start-up): every port chosen by the
 * system, everything on loopback, so that nothing can collide or be reached from outside.
 */
export const ONE_SHOT_SERVER_ARGS: readonly string[] = [
  "--port=0",
  "--healthz-port=0",
  "--metrics-port=0",
  "--listen-address=127.0.0.1",
  "--healthz-listen-address=127.0.0.1",
  "--metrics-listen-address=127.0.0.1",
];

/** Runs sentry with `args` to completion (for commands and refused start-ups). */
export async function runSentry(
  args: string[],
  options: { env?: Record<string, string>; cwd?: string; timeoutMs?: number } = {},
): Promise<Finished> {
  const [program, ...prefix] = sentryCommand();
  const child = new Deno.Command(program, {
    args: [...prefix, ...args],
    ...isolation(options.env, options.cwd),
    stdout: "piped",
    stderr: "piped",
    stdin: "null",
  }).spawn();
  const timer = setTimeout(() => child.kill("SIGKILL"), options.timeoutMs ?? 60_000);
  const output = await child.output();
  clearTimeout(timer);
  const decoder = new TextDecoder();
  return {
    code: output.code,
    stdout: decoder.decode(output.stdout),
    stderr: decoder.decode(output.stderr),
  };
}

/** A running sentry server. */
export interface RunningSentry {
  grpcPort: number;
  healthPort: number;
  metricsPort: number;
  /** The credentials directory. */
  dir: string;
  /** Everything written to stderr so far. */
  logs(): string;
  /** Sends `signal` and waits for the exit code. */
  stop(signal?: Deno.Signal): Promise<number>;
  /** The process (for status checks). */
  child: Deno.ChildProcess;
  /** Milliseconds from spawning the command to the first /healthz 200. */
  startupMs: number;
}

/** Options for {@link startSentry}. */
export interface StartOptions {
  /** Credentials directory (a new temporary one by default). */
  dir?: string;
  /** Extra flags. */
  args?: string[];
  env?: Record<string, string>;
  /** How long to wait for /healthz (default 30 s). */
  readyTimeoutMs?: number;
  /** The command to run instead of {@link sentryCommand} (benchmarks compare several). */
  command?: string[];
}

/** Starts sentry on free ports and waits until /healthz answers 200. */
export async function startSentry(options: StartOptions = {}): Promise<RunningSentry> {
  // Another process may take a port between the probe and sentry's bind: try new ports then.
  // The logs of a lost attempt stay in front of the next one's (a first boot that generated the
  // bundle before losing its port must still be visible to the test).
  let earlierLogs = "";
  for (let attempt = 1;; attempt++) {
    try {
      return await startOnFreePorts(options, earlierLogs);
    } catch (error) {
      if (attempt >= 3 || !(error instanceof StartFailure) || !/EADDRINUSE/.test(error.logs)) {
        throw error;
      }
      earlierLogs = error.logs;
    }
  }
}

/** A start that did not reach healthy; `logs` holds everything the process printed. */
class StartFailure extends Error {
  constructor(message: string, readonly logs: string) {
    super(`${message}:\n${logs}`);
  }
}

/** The flags that serve `dir` with every listener on 127.0.0.1 at the given ports. */
export function serveArgs(
  dir: string,
  ports: { grpc: number; health: number; metrics: number },
): string[] {
  return [
    "--issuer-credentials",
    dir,
    "--listen-address=127.0.0.1",
    `--port=${ports.grpc}`,
    "--healthz-listen-address=127.0.0.1",
    `--healthz-port=${ports.health}`,
    "--metrics-listen-address=127.0.0.1",
    `--metrics-port=${ports.metrics}`,
  ];
}

async function startOnFreePorts(
  options: StartOptions,
  earlierLogs: string,
): Promise<RunningSentry> {
  const dir = options.dir ?? await tempDir();
  const [grpcPort, healthPort, metricsPort] = [
    await freePort(),
    await freePort(),
    await freePort(),
  ];
  const [program, ...prefix] = options.command ?? sentryCommand();
  const spawnedAt = performance.now();
  const child = new Deno.Command(program, {
    args: [
      ...prefix,
      ...serveArgs(dir, { grpc: grpcPort, health: healthPort, metrics: metricsPort }),
      ...(options.args ?? []),
    ],
    ...isolation(options.env),
    stdout: "piped",
    stderr: "piped",
    stdin: "null",
  }).spawn();
  let logs = earlierLogs;
  const decoder = new TextDecoder();
  const collect = async (stream: ReadableStream<Uint8Array>) => {
    for await (const chunk of stream) logs += decoder.decode(chunk, { stream: true });
  };
  const collecting = Promise.all([collect(child.stdout), collect(child.stderr)]);
  let exited: Deno.CommandStatus | undefined;
  const statusPromise = child.status.then((status) => (exited = status));

  const deadline = Date.now() + (options.readyTimeoutMs ?? 30_000);
  while (true) {
    if (exited) {
      await collecting;
      throw new StartFailure(
        `sentry exited with code ${exited.code} before becoming healthy`,
        logs,
      );
    }
    try {
      const response = await fetch(`http://127.0.0.1:${healthPort}/healthz`);
      await response.body?.cancel();
      if (response.status === 200) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      child.kill("SIGKILL");
      await statusPromise;
      await collecting;
      throw new StartFailure("sentry did not become healthy in time", logs);
    }
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  const startupMs = performance.now() - spawnedAt;

  return {
    grpcPort,
    healthPort,
    metricsPort,
    dir,
    child,
    startupMs,
    logs: () => logs,
    async stop(signal: Deno.Signal = "SIGTERM") {
      if (!exited) {
        try {
          child.kill(signal);
        } catch {
          // already gone
        }
      }
      const status = await statusPromise;
      await collecting;
      return status.code;
    },
  };
}
