// A DOM for React tests (happy-dom), put on globalThis as a browser has it. Import it first.
import { Window } from "happy-dom";

const window = new Window({ url: "http://app.test/" });
for (const name of ["window", "document", "navigator", "HTMLElement", "Node", "Element", "Event",
  "MouseEvent", "sessionStorage", "localStorage", "getComputedStyle", "requestAnimationFrame",
  "cancelAnimationFrame", "customElements", "MutationObserver"]) {
  Object.defineProperty(globalThis, name, { configurable: true, writable: true, value: window[name] });
}
globalThis.IS_REACT_ACT_ENVIRONMENT = true;
export { window };
