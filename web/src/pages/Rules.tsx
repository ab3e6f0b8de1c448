import { useEffect, useMemo, useRef, useState } from "react";
import { ApiFailure, api, call, type Schemas } from "../api/client";
import { Empty, ErrorNote, Loading, When } from "../components/ui";
import { useAuth } from "../auth";
import { useAsync, useDebounced } from "../hooks";

type Rule = Schemas["StoredRule"];
type Issue = Schemas["RuleIssue"];

const TEMPLATE = `name: tag-rust
on: [ItemCreated, ItemUpdated]
when: 'event.data.title.lowerAscii().contains("rust")'
do:
  - add_tags: [rust]
`;

const sampleEvent = (collectionId: string) =>
  JSON.stringify(
    {
      type: "ItemCreated",
      entity: { type: "item", id: "0192f0c4-6a4e-7c1d-9d6e-6d7f7f1a2b3c", collection_id: collectionId },
      data: { title: "Rust in action", tags: [], source_url: "https://example.org/rust", version: 1 },
    },
    null,
    2,
  );

/** Send YAML text as the body, as typed (openapi-fetch would JSON-encode it). */
const yamlBody = {
  bodySerializer: (text: unknown) => String(text),
  headers: { "content-type": "application/yaml" },
} as const;

/** The problems a 422 carries in `details.errors`, if any. */
function issuesOf(error: unknown): Issue[] {
  if (!(error instanceof ApiFailure)) return [];
  const errors = (error.body?.details as { errors?: Issue[] } | undefined)?.errors;
  return Array.isArray(errors) ? errors : [];
}

export function RulesPanel({ collectionId }: { collectionId: string }) {
  const rules = useAsync(
    () => call(api.GET("/api/v1/collections/{id}/rules", { params: { path: { id: collectionId } } })),
    [collectionId],
  );
  const [selected, setSelected] = useState<string | "new" | null>(null);
  const current = rules.data?.items.find((r) => r.id === selected) ?? null;

  if (rules.loading && !rules.data) return <Loading what="Loading rules" />;
  if (rules.error) return <ErrorNote error={rules.error} />;
  return (
    <div className="rules">
      <div className="toolbar">
        <button type="button" onClick={() => setSelected("new")}>
          New rule
        </button>
      </div>
      {rules.data?.items.length === 0 && selected === null && (
        <Empty>No rules yet. Rules react to this collection's events: tag items, start jobs, call webhooks.</Empty>
      )}
      {rules.data && rules.data.items.length > 0 && (
        <ul className="rule-list" aria-label="Rules">
          {rules.data.items.map((r) => (
            <li key={r.id}>
              <button
                type="button"
                className={r.id === selected ? "tag active" : "tag"}
                aria-pressed={r.id === selected}
                onClick={() => setSelected(r.id)}
              >
                {r.name} <span className="count">v{r.version}</span>
              </button>
            </li>
          ))}
        </ul>
      )}
      {selected !== null && (
        <RuleEditor
          key={selected}
          collectionId={collectionId}
          rule={current}
          onSaved={(saved) => {
            rules.reload();
            setSelected(saved.id);
          }}
          onDeleted={() => {
            rules.reload();
            setSelected(null);
          }}
        />
      )}
    </div>
  );
}

function RuleEditor(props: {
  collectionId: string;
  rule: Rule | null;
  onSaved: (rule: Rule) => void;
  onDeleted: () => void;
}) {
  const { collectionId, rule } = props;
  const { me } = useAuth();
  const versions = useAsync(
    async () =>
      rule
        ? call(
            api.GET("/api/v1/collections/{id}/rules/{rule_id}/versions", {
              params: { path: { id: collectionId, rule_id: rule.id } },
            }),
          )
        : { items: [] },
    [collectionId, rule?.id, rule?.version],
  );
  const [text, setText] = useState(rule ? "" : TEMPLATE);
  const loadedFor = useRef<string | null>(null);
  // An existing rule opens with the text of its latest version, and shows
  // the new latest one after a save.
  useEffect(() => {
    const latest = versions.data?.items.at(-1);
    const key = rule && latest ? `${rule.id}@${latest.version}` : null;
    if (latest && key && loadedFor.current !== key) {
      loadedFor.current = key;
      setText(latest.source);
    }
  }, [rule, versions.data]);

  const [issues, setIssues] = useState<Issue[]>([]);
  const [saveError, setSaveError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  const typed = useDebounced(text, 400);

  // Validate as you type: problems appear at their line.
  useEffect(() => {
    if (!typed.trim()) {
      setIssues([]);
      return;
    }
    let stale = false;
    call(
      api.POST("/api/v1/rules/validate", {
        params: { query: { collection_id: collectionId } },
        body: typed as never,
        ...yamlBody,
      }),
    )
      .then((v) => !stale && setIssues(v.errors))
      .catch(() => undefined);
    return () => {
      stale = true;
    };
  }, [typed, collectionId]);

  const editor = useRef<HTMLTextAreaElement>(null);
  const lines = useMemo(() => text.split("\n").length, [text]);
  const badLines = new Set(issues.map((i) => i.line));

  function goTo(line: number) {
    const el = editor.current;
    if (!el) return;
    const start = text.split("\n").slice(0, line - 1).join("\n").length + (line > 1 ? 1 : 0);
    el.focus();
    el.setSelectionRange(start, start);
  }

  async function save() {
    setBusy(true);
    setSaveError(null);
    try {
      const saved = rule
        ? await call(
            api.PUT("/api/v1/collections/{id}/rules/{rule_id}", {
              params: { path: { id: collectionId, rule_id: rule.id } },
              body: text as never,
              ...yamlBody,
            }),
          )
        : await call(
            api.POST("/api/v1/collections/{id}/rules", {
              params: { path: { id: collectionId } },
              body: text as never,
              ...yamlBody,
            }),
          );
      props.onSaved(saved);
    } catch (err) {
      const found = issuesOf(err);
      if (found.length) setIssues(found);
      setSaveError(err);
    } finally {
      setBusy(false);
    }
  }

  async function remove() {
    if (!rule || !window.confirm(`Delete the rule “${rule.name}”?`)) return;
    setBusy(true);
    try {
      await call(
        api.DELETE("/api/v1/collections/{id}/rules/{rule_id}", {
          params: { path: { id: collectionId, rule_id: rule.id } },
        }),
      );
      props.onDeleted();
    } catch (err) {
      setSaveError(err);
    } finally {
      setBusy(false);
    }
  }

  return (
    <section className="rule-editor" aria-label={rule ? `Rule ${rule.name}` : "New rule"}>
      <h2>{rule ? `${rule.name} (version ${rule.version})` : "New rule"}</h2>
      <label htmlFor="rule-yaml">Rule (YAML)</label>
      <div className="code">
        <div className="gutter" aria-hidden="true">
          {Array.from({ length: lines }, (_, i) => (
            <div key={i} className={badLines.has(i + 1) ? "bad" : undefined}>
              {i + 1}
            </div>
          ))}
        </div>
        <textarea
          id="rule-yaml"
          ref={editor}
          className="mono"
          spellCheck={false}
          rows={Math.max(8, lines + 1)}
          value={text}
          onChange={(e) => setText(e.target.value)}
          aria-invalid={issues.length > 0}
          aria-describedby="rule-issues"
        />
      </div>
      <div id="rule-issues" aria-live="polite">
        {issues.length === 0 ? (
          <p className="muted small">{typed.trim() ? "Valid." : ""}</p>
        ) : (
          <ul className="issues" aria-label="Problems">
            {issues.map((i, n) => (
              <li key={n}>
                <button type="button" className="link" onClick={() => goTo(i.line)}>
                  line {i.line}, column {i.column}
                </button>
                : {i.message}
              </li>
            ))}
          </ul>
        )}
      </div>
      <ErrorNote error={saveError} />
      <div className="actions">
        <button type="button" disabled={busy} onClick={() => void save()}>
          {rule ? "Save new version" : "Create rule"}
        </button>
        {rule && (
          <button type="button" className="danger" disabled={busy} onClick={() => void remove()}>
            Delete rule
          </button>
        )}
      </div>
      <DryRun collectionId={collectionId} rules={text} />
      {rule && (
        <details className="versions">
          <summary>Versions</summary>
          {versions.loading && !versions.data && <Loading what="Loading versions" />}
          <ErrorNote error={versions.error} />
          <ol aria-label="Versions">
            {versions.data?.items.map((v) => (
              <li key={v.version}>
                version {v.version} · {v.change} · <When at={v.created_at} />
                {v.author_user_id && (
                  <span className="muted small"> · by {v.author_user_id === me?.id ? "you" : v.author_user_id}</span>
                )}{" "}
                <button type="button" className="link" onClick={() => setText(v.source)}>
                  load into the editor
                </button>
              </li>
            ))}
          </ol>
        </details>
      )}
    </section>
  );
}

function DryRun({ collectionId, rules }: { collectionId: string; rules: string }) {
  const [event, setEvent] = useState(() => sampleEvent(collectionId));
  const [result, setResult] = useState<Schemas["TestResult"] | null>(null);
  const [error, setError] = useState<unknown>(null);
  async function run() {
    setError(null);
    setResult(null);
    let parsed: Record<string, unknown>;
    try {
      parsed = JSON.parse(event) as Record<string, unknown>;
    } catch {
      setError(new Error("The sample event must be JSON."));
      return;
    }
    try {
      // `rules` may be YAML text (the endpoint's documented form); the
      // schema only says "object", so the text is passed through as is.
      const body = { rules: rules as never, event: parsed };
      setResult(await call(api.POST("/api/v1/rules/test", { body })));
    } catch (err) {
      setError(err);
    }
  }
  return (
    <details className="dry-run">
      <summary>Dry run against a sample event</summary>
      <label>
        Sample event (JSON)
        <textarea className="mono" rows={9} value={event} onChange={(e) => setEvent(e.target.value)} />
      </label>
      <div className="actions">
        <button type="button" className="secondary" onClick={() => void run()}>
          Dry run
        </button>
      </div>
      <ErrorNote error={error} />
      {result && result.actions.length === 0 && <Empty>No rule matches this event.</Empty>}
      {result && result.actions.length > 0 && (
        <ol aria-label="Planned actions">
          {result.actions.map((a, i) => (
            <li key={i}>
              <strong>{a.rule}</strong>: {a.action} <code>{JSON.stringify(a.args)}</code>
            </li>
          ))}
        </ol>
      )}
    </details>
  );
}
