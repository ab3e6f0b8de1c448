import { useCallback, useEffect, useState, type FormEvent } from "react";
import { Link, useSearchParams } from "react-router";
import { api, call, type Schemas } from "../api/client";
import { Empty, ErrorNote, Loading, When } from "../components/ui";
import { useAsync, useTitle } from "../hooks";
import { useAuth } from "../auth";
import { allCollections } from "./Dashboard";

type Row = Schemas["AuditRecord"];
const ENTITY_TYPES = ["user", "collection", "membership", "item", "job", "workflow"];
const FILTERS = ["entity_type", "entity_id", "actor_user_id", "collection_id", "from", "to"] as const;

/** `datetime-local` value (reader's zone) → RFC 3339 UTC. */
const toRfc3339 = (local: string) => (local ? new Date(local).toISOString() : "");

export function AuditPage() {
  useTitle("Audit trail");
  const { me } = useAuth();
  const [params, setParams] = useSearchParams();
  const collections = useAsync(allCollections, []);
  const [rows, setRows] = useState<Row[] | null>(null);
  const [cursor, setCursor] = useState<string | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [loading, setLoading] = useState(false);
  const filterKey = FILTERS.map((f) => params.get(f) ?? "").join("|");

  const load = useCallback(
    async (after: string | null) => {
      const query: Record<string, string | number> = { limit: 50 };
      for (const f of FILTERS) {
        const v = params.get(f);
        if (v) query[f] = f === "from" || f === "to" ? toRfc3339(v) : v;
      }
      if (after) query.cursor = after;
      setLoading(true);
      setError(null);
      try {
        const page = await call(api.GET("/api/v1/audit", { params: { query } }));
        setRows((old) => (after && old ? [...old, ...page.items] : page.items));
        setCursor(page.next_cursor ?? null);
      } catch (err) {
        setError(err);
      } finally {
        setLoading(false);
      }
    },
    // eslint-disable-next-line react-hooks/exhaustive-deps
    [filterKey],
  );
  useEffect(() => void load(null), [load]);

  function apply(e: FormEvent<HTMLFormElement>) {
    e.preventDefault();
    const form = new FormData(e.currentTarget);
    const next = new URLSearchParams();
    for (const f of FILTERS) {
      const v = String(form.get(f) ?? "").trim();
      if (v) next.set(f, v);
    }
    setParams(next);
  }

  return (
    <section>
      <h1>Audit trail</h1>
      {me?.is_admin && <ChainStatus />}
      <form onSubmit={apply} className="filters" aria-label="Audit filters" key={filterKey}>
        <label>
          Entity type
          <select name="entity_type" defaultValue={params.get("entity_type") ?? ""}>
            <option value="">Any</option>
            {ENTITY_TYPES.map((t) => (
              <option key={t}>{t}</option>
            ))}
          </select>
        </label>
        <label>
          Entity id
          <input name="entity_id" defaultValue={params.get("entity_id") ?? ""} />
        </label>
        <label>
          Actor (user id)
          <input name="actor_user_id" defaultValue={params.get("actor_user_id") ?? ""} />
        </label>
        <label>
          Collection
          <select name="collection_id" defaultValue={params.get("collection_id") ?? ""}>
            <option value="">Any I can see</option>
            {collections.data?.map((c) => (
              <option key={c.id} value={c.id}>
                {c.name}
              </option>
            ))}
          </select>
        </label>
        <label>
          From
          <input type="datetime-local" name="from" defaultValue={params.get("from") ?? ""} />
        </label>
        <label>
          To <span className="muted">(exclusive)</span>
          <input type="datetime-local" name="to" defaultValue={params.get("to") ?? ""} />
        </label>
        <div className="actions">
          <button type="submit">Apply filters</button>
          <button type="button" className="secondary" onClick={() => setParams({})}>
            Clear
          </button>
        </div>
      </form>
      <ErrorNote error={error} />
      {rows === null && loading && <Loading what="Loading the audit trail" />}
      {rows?.length === 0 && <Empty>No audit rows match these filters.</Empty>}
      {rows && rows.length > 0 && (
        <div className="scroll-x">
          <table className="table" aria-label="Audit rows">
            <thead>
              <tr>
                <th scope="col">#</th>
                <th scope="col">Event</th>
                <th scope="col">When</th>
                <th scope="col">Actor</th>
                <th scope="col">Entity</th>
              </tr>
            </thead>
            <tbody>
              {rows.map((r) => (
                <tr key={r.sequence}>
                  <td>{r.sequence}</td>
                  <td>{r.type}</td>
                  <td>
                    <When at={r.occurred_at} />
                  </td>
                  <td className="mono small">{r.actor_user_id === me?.id ? "you" : (r.actor_user_id ?? "system")}</td>
                  <td className="small">
                    {r.entity.type}{" "}
                    <EntityLink type={r.entity.type} id={r.entity.id} collectionId={r.entity.collection_id} />
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      {cursor && !loading && (
        <button type="button" className="secondary" onClick={() => void load(cursor)}>
          Load older
        </button>
      )}
    </section>
  );
}

/** An entity's id, linked to its page where the UI has one. */
function EntityLink({ type, id, collectionId }: { type: string; id: string; collectionId?: string | null }) {
  const to =
    type === "item" ? `/items/${id}`
    : type === "collection" ? `/c/${id}`
    : type === "membership" && collectionId ? `/c/${collectionId}?tab=members`
    : type === "workflow" ? `/workflows/${id}`
    : null;
  return to ? (
    <Link className="mono" to={to}>
      {id}
    </Link>
  ) : (
    <span className="mono">{id}</span>
  );
}

function ChainStatus() {
  const verify = useAsync(() => call(api.GET("/api/v1/audit/verify")), []);
  if (verify.loading && !verify.data) return <Loading what="Verifying the hash chain" />;
  if (verify.error) return <ErrorNote error={verify.error} />;
  const v = verify.data;
  if (!v) return null;
  return (
    <div className={v.ok ? "notice ok" : "error"} role="status">
      {v.ok
        ? `Hash chain verified: ${v.checked} rows intact.`
        : `Hash chain broken at row ${v.first_bad_sequence}: ${v.reason}`}{" "}
      <button type="button" className="link" onClick={verify.reload}>
        Verify again
      </button>
    </div>
  );
}
