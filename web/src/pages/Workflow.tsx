import { Link, useParams } from "react-router";
import { api, call } from "../api/client";
import { ErrorNote, Loading, StatusBadge } from "../components/ui";
import { useAsync, useTitle } from "../hooks";
import { useLiveEvents } from "../live";

export function WorkflowPage() {
  const { id = "" } = useParams();
  useTitle("Workflow");
  const wf = useAsync(() => call(api.GET("/api/v1/workflows/{id}", { params: { path: { id } } })), [id]);
  // Steps are jobs: any job or workflow event may move this workflow on.
  useLiveEvents((e) => {
    if (e.entity.type === "job" || (e.entity.type === "workflow" && e.entity.id === id)) wf.reload();
  });
  if (wf.loading && !wf.data) return <Loading what="Loading the workflow" />;
  if (wf.error && !wf.data) return <ErrorNote error={wf.error} />;
  const w = wf.data;
  if (!w) return null;
  return (
    <section>
      <p className="crumbs">
        <Link to="/jobs">Jobs</Link> /
      </p>
      <h1>
        {w.type} <StatusBadge status={w.status} />
      </h1>
      <p className="muted small">{w.id}</p>
      <ol className="steps" aria-label="Steps">
        {w.steps.map((s) => (
          <li key={s.name} className="step">
            <div className="step-head">
              <strong>{s.name}</strong> <StatusBadge status={s.status} />
              <span className="muted small">attempts: {s.attempts}</span>
            </div>
            {s.output != null && <pre>{JSON.stringify(s.output, null, 2)}</pre>}
            {s.error && <p className="error-text">{s.error}</p>}
          </li>
        ))}
      </ol>
      {w.output != null && (
        <details open>
          <summary>Output</summary>
          <pre>{JSON.stringify(w.output, null, 2)}</pre>
        </details>
      )}
    </section>
  );
}
