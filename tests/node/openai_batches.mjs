// The official openai package (Node) on the Batch API: upload a JSONL file, create a batch,
// wait for it, read its output and error files.
// Usage: node openai_batches.mjs <base_url> <api_key>; prints one JSON line.
import OpenAI, { toFile } from "openai";

const [baseURL, apiKey] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0 });

const line = (custom_id, content) => ({
  custom_id, method: "POST", url: "/v1/chat/completions",
  body: { model: "out-gpt", max_tokens: 10, messages: [{ role: "user", content }] },
});
const jsonl = [line("n1", "node one #words=2"), line("n2", "node bad #status=400"), line("n3", "node three #words=3")]
  .map((x) => JSON.stringify(x)).join("\n") + "\n";
const file = await client.files.create({ file: await toFile(Buffer.from(jsonl), "in.jsonl"), purpose: "batch" });
let batch = await client.batches.create({ input_file_id: file.id, endpoint: "/v1/chat/completions", completion_window: "24h" });
const deadline = Date.now() + 20000;
while (!["completed", "cancelled", "expired"].includes(batch.status) && Date.now() < deadline) {
  await new Promise((r) => setTimeout(r, 100));
  batch = await client.batches.retrieve(batch.id);
}
const lines = async (id) => (await (await client.files.content(id)).text()).trim().split("\n").map((x) => JSON.parse(x));
const output = await lines(batch.output_file_id);
const errors = await lines(batch.error_file_id);
const listed = [];
for await (const b of client.batches.list({ limit: 1 })) listed.push(b.id);
console.log(JSON.stringify({
  status: batch.status,
  counts: batch.request_counts,
  output: output.map((o) => [o.custom_id, o.response.status_code, o.response.body.choices[0].message.content]),
  errors: errors.map((e) => [e.custom_id, e.response.status_code]),
  listed,
  id: batch.id,
}));
