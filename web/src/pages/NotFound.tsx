import { Link } from "react-router";
import { useTitle } from "../hooks";

export function NotFound() {
  useTitle("Not found");
  return (
    <section>
      <h1>Page not found</h1>
      <p>
        Nothing lives at this address. <Link to="/">Back to your collections</Link>
      </p>
    </section>
  );
}
