// From the node's base URL to the WebSocket and SSE endpoints.

export interface Endpoints {
  /** `ws(s)://host:port[/base]/ws` */
  websocket: string;
  /** `http(s)://host:port[/base]/sse` */
  sse: string;
}

/**
 * Accepts a node's base URL (`https://push.example.com`, optionally with a
 * path prefix a proxy adds), a WebSocket URL (`wss://push.example.com/ws`)
 * or an SSE URL (`https://push.example.com/sse`); relative URLs resolve
 * against the page's location in a browser. Query parameters are kept.
 */
export function deriveEndpoints(url: string, base?: string): Endpoints {
  let u: URL;
  try {
    u = base === undefined ? new URL(url) : new URL(url, base);
  } catch {
    throw new TypeError(`fanout: not a URL: \`${url}\``);
  }
  let secure: boolean;
  switch (u.protocol) {
    case "http:":
    case "ws:":
      secure = false;
      break;
    case "https:":
    case "wss:":
      secure = true;
      break;
    default:
      throw new TypeError(`fanout: unsupported URL scheme \`${u.protocol}\` (use http(s):// or ws(s)://)`);
  }
  let path = u.pathname.replace(/\/+$/, "");
  if (path.endsWith("/ws")) path = path.slice(0, -3);
  else if (path.endsWith("/sse")) path = path.slice(0, -4);
  const rest = `${u.host}${path}`;
  const query = u.search;
  return {
    websocket: `${secure ? "wss" : "ws"}://${rest}/ws${query}`,
    sse: `${secure ? "https" : "http"}://${rest}/sse${query}`,
  };
}

/** Appends query parameters to a URL that may already have some. */
export function withQuery(url: string, params: Record<string, string | undefined>): string {
  const u = new URL(url);
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== "") u.searchParams.set(key, value);
  }
  return u.toString();
}
