// Calls of demo.add as a program typed by openapi-typescript writes them:
// what fits the task's input schema compiles, what does not is an error.
import type { paths } from "./tasks";

type Add = paths["/v1/ns/default/tasks/demo.add"]["post"];
type AddInput = Add["requestBody"]["content"]["application/json"];
type AddResult = Add["responses"]["200"]["content"]["application/json"]["result"];

export async function add(base: string, input: AddInput): Promise<AddResult> {
  const res = await fetch(`${base}/v1/ns/default/tasks/demo.add`, { method: "POST", body: JSON.stringify(input) });
  const inv: Add["responses"]["200"]["content"]["application/json"] = await res.json();
  return inv.result;
}

export const fits: AddInput = { a: 2, b: 3 };
// @ts-expect-error b is required
export const missing: AddInput = { a: 2 };
// @ts-expect-error a is an integer, not a string
export const wrongType: AddInput = { a: "2", b: 3 };
// @ts-expect-error c is no field of demo.add's input
export const unknown: AddInput = { a: 2, b: 3, c: 4 };
export const sum: AddResult = 5;
// @ts-expect-error the result is a number
export const notASum: AddResult = "five";
