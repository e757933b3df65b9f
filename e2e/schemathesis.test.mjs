// Schemathesis (Python) against the running server's OpenAPI document with every check (issue 19 §4):
// every status the server answers is documented, every schema-valid request is accepted unless
// e2e/python/schemathesis/schemathesis.toml names the rule the schema cannot express, and nothing
// answers 5xx. Any finding fails the suite.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { startKeywarden, root } from "./support.mjs";

const login = "schemathesis";
const password = "correct horse battery staple";
let server;

before(async () => {
  // The fuzzer's own wrong sign-ins would otherwise throttle the sign-ins that give it tokens;
  // the throttle has suites of its own.
  server = await startKeywarden({ KEYWARDEN_THROTTLE__ENABLED: "false" });
  const created = await fetch(`${server.base}/api/v1/accounts`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ email: "schemathesis@example.com", username: login, password }),
  });
  assert.equal(created.status, 201);
});

after(() => {
  server?.child.kill();
});

test("Schemathesis finds nothing: statuses, schemas, no 5xx, authenticated, every check", async () => {
  const st = process.env.KEYWARDEN_E2E_SCHEMATHESIS ?? join(root, "e2e", ".venv", "bin", "st");
  assert.ok(existsSync(st), `schemathesis is required at ${st} (.ci/run installs it: e2e/python/requirements.txt)`);
  const dir = join(root, "e2e", "python", "schemathesis");
  // A fixed seed keeps the gate reproducible; set KEYWARDEN_E2E_SCHEMATHESIS_SEED to explore further.
  const seed = process.env.KEYWARDEN_E2E_SCHEMATHESIS_SEED ?? "19";
  // Asynchronously: the server's log is a pipe this process must keep reading meanwhile (a blocked
  // event loop would fill it and stall the server).
  const run = await promisify(execFile)(
    st,
    [
      "--config-file", join(dir, "schemathesis.toml"),
      "run", `${server.base}/api/v1/openapi.json`,
      "--checks", "all",
      "--max-examples", "25",
      "--seed", seed,
      "--no-color",
    ],
    {
      cwd: dir,
      env: { ...process.env, KEYWARDEN_URL: server.base, KEYWARDEN_LOGIN: login, KEYWARDEN_PASSWORD: password, SCHEMATHESIS_HOOKS: "hooks", PYTHONPATH: dir },
      encoding: "utf8",
      timeout: 600_000,
      maxBuffer: 64 * 1024 * 1024,
    },
  ).then(
    ({ stdout, stderr }) => ({ status: 0, stdout, stderr }),
    (error) => ({ status: error.code ?? 1, stdout: error.stdout ?? "", stderr: error.stderr ?? String(error) }),
  );
  process.stdout.write(run.stdout.split("\n").slice(-25).join("\n"));
  assert.equal(run.status, 0, `schemathesis found problems (seed ${seed}):\n${run.stdout}\n${run.stderr}`);
  assert.match(run.stdout, /\d+ generated, \d+ passed/, "test cases were generated and run");
  const summary = run.stdout.trim().split("\n").at(-1);
  assert.doesNotMatch(summary, /\d+ (failures?|errors?)\b/, summary);
});
