// index.d.ts declares exactly the values index.js exports (`npm run
// typecheck` checks the rest of the types against their use).
import { it } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import * as client from "../index.js";

it("index.d.ts declares the values index.js exports", () => {
  const dts = readFileSync(new URL("../index.d.ts", import.meta.url), "utf8");
  const declared = [...dts.matchAll(/^export declare (?:class|function|const) (\w+)/gm)].map((m) => m[1]).sort();
  assert.deepEqual(declared, Object.keys(client).sort());
});
