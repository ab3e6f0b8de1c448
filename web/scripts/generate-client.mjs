// Regenerates clients/typescript from the OpenAPI document of an `atlas`
// binary: ATLAS_BIN if set, otherwise `cargo run -- openapi` at the repo root.
// Writes openapi.json (the input, pretty-printed, for readable diffs) and
// src/schema.d.ts (the types openapi-fetch is parameterized with).
import { execFileSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import openapiTS, { astToString } from "openapi-typescript";

const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, "../..");
const out = resolve(repo, "clients/typescript");

const bin = process.env.ATLAS_BIN;
const raw = bin
  ? execFileSync(bin, ["openapi"], { encoding: "utf8", maxBuffer: 64 << 20 })
  : execFileSync("cargo", ["run", "--quiet", "--", "openapi"], {
      cwd: repo,
      encoding: "utf8",
      maxBuffer: 64 << 20,
    });
const doc = JSON.parse(raw);

writeFileSync(resolve(out, "openapi.json"), JSON.stringify(doc, null, 2) + "\n");
const ast = await openapiTS(doc, { alphabetize: true, emptyObjectsUnknown: true });
const header = "// Generated from the Atlas OpenAPI document by web/scripts/generate-client.mjs. Do not edit.\n\n";
writeFileSync(resolve(out, "src/schema.d.ts"), header + astToString(ast));
console.log(`clients/typescript: ${Object.keys(doc.paths ?? {}).length} paths`);
