import { useState, type FormEvent } from "react";
import { Link, useNavigate } from "react-router";
import { api, call, type Schemas } from "../api/client";
import { Empty, ErrorNote, Loading } from "../components/ui";
import { useAsync, useTitle } from "../hooks";

type Collection = Schemas["Collection"];

/** Every collection of the caller (the list is short; all pages are read). */
export async function allCollections(): Promise<Collection[]> {
  const out: Collection[] = [];
  let cursor: string | undefined;
  do {
    const page = await call(api.GET("/api/v1/collections", { params: { query: { limit: 200, cursor } } }));
    out.push(...page.items);
    cursor = page.next_cursor ?? undefined;
  } while (cursor);
  return out;
}

export function Dashboard() {
  useTitle("Collections");
  const collections = useAsync(allCollections, []);
  const navigate = useNavigate();
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);

  async function create(e: FormEvent<HTMLFormElement>) {
    e.preventDefault();
    const form = new FormData(e.currentTarget);
    const description = String(form.get("description") ?? "").trim();
    setBusy(true);
    setError(null);
    try {
      const created = await call(
        api.POST("/api/v1/collections", {
          body: { name: String(form.get("name")), ...(description ? { description } : {}) },
        }),
      );
      navigate(`/c/${created.id}`);
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  }

  return (
    <section>
      <h1>Your collections</h1>
      <form onSubmit={create} className="inline-form" aria-label="New collection">
        <label>
          Name
          <input name="name" required maxLength={200} />
        </label>
        <label>
          Description <span className="muted">(optional)</span>
          <input name="description" />
        </label>
        <button type="submit" disabled={busy}>
          Create collection
        </button>
      </form>
      <ErrorNote error={error} />
      {collections.loading && !collections.data && <Loading what="Loading your collections" />}
      <ErrorNote error={collections.error}>
        <button type="button" onClick={collections.reload}>
          Try again
        </button>
      </ErrorNote>
      {collections.data && collections.data.length === 0 && (
        <Empty>You have no collections yet. Create one above, or ask an owner to add you to theirs.</Empty>
      )}
      {collections.data && collections.data.length > 0 && (
        <ul className="cards">
          {collections.data.map((c) => (
            <li key={c.id} className="card">
              <Link to={`/c/${c.id}`} className="card-title">
                {c.name}
              </Link>
              <span className={`badge badge-${c.role}`}>{c.role}</span>
              {c.description && <p className="muted">{c.description}</p>}
              <p className="muted small">/{c.slug}</p>
            </li>
          ))}
        </ul>
      )}
    </section>
  );
}
