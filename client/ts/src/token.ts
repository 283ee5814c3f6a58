/** The cookie a browser session carries its token in. */
export const SESSION_COOKIE = "aura_session";

/** The value of an authorization header for a token: `Bearer <token>`. */
export function bearer(token: string): string {
  return `Bearer ${token}`;
}

/**
 * The token of a request: from `authorization: Bearer <token>` (scheme case-insensitive),
 * else from the `aura_session` cookie. Pass the raw header values; a list of Cookie
 * headers is searched in order.
 */
export function tokenFromHeaders(
  authorization: string | null | undefined,
  cookie: string | readonly string[] | null | undefined,
): string | undefined {
  const value = authorization?.trim() ?? "";
  const space = value.indexOf(" ");
  if (space > 0 && value.slice(0, space).toLowerCase() === "bearer") {
    const token = value.slice(space + 1).trim();
    if (token !== "") {
      return token;
    }
  }
  const cookies = typeof cookie === "string" ? [cookie] : (cookie ?? []);
  for (const header of cookies) {
    for (const pair of header.split(";")) {
      const eq = pair.indexOf("=");
      if (eq < 0 || pair.slice(0, eq).trim() !== SESSION_COOKIE) {
        continue;
      }
      const token = pair.slice(eq + 1).trim().replace(/^"+|"+$/g, "");
      if (token !== "") {
        return token;
      }
    }
  }
  return undefined;
}

/** Headers as Node's http module (`IncomingHttpHeaders`) or the Fetch API (`Headers`) has them. */
export type RequestHeaders =
  | { get(name: string): string | null }
  | Record<string, string | string[] | undefined>;

/** The token of an HTTP request, from its headers (see tokenFromHeaders). */
export function tokenFromRequest(request: { headers: RequestHeaders }): string | undefined {
  const headers = request.headers;
  if (typeof headers.get === "function") {
    const fetchHeaders = headers as { get(name: string): string | null };
    return tokenFromHeaders(fetchHeaders.get("authorization"), fetchHeaders.get("cookie"));
  }
  const nodeHeaders = headers as Record<string, string | string[] | undefined>;
  const authorization = nodeHeaders["authorization"];
  return tokenFromHeaders(
    Array.isArray(authorization) ? authorization[0] : authorization,
    nodeHeaders["cookie"],
  );
}
