import { useEffect, useState, type FormEvent } from "react";
import { Link, useNavigate, useParams } from "react-router";
import { ApiFailure, api, call, type Schemas } from "../api/client";
import { ErrorNote, Loading, When } from "../components/ui";
import { useAsync, useTitle } from "../hooks";
import { useLiveEvents } from "../live";
import { canWrite, parseTags } from "./Collection";

type Item = Schemas["Item"];

interface Draft {
  title: string;
  body: string;
  source_url: string;
  tags: string;
  metadata: string;
}

const draftOf = (item: Item): Draft => ({
  title: item.title,
  body: item.body ?? "",
  source_url: item.source_url ?? "",
  tags: item.tags.join(", "),
  metadata: JSON.stringify(item.metadata ?? {}, null, 2),
});

/**
 * An item, read-only for viewers. `/items/:id/edit` opens the editor for
 * anyone who asks: the server, not the page, decides who may write, and a
 * refusal shows its message.
 */
export function ItemPage({ editing = false }: { editing?: boolean }) {
  const { id = "" } = useParams();
  const navigate = useNavigate();
  const item = useAsync(() => call(api.GET("/api/v1/items/{id}", { params: { path: { id } } })), [id]);
  const collectionId = item.data?.collection_id;
  const collection = useAsync(
    async () =>
      collectionId ? call(api.GET("/api/v1/collections/{id}", { params: { path: { id: collectionId } } })) : undefined,
    [collectionId],
  );
  useTitle(item.data?.title ?? "Item");
  const [changedElsewhere, setChangedElsewhere] = useState(false);

  useLiveEvents((e) => {
    if (e.entity.id !== id) return;
    if (e.type === "ItemDeleted") navigate(collectionId ? `/c/${collectionId}` : "/");
    else if (e.type === "ItemUpdated" && !editing) item.reload();
    else if (e.type === "ItemUpdated" && typeof e.data.version === "number" && item.data && e.data.version > item.data.version)
      setChangedElsewhere(true);
  });

  if (item.loading && !item.data) return <Loading what="Loading the item" />;
  if (item.error) return <ErrorNote error={item.error} />;
  const it = item.data;
  if (!it) return null;
  const role = collection.data?.role;
  const writable = canWrite(role);

  return (
    <section>
      <p className="crumbs">
        <Link to="/">Collections</Link> / {collection.data && <Link to={`/c/${it.collection_id}`}>{collection.data.name}</Link>}
      </p>
      {editing ? (
        <Editor
          item={it}
          role={role}
          changedElsewhere={changedElsewhere}
          onSaved={(saved) => {
            setChangedElsewhere(false);
            item.set(saved);
            navigate(`/items/${saved.id}`);
          }}
          onReload={() => {
            setChangedElsewhere(false);
            item.reload();
          }}
        />
      ) : (
        <ItemView item={it} writable={writable} />
      )}
    </section>
  );
}

function ItemView({ item, writable }: { item: Item; writable: boolean }) {
  const navigate = useNavigate();
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  async function run(what: () => Promise<string>) {
    setBusy(true);
    setError(null);
    try {
      navigate(await what());
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  }
  const meta = Object.keys(item.metadata ?? {}).length > 0;
  return (
    <article>
      <h1>{item.title}</h1>
      <p className="muted small">
        version {item.version} · updated <When at={item.updated_at} /> · search index: {item.index_status}
      </p>
      {item.source_url && (
        <p>
          <a href={item.source_url} rel="noopener noreferrer nofollow" target="_blank">
            {item.source_url}
          </a>
        </p>
      )}
      <div className="tags">
        {item.tags.map((t) => (
          <Link key={t} className="tag" to={`/c/${item.collection_id}?tag=${encodeURIComponent(t)}`}>
            {t}
          </Link>
        ))}
      </div>
      {item.body && <div className="body">{item.body}</div>}
      {meta && (
        <details>
          <summary>Metadata</summary>
          <pre>{JSON.stringify(item.metadata, null, 2)}</pre>
        </details>
      )}
      {writable && (
        <div className="actions">
          <Link className="button" to={`/items/${item.id}/edit`}>
            Edit
          </Link>
          <button
            type="button"
            className="secondary"
            disabled={busy || !item.source_url}
            title={item.source_url ? undefined : "The item has no source URL"}
            onClick={() =>
              run(async () => {
                await call(api.POST("/api/v1/jobs", { body: { type: "ENRICH_URL", payload: { item_id: item.id } } }));
                return "/jobs";
              })
            }
          >
            Enrich from URL
          </button>
          <button
            type="button"
            className="secondary"
            disabled={busy}
            onClick={() =>
              run(async () => {
                const wf = await call(
                  api.POST("/api/v1/workflows", { body: { type: "ITEM_INTAKE", input: { item_id: item.id } } }),
                );
                return `/workflows/${wf.id}`;
              })
            }
          >
            Run intake workflow
          </button>
          <button
            type="button"
            className="danger"
            disabled={busy}
            onClick={() =>
              window.confirm(`Delete “${item.title}”?`) &&
              run(async () => {
                await call(api.DELETE("/api/v1/items/{id}", { params: { path: { id: item.id } } }));
                return `/c/${item.collection_id}`;
              })
            }
          >
            Delete
          </button>
        </div>
      )}
      <ErrorNote error={error} />
    </article>
  );
}

function Editor(props: {
  item: Item;
  role: string | undefined;
  changedElsewhere: boolean;
  onSaved: (item: Item) => void;
  onReload: () => void;
}) {
  const { item } = props;
  const [draft, setDraft] = useState<Draft>(() => draftOf(item));
  const [error, setError] = useState<unknown>(null);
  const [conflict, setConflict] = useState(false);
  const [busy, setBusy] = useState(false);
  useEffect(() => setDraft(draftOf(item)), [item]);

  async function save(overwrite: boolean) {
    setError(null);
    let metadata: Record<string, unknown>;
    try {
      metadata = JSON.parse(draft.metadata || "{}") as Record<string, unknown>;
      if (typeof metadata !== "object" || metadata === null || Array.isArray(metadata)) throw new Error();
    } catch {
      setError(new Error("Metadata must be a JSON object, e.g. {\"key\": \"value\"}."));
      return;
    }
    setBusy(true);
    try {
      const saved = await call(
        api.PATCH("/api/v1/items/{id}", {
          params: { path: { id: item.id }, header: overwrite ? {} : { "If-Match": `"${item.version}"` } },
          body: {
            title: draft.title,
            body: draft.body || null,
            source_url: draft.source_url.trim() || null,
            tags: parseTags(draft.tags),
            metadata,
          },
        }),
      );
      setConflict(false);
      props.onSaved(saved);
    } catch (err) {
      if (err instanceof ApiFailure && err.status === 412) setConflict(true);
      else setError(err);
    } finally {
      setBusy(false);
    }
  }

  const field = (key: keyof Draft) => ({
    value: draft[key],
    onChange: (e: { target: { value: string } }) => setDraft((d) => ({ ...d, [key]: e.target.value })),
  });

  return (
    <form
      className="stack"
      aria-label="Edit item"
      onSubmit={(e: FormEvent) => {
        e.preventDefault();
        void save(false);
      }}
    >
      <h1>Edit item</h1>
      {!canWrite(props.role) && props.role && (
        <p className="notice">Your role here is {props.role}: the server may refuse changes.</p>
      )}
      {(conflict || props.changedElsewhere) && (
        <div className="error" role="alert">
          <span>This item was changed elsewhere since you opened it.</span>
          <button type="button" onClick={props.onReload}>
            Reload
          </button>
          <button type="button" className="danger" onClick={() => void save(true)}>
            Overwrite
          </button>
        </div>
      )}
      <label>
        Title
        <input required maxLength={500} {...field("title")} />
      </label>
      <label>
        Source URL
        <input type="url" {...field("source_url")} />
      </label>
      <label>
        Tags <span className="muted">(comma-separated)</span>
        <input {...field("tags")} />
      </label>
      <label>
        Body
        <textarea rows={8} {...field("body")} />
      </label>
      <label>
        Metadata <span className="muted">(JSON object)</span>
        <textarea rows={5} className="mono" {...field("metadata")} />
      </label>
      <ErrorNote error={error} />
      <div className="actions">
        <button type="submit" disabled={busy}>
          {busy ? "Saving…" : "Save"}
        </button>
        <Link to={`/items/${item.id}`} className="button secondary">
          Cancel
        </Link>
      </div>
    </form>
  );
}
