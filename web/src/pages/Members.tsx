import { useState, type FormEvent } from "react";
import { api, call, type Schemas } from "../api/client";
import { Empty, ErrorNote, Loading } from "../components/ui";
import { useAsync } from "../hooks";

type Member = Schemas["Member"];
const ROLES = ["owner", "editor", "viewer"] as const;
type Role = (typeof ROLES)[number];

export function MembersPanel({ collectionId, role }: { collectionId: string; role: string | undefined }) {
  const isOwner = role === "owner";
  const members = useAsync(async () => {
    const out: Member[] = [];
    let cursor: string | undefined;
    do {
      const page = await call(
        api.GET("/api/v1/collections/{id}/members", {
          params: { path: { id: collectionId }, query: { limit: 200, cursor } },
        }),
      );
      out.push(...page.items);
      cursor = page.next_cursor ?? undefined;
    } while (cursor);
    return out;
  }, [collectionId]);
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);

  async function act(what: () => Promise<unknown>) {
    setBusy(true);
    setError(null);
    try {
      await what();
      members.reload();
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  }

  function add(e: FormEvent<HTMLFormElement>) {
    e.preventDefault();
    const formEl = e.currentTarget;
    const form = new FormData(formEl);
    void act(async () => {
      await call(
        api.POST("/api/v1/collections/{id}/members", {
          params: { path: { id: collectionId } },
          body: { email: String(form.get("email")), role: String(form.get("role")) as Role },
        }),
      );
      formEl.reset();
    });
  }

  const setRole = (userId: string, newRole: Role) =>
    act(() =>
      call(
        api.PATCH("/api/v1/collections/{id}/members/{user_id}", {
          params: { path: { id: collectionId, user_id: userId } },
          body: { role: newRole },
        }),
      ),
    );
  const remove = (userId: string) =>
    act(() =>
      call(
        api.DELETE("/api/v1/collections/{id}/members/{user_id}", {
          params: { path: { id: collectionId, user_id: userId } },
        }),
      ),
    );

  return (
    <div>
      {isOwner && (
        <form onSubmit={add} className="inline-form" aria-label="Add a member">
          <label>
            Email
            <input name="email" type="email" required />
          </label>
          <label>
            Role
            <select name="role" defaultValue="viewer">
              {ROLES.map((r) => (
                <option key={r}>{r}</option>
              ))}
            </select>
          </label>
          <button type="submit" disabled={busy}>
            Add member
          </button>
        </form>
      )}
      <ErrorNote error={error} />
      {members.loading && !members.data && <Loading what="Loading members" />}
      <ErrorNote error={members.error} />
      {members.data?.length === 0 && <Empty>No members.</Empty>}
      {members.data && members.data.length > 0 && (
        <div className="scroll-x">
          <table className="table" aria-label="Members">
            <thead>
              <tr>
                <th scope="col">Member</th>
                <th scope="col">Role</th>
                {isOwner && <th scope="col">Actions</th>}
              </tr>
            </thead>
            <tbody>
              {members.data.map((m) => (
                <tr key={m.user_id}>
                  <td>
                    {m.display_name || m.email}
                    {m.display_name && <div className="muted small">{m.email}</div>}
                  </td>
                  <td>
                    {isOwner ? (
                      <select
                        aria-label={`Role of ${m.email}`}
                        value={m.role}
                        disabled={busy}
                        onChange={(e) => void setRole(m.user_id, e.target.value as Role)}
                      >
                        {ROLES.map((r) => (
                          <option key={r}>{r}</option>
                        ))}
                      </select>
                    ) : (
                      <span className={`badge badge-${m.role}`}>{m.role}</span>
                    )}
                  </td>
                  {isOwner && (
                    <td>
                      <button
                        type="button"
                        className="danger"
                        disabled={busy}
                        onClick={() => void remove(m.user_id)}
                        aria-label={`Remove ${m.email}`}
                      >
                        Remove
                      </button>
                    </td>
                  )}
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </div>
  );
}
