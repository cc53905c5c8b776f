// The app tests/test_react_browser.py bundles with esbuild from the packed npm packages, as a
// user's app would use them: React 19 in StrictMode, one tab = one provider.
//   ?hub=<hub url>&workspace=<id>&user=<name>&session=<id>&sessions=<id,id>
import { StrictMode, useState } from "react";
import { createRoot } from "react-dom/client";

import {
  Facepile, PresenceBadge, PresenceProvider, usePresence, useSession,
} from "@presence-hub/react";

const params = new URLSearchParams(location.search);
const user = params.get("user");
const sessions = params.get("sessions").split(",");

function Viewing({ id }) {
  useSession(id);
  return <p id="viewing">{id}</p>;
}

function Status() {
  const { status, online } = usePresence();
  return <p id="status" data-status={status}>{status}, {online} online</p>;
}

function App() {
  const [session, setSession] = useState(params.get("session"));
  const [mounted, setMounted] = useState(true);
  window.viewSession = setSession;
  window.unmountProvider = () => setMounted(false);
  if (!mounted) return <p id="status">unmounted</p>;
  return (
    <PresenceProvider url={params.get("hub")} workspaceId={params.get("workspace")}
                      userId={user} profile={{ name: user }}>
      <Status />
      <Viewing id={session} />
      <ul>
        {sessions.map((id) => (
          <li key={id} data-session={id}>
            {id} <PresenceBadge session={id} count="users" /> <Facepile session={id} />
          </li>
        ))}
      </ul>
    </PresenceProvider>
  );
}

createRoot(document.getElementById("root")).render(
  <StrictMode>
    <App />
  </StrictMode>,
);
