// A typed usage of both packages: `tsc --noEmit -p js/tsconfig.json` checks it against the
// packages' .d.ts (tests/test_js.py runs it). It is compiled, never run.
import { StrictMode, useState } from "react";
import { createRoot } from "react-dom/client";

import { HubConnection, HubError, connect, type Presence, type Status } from "@presence-hub/client";
import { PresenceBadge as BadgeElement } from "@presence-hub/client/elements";
import { FakeHub } from "@presence-hub/client/testing";
import {
  Facepile,
  PresenceBadge,
  PresenceProvider,
  useHubConnection,
  usePresence,
  useSession,
  useViewers,
  type PresenceValue,
  type ViewerList,
} from "@presence-hub/react";

const hub: HubConnection = connect("http://127.0.0.1:8000", {
  workspaceId: "w",
  getToken: async () => "token",
  profile: { name: "Ana", color: "#8250df" },
});
const status: Status = hub.status;
const presence: Presence = hub.presence;
hub.addEventListener("status", (event) => console.log(event.detail.status, status, presence.seq));
hub.addEventListener("viewers", (event) => console.log(event.detail.sessionId, event.detail.total));
hub.setSession("S1").then((seq: number) => seq, (error: HubError) => error.code);
BadgeElement.connection = hub;

const fake = new FakeHub({ workspaceId: "w" });
fake.set({ counts: { S1: 2 }, onlineUsers: 1 });
fake.viewers("S1", [{ user_id: "ana", profile: { name: "Ana" }, clients: 1 }], { anonymous: 1 });
void fake.flush().then(() => fake.sentOf("set_session").length);

function Session({ id }: { id: string }) {
  useSession(id);
  const { clients, users, status }: PresenceValue = usePresence(id);
  const everyone = usePresence();
  const list: ViewerList = useViewers(id, { limit: 10 });
  const connection: HubConnection | null = useHubConnection();
  return (
    <section>
      <h2>
        {id} {status} {clients}/{users} of {everyone.online} {connection?.clientId}
      </h2>
      <PresenceBadge session={id} count="users" style={{ marginLeft: 4 }} />
      <Facepile session={id} max={3} className="faces" />
      <ul>
        {list.viewers.map((v) => (
          <li key={v.user_id}>{v.profile?.name ?? v.user_id}</li>
        ))}
      </ul>
    </section>
  );
}

function App() {
  const [id, setId] = useState("S1");
  return (
    <PresenceProvider
      url="http://127.0.0.1:8000"
      workspaceId="w"
      userId="ana"
      profile={{ name: "Ana Lima" }}
      WebSocket={fake.WebSocket}
      closeDelay={500}
    >
      <button onClick={() => setId(id === "S1" ? "S2" : "S1")}>switch</button>
      <Session id={id} />
    </PresenceProvider>
  );
}

const root = document.getElementById("root");
if (root) {
  createRoot(root).render(
    <StrictMode>
      <App />
    </StrictMode>,
  );
}
