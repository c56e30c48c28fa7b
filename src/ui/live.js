// Live updates for Ferry's pages: the server sends an event when something in this namespace changes, and
// the page fetches itself again and swaps its <main>. No timers: nothing happens until the cluster changes.
// Without JavaScript the pages are complete as served.
(function () {
  "use strict";
  var ns = document.body.getAttribute("data-live");
  if (!ns || !window.EventSource || !window.fetch || !window.DOMParser) return;
  var dot = document.getElementById("live");
  var busy = false, again = false;
  function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    fetch(window.location.href, { credentials: "same-origin", cache: "no-store" })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (text) {
        if (!text) return;
        var fresh = new DOMParser().parseFromString(text, "text/html").querySelector("main");
        var main = document.querySelector("main");
        if (fresh && main) {
          main.replaceWith(fresh);
          document.body.setAttribute("data-updated", String(Date.now()));
        }
      })
      .catch(function () {})
      .then(function () {
        busy = false;
        if (again) { again = false; refresh(); }
      });
  }
  var source = new EventSource("/live/" + encodeURIComponent(ns));
  source.addEventListener("change", refresh);
  source.onopen = function () { if (dot) dot.className = "live on"; };
  source.onerror = function () { if (dot) dot.className = "live off"; };
})();
