// labcloud pages: local times, CSRF header for htmx, copy buttons, the live log, resumable uploads (tus).
// No inline scripts anywhere (the Content-Security-Policy forbids them); everything starts from here.
(function () {
  "use strict";

  const csrfToken = () => (document.querySelector('meta[name="csrf-token"]') || {}).content || "";

  // ---------------------------------------------------------------------------------------- times
  const relative = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });
  const full = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });
  function age(date) {
    const seconds = (date.getTime() - Date.now()) / 1000;
    const abs = Math.abs(seconds);
    if (abs < 45) return relative.format(Math.round(seconds), "second");
    if (abs < 2700) return relative.format(Math.round(seconds / 60), "minute");
    if (abs < 79200) return relative.format(Math.round(seconds / 3600), "hour");
    if (abs < 7 * 86400) return relative.format(Math.round(seconds / 86400), "day");
    return full.format(date);
  }
  function localTimes(root) {
    (root || document).querySelectorAll("time.rel[datetime]").forEach((el) => {
      const date = new Date(el.getAttribute("datetime"));
      if (isNaN(date)) return;
      el.textContent = age(date);
      el.title = full.format(date);
    });
  }

  // ------------------------------------------------------------------------------------ copy buttons
  function setUpCopy(root) {
    (root || document).querySelectorAll("button[data-copy]").forEach((button) => {
      if (button.dataset.ready) return;
      button.dataset.ready = "1";
      const label = button.innerHTML;
      button.addEventListener("click", async () => {
        const source = document.querySelector(button.dataset.copy);
        if (!source) return;
        try {
          await navigator.clipboard.writeText(source.value);
        } catch (e) {
          source.select();
          document.execCommand("copy");
        }
        button.textContent = "Copied";
        setTimeout(() => (button.innerHTML = label), 2000);
      });
    });
  }

  // -------------------------------------------------------------------------------------- live log
  // A log line: numbered (a link to itself), control lines (::progress ...) marked so that they can be
  // hidden, and the job's own folder left out of paths (".../jobs/ID/attempt-N/work/output/x" is "output/x").
  const CONTROL = /^::[a-z-]+(\s|$)/;
  // When it came (ms since the epoch, from the stream's "times" event) leads it, shown with "Show times".
  const pad = (n) => String(n).padStart(2, "0");
  function logLine(pre, text, number, ms) {
    const line = document.createElement("span");
    line.className = "line" + (CONTROL.test(text) ? " control" : "");
    line.id = "L" + number;
    const link = document.createElement("a");
    link.className = "ln";
    link.href = "#L" + number;
    link.textContent = String(number);
    link.setAttribute("aria-label", "line " + number);
    const parts = [link];
    if (typeof ms === "number") {
      const at = new Date(ms);
      const stamp = document.createElement("time");
      stamp.className = "ts";
      stamp.dateTime = at.toISOString();
      stamp.title = at.toLocaleString();
      stamp.textContent = pad(at.getHours()) + ":" + pad(at.getMinutes()) + ":" + pad(at.getSeconds());
      parts.push(stamp);
    }
    const body = document.createElement("span");
    body.className = "lt";
    body.textContent = pre.jobFolder ? text.replace(pre.jobFolder, "") : text;
    line.append(...parts, body, document.createTextNode("\n"));
    return line;
  }

  function setUpLogTools(pre) {
    const controls = document.getElementById("log-controls");
    const search = document.getElementById("log-search");
    const count = document.getElementById("log-matches");
    if (controls) controls.addEventListener("change", () => pre.classList.toggle("show-control", controls.checked));
    window.addEventListener("hashchange", () => {
      pre.querySelectorAll(".line.linked").forEach((line) => line.classList.remove("linked"));
    });
    const times = document.getElementById("log-times");
    if (times) times.addEventListener("change", () => pre.classList.toggle("show-times", times.checked));
    if (!search) return () => {};
    const apply = () => {
      const words = search.value.trim().toLowerCase();
      let shown = 0;
      pre.querySelectorAll(".line").forEach((line) => {
        const hit = !words || line.textContent.toLowerCase().includes(words);
        line.classList.toggle("miss", !hit);
        if (hit && words) shown += 1;
      });
      if (count) count.textContent = words ? shown + " matching line" + (shown === 1 ? "" : "s") : "";
    };
    search.addEventListener("input", apply);
    return apply;
  }

  function followLog(pre) {
    let offset = Number(pre.dataset.offset || 0);
    let failures = 0;
    let number = 0;
    let partial = "";  // (an event's text ends at a line's end; kept in case one does not)
    const id = (pre.dataset.job || "").replace(/[^0-9a-f-]/g, "");
    pre.jobFolder = id ? new RegExp("/[^\\s'\"]*/jobs/" + id + "/attempt-\\d+/work/", "g") : null;
    const refilter = setUpLogTools(pre);
    const state = document.getElementById("log-state");
    const say = (text) => state && (state.textContent = text);
    function open() {
      const source = new EventSource(pre.dataset.stream + "?offset=" + offset);
      say("following…");
      let stamps = [];
      source.addEventListener("times", (event) => {
        try { stamps = JSON.parse(event.data); } catch (e) { stamps = []; }
      });
      source.addEventListener("log", (event) => {
        failures = 0;
        const atBottom = pre.scrollHeight - pre.scrollTop - pre.clientHeight < 40;
        const lines = (partial + event.data).split("\n");
        partial = "";
        const batch = document.createDocumentFragment();
        lines.forEach((text, i) => { number += 1; batch.append(logLine(pre, text, number, stamps[i])); });
        stamps = [];
        pre.append(batch);
        refilter();
        if (event.lastEventId) offset = Number(event.lastEventId);
        if (location.hash && location.hash.startsWith("#L") && !pre.dataset.jumped) {
          const target = document.getElementById(location.hash.slice(1));
          if (target) {
            // (added after the page loaded, the line never matched :target: marked by hand instead)
            target.classList.add("linked");
            target.scrollIntoView({ block: "center" });
            pre.dataset.jumped = "true";
          }
        } else if (atBottom) pre.scrollTop = pre.scrollHeight;
      });
      source.addEventListener("end", (event) => {
        source.close();
        let ended = "the job has ended";
        try { ended = "the job " + JSON.parse(event.data).state; } catch (e) { /* keep the default */ }
        say(ended);
        pre.dataset.ended = "true";
      });
      source.onerror = () => {
        // Reconnect ourselves from the last byte we have: the server resumes from ?offset=.
        source.close();
        failures += 1;
        say("connection lost; reconnecting…");
        setTimeout(open, Math.min(30000, 1000 * 2 ** Math.min(failures, 5)));
      };
    }
    open();
  }

  // ----------------------------------------------------------------------------- resumable uploads
  const CHUNK_BYTES = 8 * 1024 * 1024;
  const MAX_RETRIES = 8;
  let apiToken = null;

  async function token(renew) {
    if (apiToken && !renew && apiToken.until > Date.now()) return apiToken.value;
    const r = await fetch("/ui/token", { method: "POST", headers: { "X-CSRF-Token": csrfToken() }, credentials: "same-origin" });
    if (!r.ok) throw new Error(r.status === 403 ? "Your session has expired: reload the page." : "Could not start the upload (" + r.status + ").");
    const body = await r.json();
    apiToken = { value: body.access_token, until: Date.now() + (body.expires_in - 60) * 1000 };
    return apiToken.value;
  }

  function b64(text) {
    const bytes = new TextEncoder().encode(text);
    let binary = "";
    bytes.forEach((b) => (binary += String.fromCharCode(b)));
    return btoa(binary);
  }

  async function problem(response) {
    try {
      const body = await response.json();
      return body.detail || body.title || response.statusText;
    } catch (e) {
      return response.status + " " + response.statusText;
    }
  }

  class Fatal extends Error {}

  function patch(url, blob, offset, bearer, onProgress) {
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      xhr.open("PATCH", url);
      xhr.setRequestHeader("Tus-Resumable", "1.0.0");
      xhr.setRequestHeader("Upload-Offset", String(offset));
      xhr.setRequestHeader("Content-Type", "application/offset+octet-stream");
      xhr.setRequestHeader("Authorization", "Bearer " + bearer);
      xhr.upload.onprogress = (e) => onProgress(e.loaded);
      xhr.onload = () => resolve(xhr);
      xhr.onerror = () => reject(new Error("network error"));
      xhr.send(blob);
    });
  }

  async function tusUpload(file, path, onProgress) {
    const headers = (bearer) => ({ "Tus-Resumable": "1.0.0", Authorization: "Bearer " + bearer });
    let bearer = await token(false);
    const created = await fetch("/api/v1/uploads", {
      method: "POST",
      headers: Object.assign(headers(bearer), {
        "Upload-Length": String(file.size),
        "Upload-Metadata": "path " + b64(path) + ",filename " + b64(file.name),
      }),
    });
    if (created.status !== 201) throw new Fatal(await problem(created));
    const location = created.headers.get("Location");
    let offset = Number(created.headers.get("Upload-Offset") || 0);
    let failures = 0;
    onProgress(offset);
    while (offset < file.size) {
      try {
        const xhr = await patch(location, file.slice(offset, offset + CHUNK_BYTES), offset, bearer, (n) => onProgress(offset + n));
        if (xhr.status === 204) {
          offset = Number(xhr.getResponseHeader("Upload-Offset"));
          failures = 0;
          onProgress(offset);
          continue;
        }
        if (xhr.status === 401) { bearer = await token(true); throw new Error("token renewed"); }
        if (xhr.status === 409 || xhr.status === 423 || xhr.status >= 500) throw new Error("HTTP " + xhr.status);
        let detail = xhr.statusText;
        try { detail = JSON.parse(xhr.responseText).detail || detail; } catch (e) { /* not JSON */ }
        throw new Fatal(detail);
      } catch (error) {
        if (error instanceof Fatal || ++failures > MAX_RETRIES) throw error;
        await new Promise((r) => setTimeout(r, Math.min(15000, 500 * 2 ** failures)));
        // Ask the server how much it holds, and go on from there.
        const head = await fetch(location, { method: "HEAD", headers: headers(bearer) }).catch(() => null);
        if (head && head.ok) offset = Number(head.headers.get("Upload-Offset"));
        else if (head && (head.status === 404 || head.status === 410)) throw new Fatal("The upload expired; start it again.");
      }
    }
  }

  function humanBytes(n) {
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i ? n.toFixed(1) : n) + " " + units[i];
  }

  function setUpUploads() {
    const zone = document.getElementById("dropzone");
    if (!zone) return;
    const list = document.getElementById("uploads");
    const picker = document.getElementById("file-picker");
    const folder = zone.dataset.folder || "";
    let queue = Promise.resolve();
    let pending = 0;

    // A file whose name is already in the folder is asked about on the page (no browser dialog): replace
    // it, or keep the one there.
    function add(file) {
      const path = folder ? folder + "/" + file.name : file.name;
      const shown = Array.from(document.querySelectorAll("#file-table tr[data-path]")).some((row) => row.dataset.path === path);
      if (!shown) { start(file, path); return; }
      const item = document.createElement("li");
      item.className = "ask";
      const question = document.createElement("span");
      question.textContent = "“" + path + "” is already there. ";
      const replace = document.createElement("button");
      replace.type = "button";
      replace.className = "small danger";
      replace.textContent = "Replace it";
      const keep = document.createElement("button");
      keep.type = "button";
      keep.className = "small";
      keep.textContent = "Keep the one there";
      item.append(question, replace, " ", keep);
      list.append(item);
      replace.focus();
      replace.addEventListener("click", () => { item.remove(); start(file, path); });
      keep.addEventListener("click", () => { item.className = "kept"; item.textContent = file.name + ": not uploaded, the one there is kept"; });
    }

    function start(file, path) {
      const item = document.createElement("li");
      const name = document.createElement("span");
      name.className = "upload-name";
      name.textContent = file.name;
      const bar = document.createElement("progress");
      bar.max = Math.max(file.size, 1);
      bar.value = 0;
      bar.setAttribute("aria-label", "Upload of " + file.name);
      const status = document.createElement("span");
      status.className = "upload-state";
      status.textContent = "waiting";
      item.append(name, bar, status);
      list.append(item);
      pending += 1;
      queue = queue.then(async () => {
        item.classList.add("active");
        try {
          await tusUpload(file, path, (done) => {
            bar.value = Math.min(done, bar.max);
            status.textContent = Math.floor((100 * done) / Math.max(file.size, 1)) + "% of " + humanBytes(file.size);
          });
          bar.value = bar.max;
          item.classList.add("done");
          status.textContent = "uploaded";
        } catch (error) {
          item.classList.add("failed");
          status.textContent = "failed: " + error.message;
        } finally {
          item.classList.remove("active");
          pending -= 1;
          if (pending === 0 && window.htmx) {
            htmx.ajax("GET", zone.dataset.refresh, { target: "#file-table", swap: "outerHTML" });
          }
        }
      });
    }

    picker.addEventListener("change", () => { Array.from(picker.files).forEach(add); picker.value = ""; });
    ["dragenter", "dragover"].forEach((type) => zone.addEventListener(type, (e) => { e.preventDefault(); zone.classList.add("over"); }));
    ["dragleave", "drop"].forEach((type) => zone.addEventListener(type, () => zone.classList.remove("over")));
    zone.addEventListener("drop", (e) => {
      e.preventDefault();
      Array.from(e.dataTransfer.files).forEach(add);
    });
  }

  // ---------------------------------------------------------------------------------------- start
  document.addEventListener("DOMContentLoaded", () => {
    localTimes();
    setUpCopy();
    setInterval(() => localTimes(), 30000);
    const log = document.getElementById("log");
    if (log && log.dataset.stream) followLog(log);
    setUpUploads();
    // A form sent back with errors: its summary takes focus, so the first thing read is what to fix.
    const summary = document.querySelector("[data-focus-on-load]");
    if (summary) summary.focus();
    // An input's browser: a chosen file or folder goes into its field, and the browser closes.
    document.body.addEventListener("click", (e) => {
      const pick = e.target.closest("[data-pick]");
      if (!pick) return;
      const field = document.getElementById(pick.dataset.target || "");
      if (!field) return;
      field.value = pick.dataset.pick;
      field.dispatchEvent(new Event("change", { bubbles: true }));
      const details = pick.closest("details");
      if (details) details.open = false;
      field.focus();
    });
    document.body.addEventListener("htmx:configRequest", (e) => { e.detail.headers["X-CSRF-Token"] = csrfToken(); });
    // A polled table is not swapped while a confirmation in it is open or focus is inside it.
    document.body.addEventListener("htmx:beforeRequest", (e) => {
      const elt = e.detail.elt;
      const busy = elt.querySelector("details[open]") || elt.querySelector("input[type=checkbox]:checked") || elt.contains(document.activeElement);
      if (elt.hasAttribute("data-poll-pauses") && busy) {
        e.preventDefault();
      }
    });
    document.body.addEventListener("htmx:afterSwap", (e) => { localTimes(e.detail.elt.parentNode || document); setUpCopy(); });
  });
})();
