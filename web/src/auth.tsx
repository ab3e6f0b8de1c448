import { createContext, useCallback, useContext, useEffect, useMemo, useState, type ReactNode } from "react";
import { Navigate, useLocation, useNavigate } from "react-router";
import { api, call, session, type Schemas } from "./api/client";
import type { TokenPair } from "./api/session";
import { Loading } from "./components/ui";

export type Me = Schemas["User"];

interface AuthState {
  me: Me | null;
  /** The session was checked (a stored refresh token tried) at start. */
  ready: boolean;
  signIn: (email: string, password: string) => Promise<void>;
  register: (email: string, password: string, displayName: string) => Promise<void>;
  signOut: () => Promise<void>;
}

const AuthContext = createContext<AuthState | null>(null);

export function useAuth(): AuthState {
  const ctx = useContext(AuthContext);
  if (!ctx) throw new Error("useAuth outside AuthProvider");
  return ctx;
}

export function AuthProvider({ children }: { children: ReactNode }) {
  const [me, setMe] = useState<Me | null>(null);
  const [ready, setReady] = useState(!session.active);
  const navigate = useNavigate();
  const location = useLocation();

  const loadMe = useCallback(async () => {
    setMe(await call(api.GET("/api/v1/auth/me")));
  }, []);

  useEffect(() => {
    if (!session.active) return;
    loadMe()
      .catch(() => setMe(null))
      .finally(() => setReady(true));
  }, [loadMe]);

  // A rejected refresh ends the session: back to sign-in, remembering the page.
  useEffect(
    () =>
      session.onExpired(() => {
        setMe(null);
        const next = location.pathname + location.search;
        navigate(`/signin?expired=1&next=${encodeURIComponent(next)}`, { replace: true });
      }),
    [navigate, location],
  );

  const state = useMemo<AuthState>(
    () => ({
      me,
      ready,
      async signIn(email, password) {
        const pair = await call(api.POST("/api/v1/auth/login", { body: { email, password } }));
        session.begin(pair as TokenPair);
        await loadMe();
      },
      async register(email, password, displayName) {
        const body = { email, password, ...(displayName ? { display_name: displayName } : {}) };
        const pair = await call(api.POST("/api/v1/auth/register", { body }));
        session.begin(pair as TokenPair);
        await loadMe();
      },
      async signOut() {
        const token = await session.accessToken().catch(() => null);
        const refresh = session.end();
        setMe(null);
        if (refresh && token) {
          await fetch("/api/v1/auth/logout", {
            method: "POST",
            headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
            body: JSON.stringify({ refresh_token: refresh }),
          }).catch(() => undefined);
        }
      },
    }),
    [me, ready, loadMe],
  );
  return <AuthContext.Provider value={state}>{children}</AuthContext.Provider>;
}

/** Renders `children` for a signed-in user; otherwise goes to sign-in and back. */
export function RequireAuth({ children }: { children: ReactNode }) {
  const { me, ready } = useAuth();
  const location = useLocation();
  if (!ready) return <Loading what="Restoring your session" />;
  if (!me) {
    const next = location.pathname + location.search;
    return <Navigate to={`/signin?next=${encodeURIComponent(next)}`} replace />;
  }
  return <>{children}</>;
}
