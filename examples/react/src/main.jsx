// Documents with live "N viewing" badges and facepiles. Open it in two tabs (or two browsers,
// for two people) and click around: http://127.0.0.1:5173/?workspace=<id>[&user=Ana][&hub=URL]
import { StrictMode, useState } from "react";
import { createRoot } from "react-dom/client";
import {
  Facepile, PresenceBadge, PresenceProvider, usePresence, useSession,
} from "@presence-hub/react";

const params = new URLSearchParams(location.search);
const HUB = params.get("hub") ?? "http://127.0.0.1:8000"; // scripts/serve
const DOCS = ["Planning", "Refactor the parser", "Release notes"];
const workspaceId = params.get("workspace");
// One person per browser (localStorage); each tab is a client of its own.
const user = params.get("user") ?? localStorage.getItem("example-user") ?? `guest-${Math.random().toString(36).slice(2, 6)}`;
localStorage.setItem("example-user", user);

function Header() {
  const { status, onlineUsers, online } = usePresence();
  return <p><small>you are {user} · {status} · {onlineUsers} people online ({online} tabs)</small></p>;
}

function Doc({ title }) {
  useSession(title); // this tab views the document while it is open
  return <p>Editing <b>{title}</b>.</p>;
}

function App() {
  const [open, setOpen] = useState(DOCS[0]);
  return (
    <PresenceProvider url={HUB} workspaceId={workspaceId} userId={user} profile={{ name: user }}>
      <h1>Documents</h1>
      <Header />
      <ul>
        {DOCS.map((title) => (
          <li key={title} className={title === open ? "viewing" : ""} onClick={() => setOpen(title)}>
            {title}
            <Facepile session={title} max={3} />
            <PresenceBadge session={title} count="users" />
          </li>
        ))}
      </ul>
      {open && <Doc title={open} />}
    </PresenceProvider>
  );
}

const root = createRoot(document.getElementById("root"));
root.render(
  workspaceId ? (
    <StrictMode><App /></StrictMode>
  ) : (
    <p>Add <code>?workspace=&lt;id&gt;</code> to the address (see README.md).</p>
  ),
);
