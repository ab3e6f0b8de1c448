import { createContext, useContext, useEffect, useRef, useState, type ReactNode } from "react";
import { session } from "./api/client";
import { EventStream, type StreamStatus } from "./api/sse";
import { useAuth } from "./auth";

/** An event envelope as the realtime stream sends it. */
export interface Envelope {
  event_id: string;
  type: string;
  sequence?: number | null;
  occurred_at: string;
  actor_user_id?: string | null;
  entity: { type: string; id: string; collection_id?: string | null };
  data: Record<string, unknown>;
}

type Listener = (e: Envelope) => void;

interface Live {
  status: StreamStatus;
  subscribe: (listener: Listener) => () => void;
}

const LiveContext = createContext<Live>({ status: "closed", subscribe: () => () => {} });

/** One event stream per signed-in tab, shared by every page that listens. */
export function LiveProvider({ children }: { children: ReactNode }) {
  const { me } = useAuth();
  const [status, setStatus] = useState<StreamStatus>("closed");
  const listeners = useRef(new Set<Listener>());
  useEffect(() => {
    if (!me) return;
    const stream = new EventStream({
      url: "/api/v1/events/stream",
      token: () => session.accessToken(),
      refresh: (stale) => session.refresh(stale),
      onStatus: setStatus,
      onMessage: (m) => {
        let envelope: Envelope;
        try {
          envelope = JSON.parse(m.data) as Envelope;
        } catch {
          return;
        }
        for (const l of [...listeners.current]) l(envelope);
      },
    });
    void stream.start();
    return () => stream.close();
  }, [me]);
  const value = useRef<Live>({ status, subscribe: () => () => {} });
  value.current = {
    status,
    subscribe: (listener) => {
      listeners.current.add(listener);
      return () => listeners.current.delete(listener);
    },
  };
  return <LiveContext.Provider value={value.current}>{children}</LiveContext.Provider>;
}

/** Call `listener` for each event while mounted (the latest `listener` is used). */
export function useLiveEvents(listener: Listener): StreamStatus {
  const live = useContext(LiveContext);
  const latest = useRef(listener);
  latest.current = listener;
  useEffect(() => live.subscribe((e) => latest.current(e)), [live]);
  return live.status;
}
