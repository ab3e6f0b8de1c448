import { useEffect, useState } from "react";
import { Link, useSearchParams } from "react-router";
import { api, call, type Schemas } from "../api/client";
import { fragments } from "../api/highlight";
import { Empty, ErrorNote, Loading } from "../components/ui";
import { useAsync, useDebounced, useTitle } from "../hooks";
import { allCollections } from "./Dashboard";

type Hit = Schemas["SearchHit"];

/** A highlight snippet as text and <mark> elements; never parsed as HTML. */
function Highlighted({ snippet }: { snippet: string }) {
  return (
    <>
      {fragments(snippet).map((f, i) => (f.mark ? <mark key={i}>{f.text}</mark> : <span key={i}>{f.text}</span>))}
    </>
  );
}

export function SearchPage() {
  useTitle("Search");
  const [params, setParams] = useSearchParams();
  const [q, setQ] = useState(params.get("q") ?? "");
  const collectionId = params.get("collection") ?? "";
  const tags = params.get("tags") ?? "";
  const query = useDebounced(q.trim(), 250);
  const collections = useAsync(allCollections, []);
  const [hits, setHits] = useState<Hit[]>([]);
  const [cursor, setCursor] = useState<string | null>(null);
  const [total, setTotal] = useState<number | null>(null);
  const [loading, setLoading] = useState(false);
  const [error, setError] = useState<unknown>(null);

  const fetchPage = (after: string | null) =>
    call(
      api.GET("/api/v1/search/items", {
        params: {
          query: {
            q: query,
            limit: 20,
            ...(collectionId ? { collection_id: collectionId } : {}),
            ...(tags ? { tags } : {}),
            ...(after ? { cursor: after } : {}),
          },
        },
      }),
    );

  useEffect(() => {
    const next = new URLSearchParams(params);
    if (query) next.set("q", query);
    else next.delete("q");
    setParams(next, { replace: true });
    if (!query) {
      setHits([]);
      setTotal(null);
      setCursor(null);
      return;
    }
    let stale = false;
    setLoading(true);
    setError(null);
    fetchPage(null)
      .then((page) => {
        if (stale) return;
        setHits(page.items);
        setCursor(page.next_cursor ?? null);
        setTotal(page.total_estimate);
      })
      .catch((err: unknown) => !stale && setError(err))
      .finally(() => !stale && setLoading(false));
    return () => {
      stale = true;
    };
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [query, collectionId, tags]);

  async function more() {
    if (!cursor) return;
    setLoading(true);
    try {
      const page = await fetchPage(cursor);
      setHits((h) => [...h, ...page.items.filter((n) => !h.some((o) => o.item.id === n.item.id))]);
      setCursor(page.next_cursor ?? null);
    } catch (err) {
      setError(err);
    } finally {
      setLoading(false);
    }
  }

  const setFilter = (key: string, value: string) => {
    const next = new URLSearchParams(params);
    if (value) next.set(key, value);
    else next.delete(key);
    setParams(next, { replace: true });
  };

  return (
    <section>
      <h1>Search</h1>
      <form role="search" className="toolbar" onSubmit={(e) => e.preventDefault()}>
        <label className="grow">
          Search items
          <input
            type="search"
            value={q}
            onChange={(e) => setQ(e.target.value)}
            placeholder={'words, "a phrase", -exclude'}
            autoFocus
          />
        </label>
        <label>
          Collection
          <select value={collectionId} onChange={(e) => setFilter("collection", e.target.value)}>
            <option value="">All my collections</option>
            {collections.data?.map((c) => (
              <option key={c.id} value={c.id}>
                {c.name}
              </option>
            ))}
          </select>
        </label>
        <label>
          Tags <span className="muted">(all of, comma-separated)</span>
          <input
            defaultValue={tags}
            key={tags}
            onBlur={(e) => setFilter("tags", e.currentTarget.value.replace(/\s+/g, ""))}
            onKeyDown={(e) => e.key === "Enter" && setFilter("tags", e.currentTarget.value.replace(/\s+/g, ""))}
          />
        </label>
      </form>
      <ErrorNote error={error} />
      {!query && <Empty>Type to search the items of every collection you belong to.</Empty>}
      {query && total !== null && (
        <p className="muted" role="status">
          About {total} result{total === 1 ? "" : "s"}
        </p>
      )}
      {query && !loading && hits.length === 0 && !error && <Empty>No items match “{query}”.</Empty>}
      <ol className="results">
        {hits.map((h) => (
          <li key={h.item.id} className="item">
            <Link to={`/items/${h.item.id}`} className="item-title">
              {h.highlights.title ? <Highlighted snippet={h.highlights.title} /> : h.item.title}
            </Link>
            {h.highlights.body && (
              <p className="snippet">
                <Highlighted snippet={h.highlights.body} />
              </p>
            )}
            <div className="tags">
              {h.item.tags.map((t) => (
                <span key={t} className="tag">
                  {t}
                </span>
              ))}
            </div>
          </li>
        ))}
      </ol>
      {loading && <Loading what="Searching" />}
      {cursor && !loading && (
        <button type="button" className="secondary" onClick={() => void more()}>
          More results
        </button>
      )}
    </section>
  );
}
