// Publish a MindBus command with node-redis and wait for its result on a private reply stream.
//
//   node publish.mjs [role] [type] [data-json]
//
// Environment: REDIS_URL (default redis://127.0.0.1:6379; a Redis Cluster node works too),
// MINDBUS_PREFIX (default mindbus).
// Prints the result entry's fields as one JSON object.
import { randomUUID } from "node:crypto";
import { createClient, createCluster } from "redis";

const [role = "echo", type = "echo.say", data = '{"text":"hi from node"}'] = process.argv.slice(2);
const prefix = process.env.MINDBUS_PREFIX ?? "mindbus";
const url = process.env.REDIS_URL ?? "redis://127.0.0.1:6379";

/** A client of the Redis at `url`, or of its cluster when it is a cluster node. */
async function connect(url) {
  const client = createClient({ url });
  await client.connect();
  if (!(await client.info("cluster")).includes("cluster_enabled:1")) {
    return client;
  }
  await client.quit();
  const cluster = createCluster({ rootNodes: [{ url }] });
  await cluster.connect();
  return cluster;
}

const client = await connect(url);

const id = randomUUID();
// In the role's hash tag, so on Redis Cluster it is in the slot of the role's streams.
const replyto = `${prefix}:reply:{${role}}:${id}`;
// Only `type` is required; `id` and `replyto` let us wait on our own key.
await client.xAdd(`${prefix}:cmd:{${role}}`, "*", { id, type, source: "urn:example:node", data, replyto });
const answer = await client.xRead({ key: replyto, id: "0-0" }, { COUNT: 1, BLOCK: 30000 });
await client.del(replyto);
await client.quit();
if (!answer) {
  console.error(`no result for ${id}`);
  process.exit(2);
}
const result = answer[0].messages[0].message;
console.log(JSON.stringify(result));
process.exit(result.status === "completed" ? 0 : 1);
