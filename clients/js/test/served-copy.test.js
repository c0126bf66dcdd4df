// The gateway serves a copy of index.js to its page (go:embed cannot reach
// clients/js); it must stay the same file.
import { it } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { repoRoot } from "../testutil/gateway.js";

it("gateway/web/atasks-client.js is clients/js/index.js", () => {
  const canonical = readFileSync(join(repoRoot, "clients/js/index.js"), "utf8");
  const served = readFileSync(join(repoRoot, "gateway/web/atasks-client.js"), "utf8");
  assert.ok(served === canonical, "the copy is stale: run `go generate ./gateway`");
});
