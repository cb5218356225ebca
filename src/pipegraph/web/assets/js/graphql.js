// A small GraphQL client: queries over HTTP POST, subscriptions over graphql-transport-ws.
// The API key (if the server needs one) lives in sessionStorage: entered once per browser session.

const KEY_STORAGE = "pipegraph.apiKey";
const ENDPOINT = new URL("graphql", document.baseURI);

/** A request that failed: `code` is the GraphQL error code (UNAUTHENTICATED, CONFLICT, …) or HTTP. */
export class GraphQLError extends Error {
  constructor(message, code, field = null) {
    super(message);
    this.code = code;
    this.field = field;
  }
}

export function apiKey() {
  return sessionStorage.getItem(KEY_STORAGE);
}

export function setApiKey(key) {
  if (key) sessionStorage.setItem(KEY_STORAGE, key.trim());
  else sessionStorage.removeItem(KEY_STORAGE);
}

function authorization() {
  const key = apiKey();
  return key ? `Bearer ${key}` : null;
}

/** Run a query or mutation; resolves with `data`, rejects with a GraphQLError. */
export async function request(query, variables = {}) {
  const headers = { "Content-Type": "application/json", Accept: "application/json" };
  const auth = authorization();
  if (auth) headers.Authorization = auth;
  let response;
  try {
    response = await fetch(ENDPOINT, { method: "POST", headers, body: JSON.stringify({ query, variables }) });
  } catch (error) {
    throw new GraphQLError(`The server cannot be reached (${error.message}).`, "NETWORK");
  }
  let body = null;
  try {
    body = await response.json();
  } catch {
    throw new GraphQLError(`The server answered HTTP ${response.status} without JSON.`, `HTTP_${response.status}`);
  }
  if (response.status === 401) {
    throw new GraphQLError(body?.errors?.[0]?.message ?? "authentication required", "UNAUTHENTICATED");
  }
  if (body.errors?.length) {
    const first = body.errors[0];
    throw new GraphQLError(first.message, first.extensions?.code ?? "ERROR", first.extensions?.field ?? null);
  }
  return body.data;
}

/** Raise the first user error of a mutation payload, so callers handle one failure path. */
export function checkPayload(payload) {
  const errors = payload?.userErrors ?? [];
  if (errors.length) {
    const first = errors[0];
    const where = first.field ? ` (${first.field})` : "";
    throw new GraphQLError(`${first.message}${where}`, first.code, first.field);
  }
  return payload;
}

/**
 * Subscribe over graphql-transport-ws. `onData(data)` gets each result; `onStatus(state)` gets
 * "connecting", "live" or "offline". Reconnects with a growing delay. With `positionOf(data)`, the
 * position of each result is kept and a reconnection subscribes with `after` set to the last one, so
 * nothing committed meanwhile is missed (also when the server ends the stream with RESUME_FROM).
 * `onComplete()` is called when the server ends the stream. Returns a function that stops it.
 */
export function subscribe(
  query,
  variables,
  { onData, onStatus = () => {}, onError = () => {}, onComplete = () => {}, positionOf = null },
) {
  let socket = null;
  let after = null;
  let stopped = false;
  let retryDelay = 500;
  let retryTimer = null;
  const id = "1";

  const connect = () => {
    onStatus("connecting");
    const url = new URL(ENDPOINT);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    socket = new WebSocket(url, "graphql-transport-ws");
    socket.addEventListener("open", () => {
      const auth = authorization();
      socket.send(JSON.stringify({ type: "connection_init", payload: auth ? { Authorization: auth } : {} }));
    });
    socket.addEventListener("message", (event) => {
      const message = JSON.parse(event.data);
      switch (message.type) {
        case "connection_ack":
          retryDelay = 500;
          socket.send(
            JSON.stringify({
              id,
              type: "subscribe",
              payload: { query, variables: after === null ? variables : { ...variables, after } },
            }),
          );
          onStatus("live");
          break;
        case "ping":
          socket.send(JSON.stringify({ type: "pong" }));
          break;
        case "next":
          if (message.payload.errors?.length) onError(new GraphQLError(message.payload.errors[0].message, "ERROR"));
          else {
            if (positionOf) after = positionOf(message.payload.data) ?? after;
            onData(message.payload.data);
          }
          break;
        case "complete":
          onComplete();
          break;
        case "error": {
          const first = message.payload?.[0];
          if (positionOf && first?.extensions?.code === "RESUME_FROM") {
            // The server could not go on: reconnect and continue from the position it names.
            after = first.extensions.position ?? after;
            socket.close(1000, "resume");
            break;
          }
          onError(new GraphQLError(first?.message ?? "subscription error", first?.extensions?.code ?? "ERROR"));
          break;
        }
        default:
          break;
      }
    });
    socket.addEventListener("close", () => {
      onStatus("offline");
      if (!stopped) {
        retryTimer = setTimeout(connect, retryDelay);
        retryDelay = Math.min(retryDelay * 2, 15000);
      }
    });
  };

  connect();
  return () => {
    stopped = true;
    clearTimeout(retryTimer);
    if (socket && socket.readyState <= WebSocket.OPEN) {
      if (socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify({ id, type: "complete" }));
      socket.close(1000, "done");
    }
  };
}
