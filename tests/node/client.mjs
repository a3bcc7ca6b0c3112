// A Node client configured like the README says: HTTPS_PROXY + NODE_EXTRA_CA_CERTS.
// Node 20's built-in fetch ignores HTTPS_PROXY, so undici's EnvHttpProxyAgent routes it.
import { EnvHttpProxyAgent, setGlobalDispatcher } from "undici";

setGlobalDispatcher(new EnvHttpProxyAgent());

const response = await fetch("https://api.openai.com/v1/chat/completions", {
  method: "POST",
  headers: { "content-type": "application/json", authorization: `Bearer ${process.env.OPENAI_API_KEY}` },
  body: JSON.stringify({ model: "gpt-4o-mini", messages: [{ role: "user", content: process.argv[2] }] }),
});
const body = await response.json();
console.log(response.headers.get("x-provider-cache"), body.id, body.choices[0].message.content);
