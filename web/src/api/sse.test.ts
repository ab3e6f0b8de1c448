import { describe, expect, it, vi } from "vitest";
import { EventStream, SseParser, type SseMessage } from "./sse";

const encoder = new TextEncoder();

/** A response whose body yields `chunks`, then ends (a dropped connection). */
function streamResponse(chunks: string[], status = 200): Response {
  const body = new ReadableStream<Uint8Array>({
    start(controller) {
      for (const c of chunks) controller.enqueue(encoder.encode(c));
      controller.close();
    },
  });
  return new Response(body, { status, headers: { "content-type": "text/event-stream" } });
}

describe("SseParser", () => {
  it("parses ids, event types, multi-line data and comments across chunk borders", () => {
    const p = new SseParser();
    expect(p.push(": keep-alive\n\nid: 7\nevent: ItemCreated\ndata: {\"a\"")).toEqual([]);
    expect(p.push(":1}\n\r\ndata: one\ndata: two\r\n\n")).toEqual([
      { id: "7", event: "ItemCreated", data: "{\"a\":1}" },
      { id: "7", event: "message", data: "one\ntwo" },
    ]);
  });
});

describe("EventStream", () => {
  it("reconnects after a drop with Last-Event-ID and backs off", async () => {
    const requests: (string | null)[] = [];
    const delays: number[] = [];
    const got: SseMessage[] = [];
    let stream!: EventStream;
    const responses = [
      () => streamResponse(["id: 1\nevent: A\ndata: x\n\n", "id: 2\nevent: B\ndata: y\n\n"]),
      () => {
        throw new TypeError("connection refused");
      },
      () => streamResponse(["id: 3\nevent: C\ndata: z\n\n"]),
    ];
    const fetchMock = vi.fn(async (_url: string | URL | Request, init?: RequestInit) => {
      requests.push(new Headers(init?.headers).get("last-event-id"));
      const next = responses.shift();
      if (!next) {
        stream.close();
        throw new DOMException("aborted", "AbortError");
      }
      return next();
    });
    stream = new EventStream({
      url: "/api/v1/events/stream",
      token: async () => "t",
      onMessage: (m) => got.push(m),
      fetch: fetchMock as unknown as typeof fetch,
      delayMs: 10,
      sleep: async (ms) => void delays.push(ms),
    });
    await stream.start();
    expect(got.map((m) => m.id)).toEqual(["1", "2", "3"]);
    expect(requests).toEqual([null, "2", "2", "3"]);
    // 10 after the first drop, 20 after the failed connect, back to 10 after a good one.
    expect(delays).toEqual([10, 20, 10]);
  });

  it("refreshes the token once on 401 and stops when that fails", async () => {
    const auth: (string | null)[] = [];
    const fetchMock = vi.fn(async (_u: string | URL | Request, init?: RequestInit) => {
      auth.push(new Headers(init?.headers).get("authorization"));
      return new Response(null, { status: 401 });
    });
    const refresh = vi.fn(async () => null);
    const stream = new EventStream({
      url: "/s",
      token: async () => "old",
      refresh,
      onMessage: () => {},
      fetch: fetchMock as unknown as typeof fetch,
      sleep: async () => {},
    });
    await stream.start();
    expect(auth).toEqual(["Bearer old"]);
    expect(refresh).toHaveBeenCalledWith("old");
  });
});
