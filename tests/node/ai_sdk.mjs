// The Vercel AI SDK in its default mode: `openai(id)` calls the Responses API.
// Usage: node ai_sdk.mjs <base_url> <api_key> <model> <tag>; prints one JSON line.
// <tag> goes into the prompts, so the test can find them among the fake's requests.
import { createOpenAI } from "@ai-sdk/openai";
import { generateText, streamText } from "ai";

const [baseURL, apiKey, model, tag] = process.argv.slice(2);
const openai = createOpenAI({ baseURL, apiKey });

const generated = await generateText({ model: openai(model), prompt: `hello from node ${tag} #words=5` });
const streamed = streamText({ model: openai(model), prompt: `stream from node ${tag} #words=7` });
let text = "";
for await (const delta of streamed.textStream) text += delta;
const usage = await streamed.usage;
console.log(JSON.stringify({
  generated: { text: generated.text, usage: generated.usage, finishReason: generated.finishReason },
  streamed: { text, usage, finishReason: await streamed.finishReason },
}));
