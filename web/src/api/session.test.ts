import { describe, expect, it, vi } from "vitest";
import { authenticatedFetch } from "./authFetch";
import { memoryTokenStore, Session, type TokenPair } from "./session";

const pair = (n: number, expiresIn = 900): TokenPair => ({
  access_token: `access-${n}`,
  refresh_token: `refresh-${n}`,
  expires_in: expiresIn,
});

describe("Session", () => {
  it("reuses a fresh access token and refreshes one about to expire", async () => {
    let now = 0;
    const refresher = vi.fn(async () => pair(2));
    const session = new Session(memoryTokenStore(), refresher, undefined, () => now);
    session.begin(pair(1, 60));
    expect(await session.accessToken()).toBe("access-1");
    now = 40_000; // within 30 s of expiry
    expect(await session.accessToken()).toBe("access-2");
    expect(refresher).toHaveBeenCalledWith("refresh-1");
  });

  it("rotates once for concurrent callers and keeps the new refresh token", async () => {
    const store = memoryTokenStore("refresh-1");
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const refresher = vi.fn(async () => {
      await gate;
      return pair(2);
    });
    const session = new Session(store, refresher);
    const calls = [session.accessToken(), session.accessToken(), session.refresh(null)];
    release();
    expect(await Promise.all(calls)).toEqual(["access-2", "access-2", "access-2"]);
    expect(refresher).toHaveBeenCalledTimes(1);
    expect(store.get()).toBe("refresh-2");
  });

  it("does not refresh again when the stale token was already replaced", async () => {
    const refresher = vi.fn(async () => pair(3));
    const session = new Session(memoryTokenStore(), refresher);
    session.begin(pair(2));
    expect(await session.refresh("access-1")).toBe("access-2");
    expect(refresher).not.toHaveBeenCalled();
  });

  it("ends the session and tells listeners when the refresh is rejected", async () => {
    const store = memoryTokenStore("refresh-1");
    const session = new Session(store, async () => "rejected");
    const expired = vi.fn();
    session.onExpired(expired);
    expect(await session.accessToken()).toBeNull();
    expect(expired).toHaveBeenCalledTimes(1);
    expect(store.get()).toBeNull();
    expect(session.active).toBe(false);
  });

  it("uses the token another tab stored while waiting for the lock", async () => {
    const store = memoryTokenStore("refresh-1");
    const seen: string[] = [];
    const refresher = async (t: string) => {
      seen.push(t);
      return pair(3);
    };
    // The lock is held by another tab that rotates refresh-1 → refresh-2.
    const lock = async <T,>(task: () => Promise<T>) => {
      store.set("refresh-2");
      return task();
    };
    const session = new Session(store, refresher, lock);
    expect(await session.accessToken()).toBe("access-3");
    expect(seen).toEqual(["refresh-2"]);
  });

  it("keeps the session when the refresh fails on the network", async () => {
    const store = memoryTokenStore("refresh-1");
    const session = new Session(store, async () => {
      throw new TypeError("network down");
    });
    await expect(session.accessToken()).rejects.toThrow("network down");
    expect(store.get()).toBe("refresh-1");
  });
});

describe("authenticatedFetch", () => {
  it("signs requests, refreshes on 401 and replays the request with its body", async () => {
    const session = new Session(memoryTokenStore(), async () => pair(2));
    session.begin(pair(1));
    const seen: { auth: string | null; body: string }[] = [];
    const base = vi.fn(async (req: Request) => {
      seen.push({ auth: req.headers.get("authorization"), body: await req.text() });
      return new Response(null, { status: seen.length === 1 ? 401 : 200 });
    });
    const f = authenticatedFetch(session, base as unknown as typeof fetch);
    const res = await f(new Request("http://atlas.test/api/v1/x", { method: "POST", body: "{\"a\":1}" }));
    expect(res.status).toBe(200);
    expect(seen).toEqual([
      { auth: "Bearer access-1", body: "{\"a\":1}" },
      { auth: "Bearer access-2", body: "{\"a\":1}" },
    ]);
  });

  it("returns the 401 when the session cannot be refreshed", async () => {
    const session = new Session(memoryTokenStore(), async () => "rejected");
    session.begin(pair(1));
    const base = vi.fn(async () => new Response(null, { status: 401 }));
    const res = await authenticatedFetch(session, base as unknown as typeof fetch)(new Request("http://atlas.test/"));
    expect(res.status).toBe(401);
    expect(base).toHaveBeenCalledTimes(1);
  });
});
