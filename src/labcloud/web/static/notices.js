// A note when one of your jobs ends while a labcloud page is open: a toast on the page and, if you allowed
// them (the button on your account page), a desktop notification. The page asks GET /api/v1/me/events
// every 10 s, with a short-lived token from /ui/token, for your job ends newer than the last one it saw;
// that id is kept in sessionStorage, so a reload or the next page repeats nothing, and a new tab starts
// from now instead of showing old ends.
(function () {
  "use strict";

  const EVERY_MS = 10000;
  const MAX_WAIT_MS = 5 * 60 * 1000;
  const MAX_TOASTS = 5;
  const LAST_SEEN = "labcloud.last-job-end";
  const BEGINNING = "00000000-0000-0000-0000-000000000000"; // older than any event id

  const csrfToken = () => (document.querySelector('meta[name="csrf-token"]') || {}).content || "";
  let bearer = null;

  class Stop extends Error {} // the session ended: a new page will log in again

  async function token(renew) {
    if (bearer && !renew && bearer.until > Date.now()) return bearer.value;
    const r = await fetch("/ui/token", { method: "POST", headers: { "X-CSRF-Token": csrfToken() }, credentials: "same-origin" });
    if (r.redirected || r.status === 401 || r.status === 403) throw new Stop(); // sent to the login page
    if (!r.ok) throw new Error("token: " + r.status);
    const body = await r.json();
    bearer = { value: body.access_token, until: Date.now() + (body.expires_in - 60) * 1000 };
    return bearer.value;
  }

  async function ends(after) {
    const url = "/api/v1/me/events" + (after ? "?after=" + encodeURIComponent(after) : "");
    for (const renew of [false, true]) {
      const r = await fetch(url, { headers: { Authorization: "Bearer " + (await token(renew)) } });
      if (r.ok) return r.json();
      if (r.status !== 401) throw new Error("events: " + r.status);
    }
    throw new Stop();
  }

  function remembered() {
    try { return sessionStorage.getItem(LAST_SEEN); } catch (e) { return null; }
  }

  function remember(id) {
    try { sessionStorage.setItem(LAST_SEEN, id); } catch (e) { /* private mode: this page only */ }
  }

  // ----------------------------------------------------------------------------------------- telling
  function words(event) {
    const job = event.job || {};
    const name = job.title || job.name || job.app || "job " + String(job.id || "").slice(0, 8);
    if (event.type === "job.succeeded") return { title: "“" + name + "” succeeded", kind: "ok" };
    if (event.type === "job.cancelled") return { title: "“" + name + "” was cancelled", kind: "" };
    const reason = job.reason ? " (" + String(job.reason).replace(/_/g, " ") + ")" : "";
    return { title: "“" + name + "” failed" + reason, kind: "bad" };
  }

  function toast(box, event) {
    const said = words(event);
    const link = "/jobs/" + encodeURIComponent((event.job || {}).id || "");
    const item = document.createElement("div");
    item.className = "toast " + said.kind;
    item.dataset.event = event.id;
    const text = document.createElement("p");
    const open = document.createElement("a");
    open.href = link;
    open.textContent = "Job " + said.title + ".";
    text.append(open);
    const close = document.createElement("button");
    close.type = "button";
    close.className = "small";
    close.textContent = "Dismiss";
    text.id = "job-notice-" + event.id;
    close.setAttribute("aria-describedby", text.id); // which note: a screen reader says it after "Dismiss"
    close.addEventListener("click", () => item.remove());
    item.append(text, close);
    box.append(item);
    while (box.children.length > MAX_TOASTS) box.firstElementChild.remove();
    desktop(said.title, link, event.id);
  }

  function desktop(title, link, tag) {
    if (!("Notification" in window) || Notification.permission !== "granted") return;
    try {
      // The same tag in every open tab: the desktop shows it once.
      const note = new Notification("labcloud: job " + title, { tag: tag, body: "Open the job to see its results." });
      note.onclick = () => { window.focus(); window.location.assign(link); note.close(); };
    } catch (e) { /* some browsers only notify from a service worker: the toast is enough */ }
  }

  // ----------------------------------------------------------------------------------------- polling
  function follow(box) {
    let wait = EVERY_MS;
    async function poll() {
      try {
        const after = remembered();
        const found = await ends(after);
        (found.items || []).forEach((event) => toast(box, event));
        remember(found.last_id || after || BEGINNING);
        wait = EVERY_MS;
      } catch (error) {
        if (error instanceof Stop) return;
        wait = Math.min(MAX_WAIT_MS, wait * 2); // the server is away: ask less often until it answers
      }
      setTimeout(poll, wait);
    }
    poll();
  }

  // ------------------------------------------------------------------ the account page's permission
  function setUpPermission() {
    const button = document.getElementById("desktop-notices");
    const state = document.getElementById("desktop-notices-state");
    if (!button || !state) return;
    function show() {
      if (!("Notification" in window)) {
        state.textContent = "This browser cannot show desktop notifications.";
      } else if (!window.isSecureContext) {
        state.textContent = "Desktop notifications need this site to be served over HTTPS.";
      } else if (Notification.permission === "granted") {
        state.textContent = "Desktop notifications are on in this browser.";
      } else if (Notification.permission === "denied") {
        state.textContent = "Desktop notifications are blocked for this site in this browser's settings.";
      } else {
        state.textContent = "Desktop notifications are off in this browser.";
        button.hidden = false;
        return;
      }
      button.hidden = true;
    }
    button.addEventListener("click", async () => {
      try { await Notification.requestPermission(); } catch (e) { /* an old browser: no answer */ }
      show();
    });
    show();
  }

  document.addEventListener("DOMContentLoaded", () => {
    const box = document.getElementById("job-notices");
    if (!box) return; // not signed in
    setUpPermission();
    follow(box);
  });
})();
