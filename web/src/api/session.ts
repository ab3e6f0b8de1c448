// The signed-in session: a short-lived access token kept in memory and the
// refresh token kept in a TokenStore (localStorage in the browser; see
// docs/web-ui.md for why). Refreshes are single-flight within a tab and
// serialized across tabs by a lock, because the server rotates refresh
// tokens and treats a second use of an old one as theft (it revokes the
// whole family, signing every tab out).

export interface TokenPair {
  access_token: string;
  refresh_token: string;
  /** Seconds until the access token expires. */
  expires_in: number;
}

/** Where the refresh token lives between page loads. */
export interface TokenStore {
  get(): string | null;
  set(token: string | null): void;
}

/**
 * Exchanges a refresh token for a new pair. Resolves `"rejected"` when the
 * server refused it (401: expired, revoked, reused); throws on network
 * trouble, which leaves the session as it is.
 */
export type Refresher = (refreshToken: string) => Promise<TokenPair | "rejected">;

/** Runs `task` while holding the cross-tab refresh lock. */
export type Lock = <T>(task: () => Promise<T>) => Promise<T>;

/** Refresh this long before the access token's stated expiry. */
const EARLY_MS = 30_000;

export const noLock: Lock = (task) => task();

/** The Web Locks API where present (every current browser), else no lock. */
export const browserLock: Lock = <T,>(task: () => Promise<T>) =>
  typeof navigator !== "undefined" && navigator.locks
    ? (navigator.locks.request("atlas-session-refresh", task) as Promise<T>)
    : task();

export class Session {
  private access: string | null = null;
  private accessExpiresAt = 0;
  private inflight: Promise<string | null> | null = null;
  private expiredListeners = new Set<() => void>();

  constructor(
    private readonly store: TokenStore,
    private readonly refresher: Refresher,
    private readonly lock: Lock = noLock,
    private readonly now: () => number = Date.now,
  ) {}

  /** Whether a refresh token is held (the session may still turn out expired). */
  get active(): boolean {
    return this.store.get() !== null;
  }

  /** Adopt the tokens of a sign-in, registration or refresh. */
  begin(pair: TokenPair): void {
    this.access = pair.access_token;
    this.accessExpiresAt = this.now() + pair.expires_in * 1000;
    this.store.set(pair.refresh_token);
  }

  /** Forget both tokens (sign-out); returns the refresh token to revoke. */
  end(): string | null {
    const refresh = this.store.get();
    this.access = null;
    this.accessExpiresAt = 0;
    this.store.set(null);
    return refresh;
  }

  /** Called once when a refresh is rejected and the session is gone. */
  onExpired(listener: () => void): () => void {
    this.expiredListeners.add(listener);
    return () => this.expiredListeners.delete(listener);
  }

  /** A usable access token, refreshing first when it is (nearly) expired. */
  async accessToken(): Promise<string | null> {
    if (this.access && this.now() < this.accessExpiresAt - EARLY_MS) return this.access;
    return this.refresh(this.access);
  }

  /**
   * Get a new access token because `stale` (the one a request used) was
   * refused. If another caller already replaced it, that one is returned
   * without a second refresh.
   */
  refresh(stale: string | null): Promise<string | null> {
    if (this.access && this.access !== stale && this.now() < this.accessExpiresAt - EARLY_MS) {
      return Promise.resolve(this.access);
    }
    if (!this.inflight) {
      this.inflight = this.lock(() => this.rotate()).finally(() => {
        this.inflight = null;
      });
    }
    return this.inflight;
  }

  private async rotate(): Promise<string | null> {
    // Read inside the lock: another tab may have rotated it meanwhile.
    const refresh = this.store.get();
    if (!refresh) {
      this.access = null;
      return null;
    }
    const result = await this.refresher(refresh);
    if (result === "rejected") {
      // Only forget a token nobody replaced while the request was out.
      if (this.store.get() === refresh) this.end();
      else return this.rotate();
      for (const listener of [...this.expiredListeners]) listener();
      return null;
    }
    this.begin(result);
    return result.access_token;
  }
}

/** A TokenStore over `localStorage` (or an in-memory one without it). */
export function localTokenStore(key = "atlas.refresh_token"): TokenStore {
  let memory: string | null = null;
  const storage = typeof localStorage !== "undefined" ? localStorage : null;
  return {
    get: () => (storage ? storage.getItem(key) : memory),
    set: (token) => {
      if (!storage) memory = token;
      else if (token === null) storage.removeItem(key);
      else storage.setItem(key, token);
    },
  };
}

/** An in-memory TokenStore (tests, or a browser without storage). */
export function memoryTokenStore(initial: string | null = null): TokenStore {
  let token = initial;
  return { get: () => token, set: (t) => void (token = t) };
}
