// README.md's ```js snippets are one program: this runs it as written (the
// gateway's address aside) against a real gateway, over WebSocket and over
// REST, and checks that every console.log prints what the comment beside it
// says, so the documented API cannot drift from the code.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { repoRoot, startGateway } from "../testutil/gateway.js";

const pkgDir = join(repoRoot, "clients/js");
const README_URL = "http://127.0.0.1:8080";

/** snippets returns the ```js blocks of markdown, in order. */
function snippets(markdown) {
  return [...markdown.matchAll(/^```js\n([\s\S]*?)^```[ \t]*$/gm)].map((m) => m[1]);
}

/**
 * expectedOutput returns what the program prints: the comment beside each
 * console.log, in order. Every console.log must have one.
 */
function expectedOutput(code) {
  const out = [];
  for (const [i, line] of code.split("\n").entries()) {
    if (!line.includes("console.log(")) continue;
    const m = /console\.log\(.*\);\s*\/\/ (.+)$/.exec(line);
    assert.ok(m, `README line ${i + 1} of the program, ${JSON.stringify(line.trim())}: say what it prints in a // comment`);
    out.push(m[1].trimEnd());
  }
  return out;
}

// Node 20 has a global WebSocket only with --experimental-websocket; later
// ones have it unless --no-experimental-websocket.
const major = Number(process.versions.node.split(".")[0]);
const flags = {
  ws: major < 22 ? ["--experimental-websocket"] : [],
  rest: major < 22 ? [] : ["--no-experimental-websocket"],
};

/** node runs code as an ES module in clients/js (so "@atasks/client" resolves to this package). */
function node(args, code) {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [...args, "--input-type=module", "--eval", code],
      { cwd: pkgDir, timeout: 60_000, env: { ...process.env, NODE_OPTIONS: "" } },
      (err, stdout, stderr) => resolve({ err, stdout, stderr }),
    );
  });
}

let gw;
before(async () => {
  gw = await startGateway();
});
after(async () => {
  await gw?.stop();
});

describe("README.md", () => {
  const blocks = snippets(readFileSync(join(pkgDir, "README.md"), "utf8"));
  const program = blocks.join("\n");

  it("has the snippets of its sections, one program that closes its client", () => {
    assert.ok(blocks.length >= 5, `${blocks.length} js blocks`);
    assert.match(program, /^import \{ AtasksClient, AtasksError \} from "@atasks\/client";$/m);
    for (const api of ["client.call(", "client.start(", "Promise.all(", "signal:", "AbortController", "instanceof AtasksError", "client.close()"]) {
      assert.ok(program.includes(api), `the README shows ${api}`);
    }
    assert.equal(program.split(README_URL).length, 2, `${README_URL} once, where the test puts its gateway`);
    assert.ok(expectedOutput(program).length > 0);
  });

  for (const transport of ["ws", "rest"]) {
    it(`runs as written over ${transport === "ws" ? "WebSocket" : "REST"}, printing what it says`, async () => {
      const probe = await node(flags[transport], "console.log(typeof WebSocket)");
      assert.equal(probe.stdout.trim(), transport === "ws" ? "function" : "undefined", "the transport the run means");
      const { err, stdout, stderr } = await node(flags[transport], program.replace(README_URL, gw.url));
      const numbered = program
        .split("\n")
        .map((l, i) => `${String(i + 1).padStart(3)}  ${l}`)
        .join("\n");
      assert.ifError(err && new Error(`the README program failed: ${err.message}\n${stderr}\nprogram:\n${numbered}`));
      assert.deepEqual(stdout.trimEnd().split("\n"), expectedOutput(program), `stdout:\n${stdout}\nstderr:\n${stderr}`);
    });
  }
});
