/* demolab live demo page. All user-supplied text goes through textContent, never HTML. */
(function () {
  "use strict";
  var body = document.body;
  var maxUpload = parseInt(body.getAttribute("data-max-upload-bytes"), 10);
  var codecSelect = document.getElementById("codec");
  codecSelect.value = body.getAttribute("data-default-codec") || "vp8";

  var WINDOW_MS = 60 * 1000;
  var samples = [];
  window.demolab = { samples: samples, announcements: [], played: [] };

  var plot = $.plot("#cpu", [[]], {
    series: { lines: { show: true, lineWidth: 2, fill: 0.25 }, color: "#1f77b4", shadowSize: 0 },
    xaxis: { mode: "time", timeBase: "milliseconds", timeformat: "%H:%M:%S", minTickSize: [10, "second"] },
    yaxis: { min: 0, max: 100, autoScale: "none" },
    grid: { borderWidth: 1, margin: { left: 14, top: 8 } }
  });

  function addSample(s) {
    samples.push([s.t, s.usage]);
    var cutoff = s.t - WINDOW_MS;
    while (samples.length && samples[0][0] < cutoff) { samples.shift(); }
  }

  function redraw() {
    plot.setData([samples]);
    plot.setupGrid(true);
    plot.draw();
  }

  var setStatus = function (text, kind) {
    var el = document.getElementById("status");
    el.textContent = text;
    el.className = kind || "";
  };

  var player = document.getElementById("player");
  var nowPlaying = document.getElementById("now-playing");
  function play(video) {
    nowPlaying.textContent = video.filename + (video.uploader ? " (by " + video.uploader + ")" : "");
    player.src = video.url;
    var p = player.play();
    if (p && p.catch) { p.catch(function () { /* autoplay refused: controls remain */ }); }
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

  var progress = document.getElementById("progress");
  var currentJob = null;
  socket.on("progress", function (p) {
    if (p.job !== currentJob) { return; }
    progress.value = p.percent;
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
    setStatus("Uploading " + file.name + "…", "");
    fetch("/upload", { method: "POST", body: form }).then(function (r) {
      return r.json().catch(function () { return { error: "HTTP " + r.status }; })
        .then(function (data) { return { status: r.status, data: data }; });
    }).then(function (res) {
      if (res.status === 202) {
        currentJob = res.data.job;
        setStatus("Transcoding " + res.data.filename + "…", "");
        var early = finished[currentJob];
        if (early) { delete finished[currentJob]; early[0](early[1]); }
      } else {
        setStatus(res.data.error || ("Upload failed: HTTP " + res.status), "error");
      }
    }).catch(function (err) {
      setStatus("Upload failed: " + err, "error");
    });
  });
}());
