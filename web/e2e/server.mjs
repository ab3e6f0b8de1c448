// Starts a real `atlas serve` on a temporary data directory and a free port
// for the end-to-end tests and the benchmark, and a tiny page server for
// ENRICH_URL to fetch. ATLAS_BIN names the binary (CI passes its debug build).
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

export async function freePort() {
  return new Promise((ok, fail) => {
    const s = createServer();
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => ok(port));
    });
    s.on("error", fail);
  });
}

export async function startAtlas({ quiet = true } = {}) {
  const bin = resolve(process.env.ATLAS_BIN ?? "../target/debug/atlas");
  const dir = mkdtempSync(join(tmpdir(), "atlas-e2e-"));
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const env = {
      PATH: process.env.PATH,
      ATLAS_JOBS__ENRICH_ALLOW_NETWORKS: '["127.0.0.1"]',
      ATLAS_JOBS__POLL_INTERVAL_MS: "100",
      ATLAS_AUTH__ARGON2_MEMORY_KIB: "256",
      ATLAS_AUTH__ARGON2_ITERATIONS: "1",
      ATLAS_SERVER__RATE_LIMIT_PER_SECOND: "0",
      RUST_LOG: process.env.RUST_LOG ?? "warn",
  };
  const child = spawn(bin, ["serve", "--bind", `127.0.0.1:${port}`], {
    cwd: dir,
    env,
    stdio: ["ignore", quiet ? "ignore" : "inherit", "inherit"],
  });
  const exited = new Promise((r) => child.on("exit", r));
  for (let i = 0; i < 300; i++) {
    try {
      const r = await fetch(`${url}/ready`);
      if (r.ok) break;
    } catch {
      /* not listening yet */
    }
    if (child.exitCode !== null) throw new Error(`atlas exited with ${child.exitCode}`);
    await new Promise((r) => setTimeout(r, 100));
    if (i === 299) throw new Error("atlas did not become ready in 30 s");
  }
  return {
    url,
    dir,
    /** `atlas user create EMAIL --admin` on this data directory. */
    async createAdmin(email, password) {
      const cli = spawn(bin, ["user", "create", email, "--admin"], { cwd: dir, env, stdio: ["pipe", "ignore", "inherit"] });
      cli.stdin.end(password + "\n");
      const code = await new Promise((r) => cli.on("exit", r));
      if (code !== 0) throw new Error(`atlas user create exited with ${code}`);
    },
    async stop() {
      child.kill("SIGTERM");
      await Promise.race([exited, new Promise((r) => setTimeout(r, 10_000))]);
      if (child.exitCode === null) child.kill("SIGKILL");
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A page with a title and description, for ENRICH_URL to fetch. */
export async function startPageServer() {
  const server = createServer((_req, res) => {
    res.writeHead(200, { "content-type": "text/html; charset=utf-8" });
    res.end(
      '<!doctype html><html><head><title>Asynchronous Programming in Rust</title>' +
        '<meta name="description" content="Futures, executors and async/await."></head><body>ok</body></html>',
    );
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  return { url: `http://127.0.0.1:${server.address().port}/async-book`, stop: () => server.close() };
}
