// Darkroom /ui. Plain JS, no build step. Loaded in <head> so the chosen theme applies
// before the first paint; everything else waits for the document.
(function () {
  "use strict";
  var root = document.documentElement;
  var stored = null;
  try { stored = localStorage.getItem("darkroom-theme"); } catch (e) { /* private mode */ }
  if (stored === "dark" || stored === "light") root.setAttribute("data-theme", stored);

  var FINAL = ["succeeded", "failed", "partially_failed", "cancelled"];

  function currentTheme() {
    var set = root.getAttribute("data-theme");
    if (set) return set;
    return window.matchMedia && window.matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light";
  }

  function toggleTheme() {
    var next = currentTheme() === "dark" ? "light" : "dark";
    root.setAttribute("data-theme", next);
    try { localStorage.setItem("darkroom-theme", next); } catch (e) { /* private mode */ }
  }

  // Moves a progress bar, its percentage and its counts to `counts` (the API's shape).
  function showCounts(box, counts, status, cost) {
    if (!box || !counts) return;
    var total = counts.total || 0;
    var done = (counts.succeeded || 0) + (counts.failed || 0) + (counts.cancelled || 0);
    var pct = total ? Math.floor(100 * done / total) : 100;
    ["succeeded", "failed", "cancelled"].forEach(function (name) {
      var bar = box.querySelector('[data-bar="' + name + '"]');
      if (bar) bar.style.width = (total ? 100 * (counts[name] || 0) / total : 0) + "%";
    });
    var progress = box.querySelector("[data-progress]");
    if (progress) progress.setAttribute("aria-valuenow", String(pct));
    var label = box.querySelector("[data-pct]");
    if (label) label.textContent = pct + "%";
    Object.keys(counts).forEach(function (name) {
      var el = box.querySelector('[data-count="' + name + '"]');
      if (el) el.textContent = String(counts[name]);
    });
    if (status) {
      box.setAttribute("data-status", status);
      var badge = box.querySelector("[data-status-label]");
      if (badge) {
        badge.textContent = status.replace(/_/g, " ");
        badge.className = "status status-" + status;
      }
    }
    if (typeof cost === "number") {
      var costEl = box.querySelector("[data-cost]");
      if (costEl) costEl.textContent = "$" + cost.toFixed(4);
    }
  }

  var latestFetch = {};  // job id -> number of its newest tile request

  function refreshTile(jobId) {
    var old = document.getElementById("job-" + jobId);
    if (!old) return;
    var mine = (latestFetch[jobId] || 0) + 1;
    latestFetch[jobId] = mine;
    fetch("/ui/jobs/" + encodeURIComponent(jobId) + "/tile", { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (!html || latestFetch[jobId] !== mine) return;  // a newer answer is coming
        var holder = document.createElement("div");
        holder.innerHTML = html.trim();
        var fresh = holder.firstElementChild;
        var current = document.getElementById("job-" + jobId);
        if (fresh && current) current.replaceWith(fresh);
      })
      .catch(function () { /* the next event tries again */ });
  }

  function updateButtons(box, counts, status) {
    var retry = document.getElementById("retry");
    var cancel = document.getElementById("cancel");
    if (retry && counts) retry.disabled = !(counts.failed > 0);
    if (cancel && status) cancel.disabled = FINAL.indexOf(status) >= 0;
  }

  // The batch page: one EventSource; `batch` moves the bar, `job` swaps the job's tile.
  function watchBatch(box) {
    var url = box.getAttribute("data-events");
    if (!url || !window.EventSource) return;
    var source = new EventSource(url);
    source.addEventListener("batch", function (e) {
      var data;
      try { data = JSON.parse(e.data); } catch (err) { return; }
      var counts = data.counts || data;
      showCounts(box, counts, data.status, data.cost_usd);
      updateButtons(box, counts, data.status);
      if (data.status && FINAL.indexOf(data.status) >= 0) source.close();
    });
    source.addEventListener("job", function (e) {
      var data;
      try { data = JSON.parse(e.data); } catch (err) { return; }
      var id = data.id || data.job_id || (data.job && data.job.id);
      var tile = id && document.getElementById("job-" + id);
      // Only tiles on this page, and only when what they show changed.
      if (tile && tile.getAttribute("data-status") !== data.status) refreshTile(id);
    });
  }

  // The list page: one request for every batch still running, every two seconds.
  function watchList(list) {
    function active() {
      return Array.prototype.filter.call(list.querySelectorAll("[data-batch]"), function (row) {
        return FINAL.indexOf(row.getAttribute("data-status")) < 0;
      });
    }
    function tick() {
      var rows = active();
      if (!rows.length) return;
      var query = rows.map(function (row) {
        return "id=" + encodeURIComponent(row.getAttribute("data-batch"));
      }).join("&");
      fetch("/ui/batches/progress?" + query, { credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (body) {
          if (body && body.batches) {
            rows.forEach(function (row) {
              var b = body.batches[row.getAttribute("data-batch")];
              if (b) showCounts(row, b.counts, b.status, b.cost_usd);
            });
          }
        })
        .catch(function () { /* try again next tick */ })
        .then(function () { setTimeout(tick, 2000); });
    }
    setTimeout(tick, 1000);
  }

  function openViewer(link) {
    var viewer = document.getElementById("viewer");
    if (!viewer || typeof viewer.showModal !== "function") return false;
    document.getElementById("viewer-image").src = link.getAttribute("data-open");
    document.getElementById("viewer-image").alt = link.getAttribute("data-caption") || "";
    document.getElementById("viewer-caption").textContent = link.getAttribute("data-caption") || "";
    viewer.showModal();
    return true;
  }

  document.addEventListener("DOMContentLoaded", function () {
    var toggle = document.getElementById("theme-toggle");
    if (toggle) toggle.addEventListener("click", toggleTheme);
    var box = document.getElementById("batch");
    if (box && FINAL.indexOf(box.getAttribute("data-status")) < 0) watchBatch(box);
    var list = document.getElementById("batches");
    if (list) watchList(list);
    document.addEventListener("click", function (e) {
      var link = e.target.closest && e.target.closest("[data-open]");
      if (link && openViewer(link)) e.preventDefault();
      var viewer = document.getElementById("viewer");
      if (viewer && e.target === viewer) viewer.close();  // a click on the backdrop
    });
    document.addEventListener("submit", function (e) {
      var message = e.target.getAttribute && e.target.getAttribute("data-confirm");
      if (message && !window.confirm(message)) e.preventDefault();
    });
  });
})();
