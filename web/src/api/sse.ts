// A Server-Sent Events client over fetch, so it can send the access token in
// the Authorization header (EventSource cannot; a token in the URL would sit
// in proxies' logs) and resume with `Last-Event-ID` after any disconnect.

export interface SseMessage {
  id: string | null;
  event: string;
  data: string;
}

/** Incremental parser of the `text/event-stream` format. */
export class SseParser {
  private buffer = "";
  private data: string[] = [];
  private event = "";
  private id: string | null = null;

  push(chunk: string): SseMessage[] {
    this.buffer += chunk;
    const out: SseMessage[] = [];
    let newline: number;
    while ((newline = this.buffer.search(/\r\n|\r|\n/)) >= 0) {
      const line = this.buffer.slice(0, newline);
      const width = this.buffer.startsWith("\r\n", newline) ? 2 : 1;
      // A lone trailing \r may be the first half of \r\n: wait for more.
      if (width === 1 && this.buffer[newline] === "\r" && newline === this.buffer.length - 1) break;
      this.buffer = this.buffer.slice(newline + width);
      if (line === "") {
        if (this.data.length > 0) {
          out.push({ id: this.id, event: this.event || "message", data: this.data.join("\n") });
        }
        this.data = [];
        this.event = "";
        continue;
      }
      if (line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "data") this.data.push(value);
      else if (field === "event") this.event = value;
      else if (field === "id" && !value.includes("\0")) this.id = value;
    }
    return out;
  }
}

export type StreamStatus = "connecting" | "open" | "retrying" | "closed";

export interface EventStreamOptions {
  url: string;
  /** The access token for each (re)connection; null stops the stream. */
  token: () => Promise<string | null>;
  /** Called when the server refused the token (401), before retrying. */
  refresh?: (stale: string) => Promise<string | null>;
  onMessage: (message: SseMessage) => void;
  onStatus?: (status: StreamStatus) => void;
  fetch?: typeof fetch;
  /** First reconnection delay; doubles up to maxDelayMs. */
  delayMs?: number;
  maxDelayMs?: number;
  sleep?: (ms: number, signal: AbortSignal) => Promise<void>;
}

const defaultSleep = (ms: number, signal: AbortSignal) =>
  new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => {
      clearTimeout(timer);
      resolve();
    });
  });

export class EventStream {
  /** The last event id seen; sent as `Last-Event-ID` when reconnecting. */
  lastEventId: string | null = null;
  private readonly abort = new AbortController();
  private running: Promise<void> | null = null;

  constructor(private readonly options: EventStreamOptions) {}

  start(): Promise<void> {
    this.running ??= this.loop();
    return this.running;
  }

  close(): void {
    this.abort.abort();
    this.options.onStatus?.("closed");
  }

  private async loop(): Promise<void> {
    const o = this.options;
    const doFetch = o.fetch ?? fetch;
    const sleep = o.sleep ?? defaultSleep;
    const base = o.delayMs ?? 1000;
    const max = o.maxDelayMs ?? 30_000;
    let delay = base;
    while (!this.abort.signal.aborted) {
      o.onStatus?.("connecting");
      try {
        let token = await o.token();
        if (!token) break;
        let response = await doFetch(o.url, this.request(token));
        if (response.status === 401 && o.refresh) {
          await response.body?.cancel();
          token = await o.refresh(token);
          if (!token) break;
          response = await doFetch(o.url, this.request(token));
        }
        if (response.ok && response.body) {
          o.onStatus?.("open");
          delay = base;
          await this.read(response.body);
        } else {
          await response.body?.cancel();
          if (response.status === 401) break;
        }
      } catch {
        // Network failure or abort: retry below unless closed.
      }
      if (this.abort.signal.aborted) break;
      o.onStatus?.("retrying");
      await sleep(delay, this.abort.signal);
      delay = Math.min(delay * 2, max);
    }
    o.onStatus?.("closed");
  }

  private request(token: string): RequestInit {
    const headers: Record<string, string> = {
      accept: "text/event-stream",
      authorization: `Bearer ${token}`,
    };
    if (this.lastEventId !== null) headers["last-event-id"] = this.lastEventId;
    return { headers, signal: this.abort.signal, cache: "no-store" };
  }

  private async read(body: ReadableStream<Uint8Array>): Promise<void> {
    const parser = new SseParser();
    const decoder = new TextDecoder();
    const reader = body.getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return;
      for (const message of parser.push(decoder.decode(value, { stream: true }))) {
        if (message.id !== null) this.lastEventId = message.id;
        this.options.onMessage(message);
      }
    }
  }
}
