/* /lab: the lab at a glance, live over Socket.IO. Every text goes through textContent. */
(function () {
  "use strict";
  var state = { firstTileAt: null, joined: false, proxyUpdates: 0, readyUpdates: 0 };
  window.demolabLab = state;

  function $(id) { return document.getElementById(id); }
  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) { node.className = cls; }
    if (text !== undefined && text !== null) { node.textContent = String(text); }
    return node;
  }
  function bytes(n) {
    if (n === null || n === undefined) { return "?"; }
    var units = ["B", "KB", "MB", "GB", "TB"], i = 0;
    while (n >= 1000 && i < units.length - 1) { n /= 1000; i++; }
    return (i ? n.toFixed(1) : String(n)) + " " + units[i];
  }
  function age(seconds) {
    if (!seconds) { return "never"; }
    var s = Math.max(0, Date.now() / 1000 - seconds);
    if (s < 90) { return Math.round(s) + " s ago"; }
    if (s < 5400) { return Math.round(s / 60) + " min ago"; }
    if (s < 172800) { return Math.round(s / 3600) + " h ago"; }
    return Math.round(s / 86400) + " days ago";
  }

  function renderReady(report) {
    if (!report) { return; }
    state.readyUpdates++;
    var tiles = $("tiles");
    var fresh = document.createDocumentFragment();
    var good = 0;
    (report.services || []).forEach(function (s) {
      var tile = el("div", "tile " + (s.ok ? "ok" : "bad"));
      tile.setAttribute("data-service", s.name);
      tile.setAttribute("role", "group");
      tile.setAttribute("aria-label", s.name + (s.ok ? " ready" : " failing"));
      tile.appendChild(el("span", "state", s.ok ? "OK" : "FAIL"));
      tile.appendChild(el("div", "name", s.name));
      if (s.description) { tile.appendChild(el("div", "desc", s.description)); }
      tile.appendChild(el("div", "detail", (s.detail || []).join(", ")));
      if (!s.ok) { tile.appendChild(el("div", "hint", "try: " + (s.hint || "make lab"))); }
      if (s.ok) { good++; }
      fresh.appendChild(tile);
    });
    tiles.textContent = "";
    tiles.appendChild(fresh);
    if (state.firstTileAt === null && tiles.firstChild) { state.firstTileAt = performance.now(); }
    $("mode").textContent = "mode: " + (report.mode || "unknown");
    $("mode").className = "badge " + (report.mode === "offline" ? "badge-pass" : "badge-skip");
    $("host").textContent = report.host || "";
    var total = (report.services || []).length;
    $("ready-summary").textContent = good + "/" + total + " services ready";
    $("ready-summary").className = good === total && total ? "" : "reason";
  }

  function renderStore(store) {
    if (!store) { return; }
    var body = $("mirrors");
    body.textContent = "";
    (store.mirrors || []).forEach(function (m) {
      var row = el("tr");
      row.setAttribute("data-mirror", m.name);
      row.appendChild(el("th", "", m.name)).setAttribute("scope", "row");
      var text = m.problem ? m.problem : (m.private ? m.holds + " (private to its service)" :
        m.items + " " + m.holds);
      var holds = el("td", m.problem ? "bad" : "", text);
      row.appendChild(holds);
      row.appendChild(el("td", "", m.exists && !m.private ? bytes(m.bytes) : "-"));
      row.appendChild(el("td", "", m.exists ? age(m.newest) : "-"));
      body.appendChild(row);
    });
    var disk = store.disk || {};
    if (disk.problem) {
      $("disk").textContent = "free disk: unknown (" + disk.problem + ")";
    } else {
      $("disk").textContent = "free disk: " + bytes(disk.free) + " of " + bytes(disk.total) +
        " (" + disk.path + ")";
      $("disk").className = "disk" + (disk.free < 2e9 ? " bad" : "");
    }
  }

  function renderRehearsal(r) {
    if (!r) { return; }
    var list = $("rehearsal");
    list.textContent = "";
    if (r.problem) { $("rehearsal-summary").textContent = r.problem; return; }
    var failed = 0;
    (r.steps || []).forEach(function (s) {
      var li = el("li");
      li.setAttribute("data-step", s.name);
      var cls = s.status === "pass" ? "pass" : (s.status === "skip" ? "skip" : "fail");
      if (cls === "fail") { failed++; }
      li.appendChild(el("span", "badge badge-" + cls, s.status.toUpperCase()));
      li.appendChild(document.createTextNode(" " + s.name + (s.title ? ": " + s.title : "")));
      if (s.detail && s.status !== "pass") { li.appendChild(el("div", "muted", s.detail)); }
      list.appendChild(li);
    });
    $("rehearsal-summary").textContent = age(r.time) + ": " + (r.steps || []).length +
      " steps, " + failed + " failed, " + r.misses + " misses";
  }

  function renderProxy(p, live) {
    if (!p) { return; }
    state.proxyUpdates++;
    $("hits").textContent = p.hits;
    $("misses").textContent = p.misses;
    if (p.last_hit) { $("last-hit").textContent = "last hit: " + p.last_hit; }
    var list = $("miss-list");
    (p.new_misses || []).forEach(function (m) {
      var li = el("li", live ? "new" : "", m.method + " " + m.url + " (" + m.reason + ")");
      li.setAttribute("title", m.time + " from " + m.client);
      list.insertBefore(li, list.firstChild);
    });
    while (list.children.length > 50) { list.removeChild(list.lastChild); }
  }

  var socket = io({ transports: ["websocket", "polling"] });
  socket.on("connect", function () {
    $("conn").textContent = "live";
    socket.emit("lab_join", {}, function (answer) {
      state.joined = !!(answer && answer.ok);
      if (!state.joined) { $("conn").textContent = (answer && answer.error) || "refused"; }
    });
  });
  socket.on("disconnect", function () { $("conn").textContent = "disconnected: reconnecting…"; });
  socket.on("lab_state", function (s) {
    $("miss-list").textContent = "";
    renderReady(s.ready);
    renderStore(s.store);
    renderRehearsal(s.rehearsal);
    renderProxy(s.proxy, false);
  });
  socket.on("lab_ready", renderReady);
  socket.on("lab_store", function (s) { renderStore(s.store); renderRehearsal(s.rehearsal); });
  socket.on("lab_proxy", function (p) { renderProxy(p, true); });
})();
