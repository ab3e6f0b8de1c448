/**
 * Typed client for the Atlas HTTP API. `schema.d.ts` is generated from the
 * server's OpenAPI document (`atlas openapi`) by `npm run generate-client`
 * in `web/`; this file only names the pieces callers use.
 */
import createClient, { type ClientOptions } from "openapi-fetch";
import type { components, paths } from "./schema";

export type { components, paths };

/** Every schema of the API by name, e.g. `Schemas["Item"]`. */
export type Schemas = components["schemas"];

/** The error body of every non-2xx response. */
export type ApiErrorBody = Schemas["ErrorBody"];

/** A client for `baseUrl` (the server's origin; paths start with `/api/v1`). */
export function createAtlasClient(options: ClientOptions = {}) {
  return createClient<paths>(options);
}

export type AtlasClient = ReturnType<typeof createAtlasClient>;
