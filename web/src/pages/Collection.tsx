import { useCallback, useEffect, useMemo, useRef, useState, type FormEvent } from "react";
import { Link, useParams, useSearchParams } from "react-router";
import { api, call, type Schemas } from "../api/client";
import { CursorPager } from "../api/paging";
import { Empty, ErrorNote, Loading, When } from "../components/ui";
import { useAsync, useTitle } from "../hooks";
import { useLiveEvents } from "../live";
import { MembersPanel } from "./Members";
import { RulesPanel } from "./Rules";

type Item = Schemas["Item"];
type Sort = "created_at" | "updated_at" | "title";

export const canWrite = (role: string | undefined) => role === "owner" || role === "editor";

/** Parse "a, b ,c" into trimmed, non-empty tags. */
export const parseTags = (s: string) =>
  s
    .split(",")
    .map((t) => t.trim())
    .filter(Boolean);

export function CollectionPage() {
  const { id = "" } = useParams();
  const [params, setParams] = useSearchParams();
  const tab = params.get("tab") ?? "items";
  const collection = useAsync(
    () => call(api.GET("/api/v1/collections/{id}", { params: { path: { id } } })),
    [id],
  );
  useTitle(collection.data?.name ?? "Collection");
  const role = collection.data?.role;

  if (collection.loading && !collection.data) return <Loading what="Loading the collection" />;
  if (collection.error) return <ErrorNote error={collection.error} />;
  const c = collection.data;
  if (!c) return null;

  const tabs: [string, string][] = [
    ["items", "Items"],
    ["tags", "Tags"],
    ["members", "Members"],
  ];
  if (role === "owner") tabs.push(["rules", "Rules"]);
  return (
    <section>
      <p className="crumbs">
        <Link to="/">Collections</Link> /
      </p>
      <h1>
        {c.name} <span className={`badge badge-${role}`}>{role}</span>
      </h1>
      {c.description && <p className="muted">{c.description}</p>}
      <nav className="tabs" aria-label="Collection sections">
        {tabs.map(([key, label]) => (
          <Link
            key={key}
            to={`?tab=${key}`}
            aria-current={tab === key ? "page" : undefined}
            className={tab === key ? "active" : undefined}
          >
            {label}
          </Link>
        ))}
      </nav>
      {tab === "items" && <ItemsPanel collectionId={id} role={role} />}
      {tab === "tags" && (
        <TagsPanel collectionId={id} onPick={(tag) => setParams({ tab: "items", tag })} />
      )}
      {tab === "members" && <MembersPanel collectionId={id} role={role} />}
      {tab === "rules" && role === "owner" && <RulesPanel collectionId={id} />}
    </section>
  );
}

function ItemsPanel({ collectionId, role }: { collectionId: string; role: string | undefined }) {
  const [params, setParams] = useSearchParams();
  const tag = params.get("tag") ?? "";
  const sort = (params.get("sort") ?? "created_at") as Sort;
  const order = params.get("order") === "asc" ? "asc" : "desc";
  const [items, setItems] = useState<Item[]>([]);
  const [done, setDone] = useState(false);
  const [loading, setLoading] = useState(false);
  const [error, setError] = useState<unknown>(null);

  const pager = useMemo(
    () =>
      new CursorPager<Item>(async (cursor) => {
        const query = { sort, order, limit: 50, ...(tag ? { tag } : {}), ...(cursor ? { cursor } : {}) } as const;
        return call(api.GET("/api/v1/collections/{id}/items", { params: { path: { id: collectionId }, query } }));
      }, (i) => i.id),
    [collectionId, tag, sort, order],
  );

  const more = useCallback(async () => {
    if (pager.done || pager.loading) return;
    setLoading(true);
    setError(null);
    try {
      await pager.more();
      setItems([...pager.items]);
      setDone(pager.done);
    } catch (err) {
      setError(err);
    } finally {
      setLoading(false);
    }
  }, [pager]);

  useEffect(() => {
    setItems([]);
    setDone(false);
    void more();
  }, [more]);

  // Infinite scroll: load the next page when the end of the list comes into view.
  const sentinel = useRef<HTMLDivElement>(null);
  useEffect(() => {
    const el = sentinel.current;
    if (!el || done || typeof IntersectionObserver === "undefined") return;
    const io = new IntersectionObserver((entries) => {
      if (entries.some((e) => e.isIntersecting)) void more();
    }, { rootMargin: "400px" });
    io.observe(el);
    return () => io.disconnect();
  }, [more, done, items.length]);

  // Live: new, changed and deleted items of this collection appear without reload.
  useLiveEvents(async (e) => {
    if (e.entity.type !== "item" || e.entity.collection_id !== collectionId) return;
    if (e.type === "ItemDeleted") {
      pager.remove(e.entity.id);
      setItems([...pager.items]);
      return;
    }
    const known = pager.items.some((i) => i.id === e.entity.id);
    if (e.type === "ItemUpdated" && !known) return;
    const { data } = await api.GET("/api/v1/items/{id}", { params: { path: { id: e.entity.id } } });
    if (!data || (tag && !data.tags.includes(tag))) return;
    pager.upsert(data, e.type === "ItemCreated" && order === "desc" && sort !== "title");
    setItems([...pager.items]);
  });

  const update = (key: string, value: string) => {
    const next = new URLSearchParams(params);
    if (value) next.set(key, value);
    else next.delete(key);
    setParams(next, { replace: true });
  };

  return (
    <div>
      {canWrite(role) && <NewItemForm collectionId={collectionId} onCreated={(item) => { pager.upsert(item); setItems([...pager.items]); }} />}
      <div className="toolbar" role="group" aria-label="Filter and sort items">
        <label>
          Tag
          <input
            type="search"
            defaultValue={tag}
            placeholder="any tag"
            onKeyDown={(e) => e.key === "Enter" && update("tag", e.currentTarget.value.trim().toLowerCase())}
            onBlur={(e) => update("tag", e.currentTarget.value.trim().toLowerCase())}
            key={tag}
          />
        </label>
        <label>
          Sort by
          <select value={sort} onChange={(e) => update("sort", e.target.value)}>
            <option value="created_at">Created</option>
            <option value="updated_at">Updated</option>
            <option value="title">Title</option>
          </select>
        </label>
        <label>
          Order
          <select value={order} onChange={(e) => update("order", e.target.value)}>
            <option value="desc">Descending</option>
            <option value="asc">Ascending</option>
          </select>
        </label>
        {tag && (
          <button type="button" className="secondary" onClick={() => update("tag", "")}>
            Clear tag “{tag}”
          </button>
        )}
      </div>
      <ErrorNote error={error}>
        <button type="button" onClick={() => void more()}>
          Try again
        </button>
      </ErrorNote>
      {items.length === 0 && done && !error && (
        <Empty>{tag ? `No items tagged “${tag}”.` : "No items yet."}</Empty>
      )}
      <ul className="items" aria-label="Items" aria-busy={loading}>
        {items.map((item) => (
          <li key={item.id} className="item">
            <Link to={`/items/${item.id}`} className="item-title">
              {item.title}
            </Link>
            {item.source_url && <span className="muted small url">{item.source_url}</span>}
            <div className="tags">
              {item.tags.map((t) => (
                <button type="button" key={t} className="tag" onClick={() => update("tag", t)} aria-label={`Filter by tag ${t}`}>
                  {t}
                </button>
              ))}
            </div>
            <span className="muted small">
              updated <When at={item.updated_at} />
            </span>
          </li>
        ))}
      </ul>
      {loading && <Loading what="Loading items" />}
      {!done && !loading && !error && (
        <button type="button" className="secondary" onClick={() => void more()}>
          Load more
        </button>
      )}
      <div ref={sentinel} aria-hidden="true" />
    </div>
  );
}

function NewItemForm({ collectionId, onCreated }: { collectionId: string; onCreated: (item: Item) => void }) {
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  async function submit(e: FormEvent<HTMLFormElement>) {
    e.preventDefault();
    const formEl = e.currentTarget;
    const form = new FormData(formEl);
    const source_url = String(form.get("source_url") ?? "").trim();
    const body = String(form.get("body") ?? "");
    setBusy(true);
    setError(null);
    try {
      const item = await call(
        api.POST("/api/v1/collections/{id}/items", {
          params: { path: { id: collectionId } },
          body: {
            title: String(form.get("title")),
            tags: parseTags(String(form.get("tags") ?? "")),
            ...(body ? { body } : {}),
            ...(source_url ? { source_url } : {}),
          },
        }),
      );
      formEl.reset();
      onCreated(item);
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  }
  return (
    <details className="new-item">
      <summary>Add an item</summary>
      <form onSubmit={submit} className="stack" aria-label="New item">
        <label>
          Title
          <input name="title" required maxLength={500} />
        </label>
        <label>
          Source URL <span className="muted">(optional)</span>
          <input name="source_url" type="url" placeholder="https://…" />
        </label>
        <label>
          Tags <span className="muted">(comma-separated)</span>
          <input name="tags" />
        </label>
        <label>
          Body
          <textarea name="body" rows={4} />
        </label>
        <ErrorNote error={error} />
        <button type="submit" disabled={busy}>
          Add item
        </button>
      </form>
    </details>
  );
}

function TagsPanel({ collectionId, onPick }: { collectionId: string; onPick: (tag: string) => void }) {
  const tags = useAsync(async () => {
    const out: Schemas["TagCount"][] = [];
    let cursor: string | undefined;
    do {
      const page = await call(
        api.GET("/api/v1/collections/{id}/tags", { params: { path: { id: collectionId }, query: { limit: 200, cursor } } }),
      );
      out.push(...page.items);
      cursor = page.next_cursor ?? undefined;
    } while (cursor);
    return out;
  }, [collectionId]);
  if (tags.loading && !tags.data) return <Loading what="Loading tags" />;
  if (tags.error) return <ErrorNote error={tags.error} />;
  if (!tags.data?.length) return <Empty>No tags yet: tags appear here once items carry them.</Empty>;
  return (
    <ul className="tag-counts" aria-label="Tags">
      {tags.data.map((t) => (
        <li key={t.name}>
          <button type="button" className="tag" onClick={() => onPick(t.name)}>
            {t.name} <span className="count">{t.count}</span>
          </button>
        </li>
      ))}
    </ul>
  );
}
