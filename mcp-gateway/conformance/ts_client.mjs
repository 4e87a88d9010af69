// A TypeScript-SDK MCP client at its defaults (streamable HTTP, protocol 2025-11-25, one session),
// driven line by line by the gateway's tests: `node ts_client.mjs URL`, then commands on stdin,
// one JSON answer per line on stdout.
//   list                      -> {"tools": [names]}
//   call NAME JSON_ARGUMENTS  -> {"isError": bool, "structured": ..., "text": [..]}
//   changes                   -> {"changes": n}  (tools/list_changed notifications so far)
//   session                   -> {"session": id}
// A failing command answers {"error": message}; the client keeps its session throughout.
import { createInterface } from "node:readline";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { ToolListChangedNotificationSchema } from "@modelcontextprotocol/sdk/types.js";

const url = process.argv[2];
const client = new Client({ name: "mcp-gateway-tests-ts", version: "1.0.0" });
let changes = 0;
client.setNotificationHandler(ToolListChangedNotificationSchema, () => {
  changes += 1;
});
const transport = new StreamableHTTPClientTransport(new URL(url));
await client.connect(transport);

const answer = (value) => process.stdout.write(`${JSON.stringify(value)}\n`);
const commands = {
  async list() {
    const { tools } = await client.listTools();
    return { tools: tools.map((t) => t.name) };
  },
  async call(name, args) {
    // The SDK validates structuredContent against the tool's outputSchema itself.
    const result = await client.callTool({ name, arguments: JSON.parse(args || "{}") });
    return {
      isError: Boolean(result.isError),
      structured: result.structuredContent ?? null,
      text: result.content.filter((c) => c.type === "text").map((c) => c.text),
    };
  },
  async changes() {
    return { changes };
  },
  async session() {
    return { session: transport.sessionId ?? null };
  },
};

answer({ ready: true, protocolVersion: transport.protocolVersion ?? null });
for await (const line of createInterface({ input: process.stdin })) {
  const [command, name, ...rest] = line.trim().split(" ");
  if (!command) continue;
  if (command === "quit") break;
  try {
    const run = commands[command];
    if (!run) throw new Error(`unknown command ${command}`);
    answer(await run(name, rest.join(" ")));
  } catch (error) {
    answer({ error: String(error?.message ?? error) });
  }
}
await client.close();
