// The "Blockchain requests" page. Everything shown here comes from the ledger through the MES
// database: it is put in the page as text only (textContent, attributes), never as markup.
"use strict";

(function () {
  const POLL_ACTIVE_MS = 3000;
  const POLL_IDLE_MS = 30000;
  const ACTIVE = new Set(["queued", "running"]);
  // tracked: the requests answered from this view, kept on it (with their new status) until the
  // filters change, even when they no longer match them
  // kinds: the request kinds this user may read (name, label), as the API declares them
  const state = { kind: "", kinds: [], status: "", page: 1, pageSize: 25, data: null, timer: null, tracked: new Set() };
  const $ = (id) => document.getElementById(id);

  function el(tag, props, children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value === undefined || value === null) continue;
      if (key === "text") node.textContent = String(value);
      else if (key === "className") node.className = value;
      else if (key === "onclick") node.addEventListener("click", value);
      else node.setAttribute(key, String(value));
    }
    for (const child of children || []) node.append(child);
    return node;
  }

  function shortAgent(agent) {
    const text = String(agent || "");
    return text.length > 16 ? `${text.slice(0, 8)}…${text.slice(-6)}` : text;
  }

  function formatTime(iso) {
    if (!iso) return "";
    const date = new Date(iso);
    if (Number.isNaN(date.getTime())) return String(iso);
    return date.toISOString().slice(0, 16).replace("T", " ");
  }

  // The Airflow UI's base (where this page is mounted is <base>/blockchain-requests/).
  function airflowUrl(relative) {
    return new URL(`../${relative}`, document.baseURI).toString();
  }

  // Open a page of the Airflow UI in the window around this frame (the UI's router), or here.
  function openInAirflow(event, relative) {
    const url = new URL(airflowUrl(relative));
    try {
      const top = window.top;
      if (top && top !== window && top.location.origin === url.origin) {
        event.preventDefault();
        top.history.pushState({}, "", url.pathname + url.search);
        top.dispatchEvent(new PopStateEvent("popstate", { state: {} }));
      }
    } catch (error) {
      // another origin: let the link open in this frame
    }
  }

  function runLink(run, label) {
    const text = label || run.state;
    const link = el("a", {
      href: airflowUrl(run.url),
      className: `run state-${run.state}`,
      title: `${run.dag_id} ${run.run_id}`,
      "data-testid": "run-link",
      text,
    });
    link.addEventListener("click", (event) => openInAirflow(event, run.url));
    return link;
  }

  function showMessage(text, kind) {
    const box = $("message");
    box.textContent = text || "";
    box.className = `message ${kind || "error"}`;
    box.hidden = !text;
  }

  async function api(path, options) {
    const response = await fetch(path, {
      credentials: "same-origin",
      headers: { Accept: "application/json", "Content-Type": "application/json" },
      ...options,
    });
    let body = null;
    try {
      body = await response.json();
    } catch (error) {
      body = null;
    }
    if (!response.ok) {
      let detail = body && body.detail !== undefined ? body.detail : response.statusText;
      if (typeof detail !== "string") detail = JSON.stringify(detail);
      throw new Error(`${response.status}: ${detail}`);
    }
    return body;
  }

  function confirmAction(title, text, okLabel) {
    return new Promise((resolve) => {
      const overlay = $("confirm");
      $("confirm-title").textContent = title;
      $("confirm-text").textContent = text;
      $("confirm-ok").textContent = okLabel;
      overlay.hidden = false;
      const done = (answer) => {
        overlay.hidden = true;
        $("confirm-ok").removeEventListener("click", ok);
        $("confirm-cancel").removeEventListener("click", cancel);
        resolve(answer);
      };
      const ok = () => done(true);
      const cancel = () => done(false);
      $("confirm-ok").addEventListener("click", ok);
      $("confirm-cancel").addEventListener("click", cancel);
      $("confirm-cancel").focus();
    });
  }

  function label(kind) {
    const found = state.kinds.find((known) => known.name === kind);
    return found ? found.label : `${kind} request`;
  }

  // A column's title from a field's name: "abs_action_id" -> "Abs action id".
  function title(name) {
    const text = String(name).replace(/_/g, " ");
    return text.charAt(0).toUpperCase() + text.slice(1);
  }

  async function answer(item, decision) {
    const what = label(state.kind);
    const verb = decision === "accept" ? "Accept" : "Reject";
    const sure = await confirmAction(
      `${verb} ${what}?`,
      `${verb} ${what} ${item.id} from ${item.issuing_agent}? The answer is final on the ledger.`,
      verb,
    );
    if (!sure) return;
    try {
      const run = await api(`api/requests/${state.kind}/${encodeURIComponent(item.id)}/answer`, {
        method: "POST",
        body: JSON.stringify({ decision }),
      });
      state.tracked.add(item.id);
      showMessage(`${verb}: triggered run ${run.run_id} of ${run.dag_id}; its state is in the row.`, "info");
    } catch (error) {
      showMessage(`Could not ${decision} ${item.id}: ${error.message}`);
    }
    await load();
  }

  async function syncNow() {
    const button = $("sync-now");
    button.disabled = true;
    try {
      const run = await api(`api/sync/${state.kind}`, { method: "POST", body: "{}" });
      showMessage(`Sync started: run ${run.run_id} of ${run.dag_id}.`, "info");
    } catch (error) {
      showMessage(`Could not start the sync: ${error.message}`);
    } finally {
      button.disabled = false;
    }
    await load();
  }

  function columns(data) {
    const names = ["Status", "Request", "Issuing agent", "Received (UTC)", "Answered (UTC)"];
    names.push(...data.columns.map(title));
    names.push("Answer run", "Actions");
    return names;
  }

  // A field of the kind's own: text as text, anything else as its JSON in <code>.
  function fieldCell(name, value) {
    const className = /^[a-z][a-z0-9_]*$/.test(name) ? name : undefined;
    if (value !== null && typeof value === "object") {
      const json = JSON.stringify(value);
      return el("td", { className: `mono ${className || ""}`.trim(), title: json }, [el("code", { text: json })]);
    }
    const text = value === null || value === undefined ? "" : String(value);
    return el("td", { className, title: text, text });
  }

  function renderRow(item, data) {
    const followed = !item.matches_filter;
    const cells = [
      el("td", {}, [el("span", { className: `status status-${item.status}`, text: item.status })]),
      el("td", { className: "mono", title: item.id, text: item.id.slice(0, 10) + "…" }),
      el("td", { className: "mono agent", title: item.issuing_agent, text: shortAgent(item.issuing_agent) }),
      el("td", { className: "time", title: item.received_at || "", text: formatTime(item.received_at) }),
      el("td", { className: "time", title: item.answered_at || "", text: formatTime(item.answered_at) }),
    ];
    for (const name of data.columns) cells.push(fieldCell(name, (item.fields || {})[name]));
    cells.push(el("td", {}, item.run ? [runLink(item.run)] : []));
    const actions = el("td", { className: "actions" });
    if (item.can_answer && !(item.run && ACTIVE.has(item.run.state))) {
      actions.append(
        el("button", { type: "button", className: "accept", text: "Accept", onclick: () => answer(item, "accept") }),
        el("button", { type: "button", className: "reject", text: "Reject", onclick: () => answer(item, "reject") }),
      );
    } else if (item.status === "OPEN" && !item.addressed_to_us) {
      actions.append(el("span", { className: "muted", text: "not addressed to this MES" }));
    }
    cells.push(actions);
    return el(
      "tr",
      {
        "data-request-id": item.id,
        "data-status": item.status,
        className: followed ? "followed" : undefined,
        title: followed ? "Answered from this page; no longer matches the filter" : undefined,
      },
      cells,
    );
  }

  function render(data) {
    const head = $("columns");
    head.replaceChildren(...columns(data).map((name) => el("th", { scope: "col", text: name })));
    const body = $("rows");
    if (data.items.length === 0) {
      body.replaceChildren(el("tr", {}, [el("td", { colspan: columns(data).length, className: "empty", text: "No requests." })]));
    } else {
      body.replaceChildren(...data.items.map((item) => renderRow(item, data)));
    }
    const pages = Math.max(1, Math.ceil(data.total / data.page_size));
    $("page-info").textContent = `Page ${data.page} of ${pages}`;
    $("previous").disabled = data.page <= 1;
    $("next").disabled = data.page >= pages;
    const noun = label(data.kind);
    $("summary").textContent = `${data.total} ${noun}${data.total === 1 ? "" : "s"}`;

    const lastSync = $("last-sync");
    const syncRun = $("sync-run");
    syncRun.replaceChildren();
    if (data.sync === null) {
      lastSync.textContent = "";
    } else if (data.sync.last_success) {
      lastSync.replaceChildren(
        "Last successful sync: ",
        runLink(data.sync.last_success, `${formatTime(data.sync.last_success.end_date)} UTC`),
      );
    } else {
      lastSync.textContent = "Last successful sync: never";
    }
    if (data.sync && data.sync.latest && ACTIVE.has(data.sync.latest.state)) {
      syncRun.append("sync ", runLink(data.sync.latest));
    }
    $("sync-now").hidden = !data.can.sync;
  }

  function activeRuns(data) {
    if (!data) return false;
    if (data.sync && data.sync.latest && ACTIVE.has(data.sync.latest.state)) return true;
    return data.items.some((item) => item.run && ACTIVE.has(item.run.state));
  }

  async function load() {
    clearTimeout(state.timer);
    const query = new URLSearchParams({ kind: state.kind, page: String(state.page), page_size: String(state.pageSize) });
    if (state.status) query.set("status", state.status);
    try {
      const data = await api(`api/requests?${query}`);
      for (const item of data.items) item.matches_filter = true;
      const listed = new Set(data.items.map((item) => item.id));
      const followed = [];
      for (const id of state.tracked) {
        if (listed.has(id)) continue;
        try {
          followed.push(await api(`api/requests/${state.kind}/${encodeURIComponent(id)}`));
        } catch (error) {
          state.tracked.delete(id);
        }
      }
      data.items = [...followed, ...data.items];
      state.data = data;
      render(data);
      document.body.dataset.loaded = "true";
      // what the table shows now: kind, status filter and page
      document.body.dataset.view = `${data.kind}:${data.status || ""}:${data.page}`;
    } catch (error) {
      showMessage(`Could not load the requests: ${error.message}`);
    }
    state.timer = setTimeout(load, activeRuns(state.data) ? POLL_ACTIVE_MS : POLL_IDLE_MS);
  }

  async function start() {
    try {
      state.kinds = await api("api/kinds");
    } catch (error) {
      showMessage(`Could not load the request kinds: ${error.message}`);
      return;
    }
    $("kind").replaceChildren(
      ...state.kinds.map((kind) => el("option", { value: kind.name, text: `${title(kind.label)}s` })),
    );
    if (state.kinds.length === 0) {
      showMessage("You may read no kind of request.");
      return;
    }
    const params = new URLSearchParams(window.location.search);
    const asked = state.kinds.find((kind) => kind.name === params.get("kind"));
    state.kind = (asked || state.kinds[0]).name;
    if (["OPEN", "ACCEPTED", "REJECTED"].includes(params.get("status"))) state.status = params.get("status");
    $("kind").value = state.kind;
    $("status").value = state.status;
    const onFilter = () => {
      state.kind = $("kind").value;
      state.status = $("status").value;
      state.page = 1;
      state.tracked.clear();
      showMessage("");
      const query = new URLSearchParams({ kind: state.kind });
      if (state.status) query.set("status", state.status);
      window.history.replaceState({}, "", `?${query}`);
      load();
    };
    $("kind").addEventListener("change", onFilter);
    $("status").addEventListener("change", onFilter);
    $("filters").addEventListener("submit", (event) => event.preventDefault());
    $("previous").addEventListener("click", () => {
      state.page = Math.max(1, state.page - 1);
      load();
    });
    $("next").addEventListener("click", () => {
      state.page += 1;
      load();
    });
    $("sync-now").addEventListener("click", syncNow);
    document.addEventListener("keydown", (event) => {
      if (event.key === "Escape" && !$("confirm").hidden) $("confirm-cancel").click();
    });
    load();
  }

  document.addEventListener("DOMContentLoaded", start);
})();
