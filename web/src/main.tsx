import { StrictMode } from "react";
import { createRoot } from "react-dom/client";
import { createBrowserRouter, Outlet, RouterProvider } from "react-router";
import { AuthProvider, RequireAuth } from "./auth";
import { Layout } from "./Layout";
import { LiveProvider } from "./live";
import { AuditPage } from "./pages/Audit";
import { CollectionPage } from "./pages/Collection";
import { Dashboard } from "./pages/Dashboard";
import { ItemPage } from "./pages/Item";
import { JobsPage } from "./pages/Jobs";
import { NotFound } from "./pages/NotFound";
import { SearchPage } from "./pages/Search";
import { RegisterPage, SignInPage } from "./pages/SignIn";
import { WorkflowPage } from "./pages/Workflow";
import "./app.css";

function Root() {
  return (
    <AuthProvider>
      <LiveProvider>
        <Outlet />
      </LiveProvider>
    </AuthProvider>
  );
}

const guarded = (page: React.ReactNode) => <RequireAuth>{page}</RequireAuth>;

const router = createBrowserRouter([
  {
    element: <Root />,
    children: [
      {
        element: <Layout />,
        children: [
          { path: "/signin", element: <SignInPage /> },
          { path: "/register", element: <RegisterPage /> },
          { path: "/", element: guarded(<Dashboard />) },
          { path: "/c/:id", element: guarded(<CollectionPage />) },
          { path: "/items/:id", element: guarded(<ItemPage />) },
          { path: "/items/:id/edit", element: guarded(<ItemPage editing />) },
          { path: "/search", element: guarded(<SearchPage />) },
          { path: "/jobs", element: guarded(<JobsPage />) },
          { path: "/workflows/:id", element: guarded(<WorkflowPage />) },
          { path: "/audit", element: guarded(<AuditPage />) },
          { path: "*", element: <NotFound /> },
        ],
      },
    ],
  },
]);

const root = document.getElementById("root");
if (root) {
  createRoot(root).render(
    <StrictMode>
      <RouterProvider router={router} />
    </StrictMode>,
  );
}
