// The official openai package (Node) on the Responses API: create, a stream, and
// previous_response_id across two providers.
// Usage: node openai_responses.mjs <base_url> <api_key> <tag>; prints one JSON line.
import OpenAI from "openai";

const [baseURL, apiKey, tag] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0 });

const first = await client.responses.create({ model: "test-claude", input: `node first ${tag} #words=3` });
const second = await client.responses.create({ model: "test-gpt", input: `node second ${tag} #words=2`, previous_response_id: first.id });
const stream = await client.responses.create({ model: "test-gpt", input: `node stream ${tag} #words=4`, stream: true });
let text = "";
let completed = null;
for await (const event of stream) {
  if (event.type === "response.output_text.delta") text += event.delta;
  if (event.type === "response.completed") completed = event.response;
}
let notFound = null;
try {
  await client.responses.retrieve("resp_does_not_exist");
} catch (err) {
  notFound = { status: err.status, isNotFound: err instanceof OpenAI.NotFoundError };
}
const stored = await client.responses.retrieve(second.id);
console.log(JSON.stringify({
  first: first.output_text,
  second: { text: second.output_text, previous: second.previous_response_id, stored: stored.output_text },
  streamed: { text, usage: completed && completed.usage },
  notFound,
}));
