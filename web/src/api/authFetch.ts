import type { Session } from "./session";

/**
 * A `fetch` for openapi-fetch that signs requests with the session's access
 * token and, when the server answers 401, refreshes once and replays the
 * request. A second 401 (or a failed refresh) is returned to the caller.
 */
export function authenticatedFetch(session: Session, base: typeof fetch = fetch) {
  return async (request: Request): Promise<Response> => {
    const replay = request.clone();
    const token = await session.accessToken();
    if (token) request.headers.set("authorization", `Bearer ${token}`);
    const response = await base(request);
    if (response.status !== 401 || !token) return response;
    const fresh = await session.refresh(token);
    if (!fresh) return response;
    replay.headers.set("authorization", `Bearer ${fresh}`);
    return base(replay);
  };
}
