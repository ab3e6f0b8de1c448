import { useCallback, useEffect, useState, type FormEvent } from "react";
import { Link, useNavigate, useSearchParams } from "react-router";
import { api, call, type Schemas } from "../api/client";
import { Empty, ErrorNote, Loading, StatusBadge, When } from "../components/ui";
import { useTitle } from "../hooks";
import { useLiveEvents } from "../live";

type Job = Schemas["Job"];
const STATUSES = ["queued", "running", "succeeded", "failed", "dead", "cancelled"] as const;
type Status = (typeof STATUSES)[number];

export function JobsPage() {
  useTitle("Jobs");
  const [params, setParams] = useSearchParams();
  const status = (params.get("status") ?? "") as Status | "";
  const navigate = useNavigate();
  const [jobs, setJobs] = useState<Job[] | null>(null);
  const [cursor, setCursor] = useState<string | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [actionError, setActionError] = useState<unknown>(null);
  const [loading, setLoading] = useState(false);

  const load = useCallback(
    async (after: string | null) => {
      setLoading(true);
      setError(null);
      try {
        const page = await call(
          api.GET("/api/v1/jobs", {
            params: { query: { limit: 50, ...(status ? { status } : {}), ...(after ? { cursor: after } : {}) } },
          }),
        );
        setJobs((old) => (after && old ? [...old, ...page.items] : page.items));
        setCursor(page.next_cursor ?? null);
      } catch (err) {
        setError(err);
      } finally {
        setLoading(false);
      }
    },
    [status],
  );
  useEffect(() => void load(null), [load]);

  // Live: a job's row follows its events without reload.
  useLiveEvents(async (e) => {
    if (e.entity.type !== "job") return;
    const { data } = await api.GET("/api/v1/jobs/{id}", { params: { path: { id: e.entity.id } } });
    if (!data) return;
    setJobs((old) => {
      const list = old ?? [];
      const at = list.findIndex((j) => j.id === data.id);
      if (status && data.status !== status) return list.filter((j) => j.id !== data.id);
      if (at >= 0) return list.map((j) => (j.id === data.id ? data : j));
      return [data, ...list];
    });
  });

  async function act(job: Job, action: "cancel" | "retry") {
    setActionError(null);
    try {
      const path = action === "cancel" ? "/api/v1/jobs/{id}/cancel" : "/api/v1/jobs/{id}/retry";
      const updated = await call(api.POST(path, { params: { path: { id: job.id } } }));
      setJobs((old) => old?.map((j) => (j.id === updated.id ? updated : j)) ?? null);
    } catch (err) {
      setActionError(err);
    }
  }

  function openWorkflow(e: FormEvent<HTMLFormElement>) {
    e.preventDefault();
    const id = String(new FormData(e.currentTarget).get("workflow") ?? "").trim();
    if (id) navigate(`/workflows/${encodeURIComponent(id)}`);
  }

  return (
    <section>
      <h1>Jobs</h1>
      <div className="toolbar">
        <label>
          Status
          <select
            value={status}
            onChange={(e) => setParams(e.target.value ? { status: e.target.value } : {}, { replace: true })}
          >
            <option value="">Any</option>
            {STATUSES.map((s) => (
              <option key={s}>{s}</option>
            ))}
          </select>
        </label>
        <form onSubmit={openWorkflow} className="inline-form" aria-label="Open a workflow">
          <label>
            Workflow id
            <input name="workflow" placeholder="0192…" />
          </label>
          <button type="submit" className="secondary">
            Open workflow
          </button>
        </form>
      </div>
      <ErrorNote error={actionError} />
      <ErrorNote error={error}>
        <button type="button" onClick={() => void load(null)}>
          Try again
        </button>
      </ErrorNote>
      {jobs === null && loading && <Loading what="Loading jobs" />}
      {jobs?.length === 0 && <Empty>{status ? `No ${status} jobs.` : "No jobs yet. Enrich an item from its page to start one."}</Empty>}
      {jobs && jobs.length > 0 && (
        <div className="scroll-x">
          <table className="table" aria-label="Jobs">
            <thead>
              <tr>
                <th scope="col">Type</th>
                <th scope="col">Status</th>
                <th scope="col">Attempts</th>
                <th scope="col">Created</th>
                <th scope="col">Last error</th>
                <th scope="col">Actions</th>
              </tr>
            </thead>
            <tbody>
              {jobs.map((j) => (
                <tr key={j.id} data-job={j.id}>
                  <td>
                    {j.type}
                    {typeof j.payload?.item_id === "string" && (
                      <div className="small">
                        <Link to={`/items/${j.payload.item_id}`}>open the item</Link>
                      </div>
                    )}
                  </td>
                  <td>
                    <StatusBadge status={j.status} />
                  </td>
                  <td>
                    {j.attempts}/{j.max_attempts}
                  </td>
                  <td>
                    <When at={j.created_at} />
                  </td>
                  <td className="small">{j.last_error ?? ""}</td>
                  <td>
                    {(j.status === "queued" || j.status === "running") && (
                      <button type="button" className="secondary" onClick={() => void act(j, "cancel")}>
                        Cancel
                      </button>
                    )}
                    {j.status === "dead" && (
                      <button type="button" className="secondary" onClick={() => void act(j, "retry")}>
                        Retry
                      </button>
                    )}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      {cursor && !loading && (
        <button type="button" className="secondary" onClick={() => void load(cursor)}>
          Load more
        </button>
      )}
    </section>
  );
}
