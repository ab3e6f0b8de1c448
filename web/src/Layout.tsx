import { NavLink, Outlet, useNavigate } from "react-router";
import { useAuth } from "./auth";
import { useLiveEvents } from "./live";

export function Layout() {
  const { me, signOut } = useAuth();
  const navigate = useNavigate();
  const status = useLiveEvents(() => {});
  return (
    <>
      <a className="skip" href="#main">
        Skip to content
      </a>
      <header className="top">
        <NavLink to="/" className="brand" end>
          Atlas
        </NavLink>
        {me && (
          <nav aria-label="Main">
            <NavLink to="/" end>
              Collections
            </NavLink>
            <NavLink to="/search">Search</NavLink>
            <NavLink to="/jobs">Jobs</NavLink>
            <NavLink to="/audit">Audit</NavLink>
          </nav>
        )}
        {me && (
          <div className="who">
            <span className={`live live-${status}`} role="img" title={`Live updates: ${status}`} aria-label={`Live updates: ${status}`} />
            <span className="email">{me.display_name || me.email}</span>
            <button
              type="button"
              className="link"
              onClick={async () => {
                await signOut();
                navigate("/signin");
              }}
            >
              Sign out
            </button>
          </div>
        )}
      </header>
      <main id="main" tabIndex={-1}>
        <Outlet />
      </main>
    </>
  );
}
