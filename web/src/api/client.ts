import { createAtlasClient, type ApiErrorBody, type Schemas } from "@atlas/client";
import { authenticatedFetch } from "./authFetch";
import { browserLock, localTokenStore, Session, type TokenPair } from "./session";

export type { Schemas };

/** A non-2xx answer, carrying the server's `{code, message, details}`. */
export class ApiFailure extends Error {
  constructor(
    readonly status: number,
    readonly body: ApiErrorBody | undefined,
  ) {
    super(body?.message ?? `the server answered ${status}`);
  }

  get code(): string | undefined {
    return this.body?.code;
  }
}

/** What to tell the user about `error`: the server's message when it sent one. */
export function errorMessage(error: unknown): string {
  if (error instanceof ApiFailure) return error.message;
  if (error instanceof TypeError) return "Cannot reach the Atlas server. Check your connection and try again.";
  if (error instanceof Error) return error.message;
  return "Something went wrong.";
}

async function refresher(refreshToken: string): Promise<TokenPair | "rejected"> {
  const response = await fetch("/api/v1/auth/refresh", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ refresh_token: refreshToken }),
  });
  if (response.status === 401) return "rejected";
  if (!response.ok) throw new ApiFailure(response.status, await response.json().catch(() => undefined));
  return (await response.json()) as TokenPair;
}

export const session = new Session(localTokenStore(), refresher, browserLock);

/** The typed API client; every request carries the session's access token. */
export const api = createAtlasClient({ baseUrl: "", fetch: authenticatedFetch(session) });

/** Resolve an openapi-fetch result to its data, or throw an ApiFailure. */
export async function call<T>(
  request: Promise<{ data?: T; error?: unknown; response: Response }>,
): Promise<T> {
  const { data, error, response } = await request;
  if (!response.ok) throw new ApiFailure(response.status, error as ApiErrorBody | undefined);
  return data as T;
}
