// Types of @presence-hub/react.
import type { CSSProperties, JSX, ReactNode } from "react";
import type { HubConnection, Profile, Status, ViewerList } from "@presence-hub/client";

export type { Profile, Status, Viewer, ViewerList } from "@presence-hub/client";

export interface PresenceProviderProps {
  /** the hub's base URL (http or https) */
  url: string;
  workspaceId: string;
  token?: string;
  /** called before every connection attempt (instead of `token`) */
  getToken?: () => string | Promise<string>;
  /** the user, with auth off (with auth on: the token's `user` claim) */
  userId?: string;
  /** this user's profile (name, avatar URL, colour); a change is sent to the hub */
  profile?: Profile;
  /** default: one per tab, kept in sessionStorage */
  clientId?: string;
  /** a WebSocket class (tests: FakeHub's) */
  WebSocket?: typeof WebSocket;
  /** milliseconds the socket stays open after the last release, for a re-mount (1000) */
  closeDelay?: number;
  children?: ReactNode;
}

/** One connection for everything below it (opened after mount, closed after the last unmount). */
export function PresenceProvider(props: PresenceProviderProps): JSX.Element;

/** The provider's connection: null on the server and before the provider's effect ran. */
export function useHubConnection(): HubConnection | null;

/** This tab views `sessionId` while mounted (most recently mounted wins; none: ""). */
export function useSession(sessionId: string | null | undefined): void;

export interface PresenceValue {
  /** clients viewing the session (the workspace's: online clients) */
  readonly clients: number;
  /** people viewing the session (the workspace's: online people) */
  readonly users: number;
  readonly online: number;
  readonly onlineUsers: number;
  /** the workspace version these values come from (-1: none yet) */
  readonly seq: number;
  readonly status: Status;
}

/** A session's presence (the workspace's when omitted); re-renders when a field read changed. */
export function usePresence(sessionId?: string | null): PresenceValue;

/** Who views a session, watched while mounted (counted per session). */
export function useViewers(
  sessionId: string | null | undefined,
  options?: { limit?: number },
): ViewerList;

export interface PresenceBadgeProps {
  session: string;
  /** "clients" (default) or "users": people, one per person however many tabs */
  count?: "clients" | "users";
  className?: string;
  style?: CSSProperties;
}

/** "N viewing", nothing at 0. */
export function PresenceBadge(props: PresenceBadgeProps): JSX.Element | null;

export interface FacepileProps {
  session: string;
  /** faces shown before "+k" (3) */
  max?: number;
  className?: string;
  style?: CSSProperties;
}

/** The faces of who views a session, then "+k"; nothing when nobody is there. */
export function Facepile(props: FacepileProps): JSX.Element | null;
