/* demolab live demo page. All user-supplied text goes through textContent, never HTML. */
(function () {
  "use strict";
  var body = document.body;
  var maxUpload = parseInt(body.getAttribute("data-max-upload-bytes"), 10);
  var role = body.getAttribute("data-role") || "audience";
  var audienceUrl = body.getAttribute("data-audience-url") || "";
  var codecSelect = document.getElementById("codec");
  codecSelect.value = body.getAttribute("data-default-codec") || "vp8";

  var WINDOW_MS = 60 * 1000;
  var samples = [];
  window.demolab = { samples: samples, announcements: [], played: [], uploadProgress: [],
                     firstPointMs: null, role: role };

  /* -- who may upload: the presenter's loopback page, or a device holding the token ------- */
  var TOKEN_KEY = "demolab-upload-token";
  var fromHash = /(?:^#|&)upload-token=([^&]+)/.exec(location.hash);
  if (fromHash) {
    try { sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(fromHash[1])); } catch (e) { /* private mode */ }
    history.replaceState(null, "", location.pathname + location.search);  /* out of sight */
  }
  var token = "";
  try { token = sessionStorage.getItem(TOKEN_KEY) || ""; } catch (e) { token = ""; }
  var canUpload = role === "presenter" || token !== "";
  document.getElementById("upload-box").hidden = !canUpload;
  document.getElementById("audience-note").hidden = canUpload;

  function drawQr(canvas, text) {
    if (!window.qrcode || !text) { return false; }
    var qr = window.qrcode(0, "M");
    qr.addData(text);
    qr.make();
    var count = qr.getModuleCount(), quiet = 2, size = count + 2 * quiet;
    canvas.width = size;
    canvas.height = size;
    var ctx = canvas.getContext("2d");
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, size, size);
    ctx.fillStyle = "#000";
    for (var r = 0; r < count; r++) {
      for (var c = 0; c < count; c++) {
        if (qr.isDark(r, c)) { ctx.fillRect(c + quiet, r + quiet, 1, 1); }
      }
    }
    canvas.setAttribute("data-text", text);
    return true;
  }
  if (audienceUrl) {
    document.getElementById("join-url").textContent = audienceUrl;
    drawQr(document.getElementById("join-qr"), audienceUrl);
    document.getElementById("join").hidden = false;
    var presenterToken = body.getAttribute("data-upload-token") || "";
    if (role === "presenter" && presenterToken) {
      var link = audienceUrl + "#upload-token=" + encodeURIComponent(presenterToken);
      var details = document.getElementById("presenter-device");
      details.hidden = false;
      details.addEventListener("toggle", function () {
        if (details.open) {
          document.getElementById("presenter-link").textContent = link;
          drawQr(document.getElementById("presenter-qr"), link);
        }
      });
    }
  }

  /* -- the CPU chart: fills its box, follows the window, shows the current value ---------- */
  function tickFont() {
    var style = getComputedStyle(body);
    var px = Math.round((parseFloat(style.fontSize) || 18) * 0.75);
    return { size: px, lineHeight: Math.round(px * 1.2), family: style.fontFamily,
             color: "#ffffff", fill: "#ffffff", style: "normal", variant: "normal", weight: "normal" };
  }
  var font = tickFont();
  var plot = $.plot("#cpu", [[]], {
    series: { lines: { show: true, lineWidth: 3, fill: 0.3 }, color: "#4fc3f7", shadowSize: 0 },
    xaxis: { mode: "time", timeBase: "milliseconds", timeformat: "%H:%M:%S",
             minTickSize: [15, "second"], font: font, axisLabel: "time (h:m:s)",
             autoScale: "none", axisLabelFontSizePixels: font.size },
    yaxis: { min: 0, max: 100, autoScale: "none", ticks: [0, 25, 50, 75, 100], font: font,
             tickFormatter: function (v) { return v.toFixed(0) + " %"; },
             axisLabel: "CPU %", axisLabelFontSizePixels: font.size },
    grid: { borderWidth: 1, color: "#bbbbbb", tickColor: "#444444", margin: { left: 8, top: 8, right: 12 } }
  });
  var cpuNow = document.getElementById("cpu-now");

  function addSample(s) {
    samples.push([s.t, s.usage]);
    var cutoff = s.t - WINDOW_MS;
    while (samples.length && samples[0][0] < cutoff) { samples.shift(); }
  }

  function redraw() {
    if (samples.length) {  /* always the last minute, so the time ticks are there from the start */
      var x = plot.getAxes().xaxis.options;
      x.max = samples[samples.length - 1][0];
      x.min = x.max - WINDOW_MS;
    }
    plot.setData([samples]);
    plot.setupGrid(true);
    plot.draw();
    if (samples.length) {
      cpuNow.textContent = samples[samples.length - 1][1].toFixed(0) + " %";
      if (window.demolab.firstPointMs === null) { window.demolab.firstPointMs = performance.now(); }
    }
  }

  var resizePending = false;
  function refit() {
    if (resizePending) { return; }
    resizePending = true;
    requestAnimationFrame(function () {
      resizePending = false;
      var fresh = tickFont(), axes = plot.getAxes();
      if (fresh.size !== font.size) {  /* the type follows the window's size */
        font = fresh;
        axes.xaxis.options.font = fresh;
        axes.yaxis.options.font = fresh;
        plot.clearTextCache();
      }
      plot.resize();
      plot.setupGrid(true);
      plot.draw();
    });
  }
  if (window.ResizeObserver) {
    new ResizeObserver(refit).observe(document.getElementById("cpu"));
  } else {
    window.addEventListener("resize", refit);
  }

  var setStatus = function (text, kind) {
    var el = document.getElementById("status");
    el.textContent = text;
    el.className = kind || "";
  };

  /* -- playback: with sound once the viewer has interacted, muted otherwise -------------- */
  var player = document.getElementById("player");
  var unmute = document.getElementById("unmute");
  var nowPlaying = document.getElementById("now-playing");
  var interacted = false;
  function noteInteraction() { interacted = true; }
  ["pointerdown", "keydown", "touchstart"].forEach(function (name) {
    window.addEventListener(name, noteInteraction, { capture: true, passive: true });
  });
  function showUnmute() { unmute.hidden = !player.muted; }
  unmute.addEventListener("click", function () {
    player.muted = false;
    unmute.hidden = true;
    var p = player.play();
    if (p && p.catch) { p.catch(function () { /* controls remain */ }); }
  });
  player.addEventListener("volumechange", showUnmute);

  function play(video) {
    nowPlaying.textContent = video.filename + (video.uploader ? " (by " + video.uploader + ")" : "");
    player.src = video.url;
    player.muted = !interacted;  /* sound only after a real pointer/key event on this page */
    var p = player.play();
    if (p && p.catch) {
      p.catch(function () {
        /* sound refused by the autoplay policy: play muted, offer the button */
        player.muted = true;
        var again = player.play();
        if (again && again.catch) { again.catch(function () { /* controls remain */ }); }
        showUnmute();
      });
    }
    showUnmute();
    window.demolab.played.push(video.fileid);
  }

  var list = document.getElementById("videos");
  var known = {};
  function addVideo(video, atTop) {
    if (!video || !video.fileid || known[video.fileid]) { return; }
    known[video.fileid] = true;
    var li = document.createElement("li");
    var a = document.createElement("a");
    a.textContent = video.filename || video.fileid;
    a.href = video.url;
    a.addEventListener("click", function (ev) { ev.preventDefault(); play(video); });
    li.appendChild(a);
    var info = document.createElement("span");
    var secs = typeof video.duration === "number" ? video.duration.toFixed(1) + " s" : "";
    info.textContent = " " + [secs, video.codec, video.uploader ? "by " + video.uploader : ""]
      .filter(Boolean).join(", ");
    li.appendChild(info);
    li.setAttribute("data-fileid", video.fileid);
    if (atTop && list.firstChild) { list.insertBefore(li, list.firstChild); } else { list.appendChild(li); }
  }

  fetch("/videos").then(function (r) { return r.json(); }).then(function (data) {
    (data.videos || []).forEach(function (v) { addVideo(v, false); });
  }).catch(function () { /* the list fills from announcements */ });

  var conn = document.getElementById("conn");
  var socket = io({ transports: ["websocket", "polling"] });
  socket.on("connect", function () { conn.textContent = "connected (" + socket.id + ")"; });
  socket.on("disconnect", function (reason) { conn.textContent = "disconnected: " + reason; });
  socket.on("cpu_history", function (history) {
    samples.length = 0;
    history.forEach(addSample);
    redraw();
  });
  socket.on("cpu", function (s) { addSample(s); redraw(); });
  socket.on("announce", function (msg) {
    window.demolab.announcements.push(msg);
    if (msg && msg.type === "video") {
      addVideo(msg, true);
      play(msg);
    }
  });

  /* -- upload: bytes sent (XHR upload events), then transcoding progress ----------------- */
  var progress = document.getElementById("progress");
  var progressLabel = document.getElementById("progress-label");
  var currentJob = null;
  socket.on("progress", function (p) {
    if (p.job !== currentJob) { return; }
    progress.value = p.percent;
    progressLabel.textContent = "Transcoding";
    setStatus("Transcoding " + p.filename + ": " + p.percent.toFixed(0) + " %", "");
  });
  var finished = {};  /* job → [handler, payload] that arrived before the 202 */
  function onDone(p) {
    progress.value = 100;
    setStatus("Stored " + p.filename + (p.warning ? " (" + p.warning + ")" : ""), "ok");
    addVideo(p.video, true);
    currentJob = null;
  }
  function onError(p) {
    setStatus(p.error, "error");
    currentJob = null;
  }
  socket.on("upload_done", function (p) {
    if (p.job === currentJob) { onDone(p); } else { finished[p.job] = [onDone, p]; }
  });
  socket.on("upload_error", function (p) {
    if (p.job === currentJob) { onError(p); } else { finished[p.job] = [onError, p]; }
  });

  var lastAnnounced = -10;
  function onSent(ev, file) {
    if (!ev.lengthComputable) { return; }
    var pct = 100 * ev.loaded / ev.total;
    progress.value = pct;
    window.demolab.uploadProgress.push(pct);
    if (pct - lastAnnounced >= 10 || pct >= 100) {  /* status line: every 10 %, not every event */
      lastAnnounced = pct;
      setStatus("Sending " + file.name + ": " + pct.toFixed(0) + " %", "");
    }
  }

  document.getElementById("upload-form").addEventListener("submit", function (ev) {
    ev.preventDefault();
    var file = document.getElementById("file").files[0];
    if (!file) { setStatus("Choose a video file first", "error"); return; }
    if (file.size > maxUpload) {
      setStatus(file.name + " is too large: the limit is " + maxUpload + " bytes", "error");
      return;
    }
    var form = new FormData();
    form.append("uploader", document.getElementById("uploader").value);
    form.append("codec", codecSelect.value);
    form.append("sid", socket.id || "");
    form.append("file", file, file.name);
    progress.value = 0;
    progressLabel.textContent = "Sending";
    lastAnnounced = -10;
    window.demolab.uploadProgress.length = 0;
    setStatus("Sending " + file.name + "…", "");
    var xhr = new XMLHttpRequest();
    xhr.open("POST", "/upload");
    if (token) { xhr.setRequestHeader("X-Demolab-Upload-Token", token); }
    xhr.upload.addEventListener("progress", function (e) { onSent(e, file); });
    xhr.addEventListener("load", function () {
      var data;
      try { data = JSON.parse(xhr.responseText); } catch (e) { data = { error: "HTTP " + xhr.status }; }
      if (xhr.status === 202) {
        currentJob = data.job;
        progress.value = 0;
        progressLabel.textContent = "Transcoding";
        setStatus("Transcoding " + data.filename + "…", "");
        var early = finished[currentJob];
        if (early) { delete finished[currentJob]; early[0](early[1]); }
      } else {
        setStatus(data.error || ("Upload failed: HTTP " + xhr.status), "error");
      }
    });
    xhr.addEventListener("error", function () { setStatus("Upload failed: the connection was lost", "error"); });
    xhr.send(form);
  });
}());
