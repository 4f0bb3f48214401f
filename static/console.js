// The console's overview refreshes itself. Every few seconds it asks the server for
// the live parts of the page (the very HTML a reload would give) and puts in those
// that changed, except a part the manager is using (the focus or the pointer is in
// it): a button never moves from under a click. Without JavaScript the page has a
// Refresh link. No inline script: the Content-Security-Policy allows none.
(function () {
  "use strict";
  var root = document.querySelector("[data-live-url]");
  if (!root || !window.fetch) {
    return;
  }
  var url = root.getAttribute("data-live-url");
  var every = Math.max(2, Number(root.getAttribute("data-live-every")) || 5) * 1000;
  var status = document.getElementById("live-status");
  var pointer = null;
  var last = {};
  var timer = null;

  document.addEventListener("pointerover", function (event) { pointer = event.target; });
  document.documentElement.addEventListener("pointerleave", function () { pointer = null; });

  function inUse(element) {
    var active = document.activeElement;
    return (active && active !== document.body && element.contains(active)) ||
      (pointer !== null && element.contains(pointer));
  }

  function say(text) {
    if (status) {
      status.textContent = text;
    }
  }

  function schedule() {
    clearTimeout(timer);
    timer = setTimeout(refresh, every);
  }

  function refresh() {
    if (document.hidden) {
      schedule();
      return;
    }
    fetch(url, {credentials: "same-origin", cache: "no-store",
                headers: {"Accept": "application/json"}})
      .then(function (response) {
        var type = response.headers.get("Content-Type") || "";
        if (response.ok && type.indexOf("application/json") === 0) {
          return response.json();
        }
        throw new Error(response.redirected || response.status === 401 ? "signed out"
                        : "the server answered " + response.status);
      })
      .then(function (data) {
        Object.keys(data.sections).forEach(function (id) {
          var element = document.getElementById(id);
          var html = data.sections[id];
          if (element && html !== last[id] && !inUse(element)) {
            element.innerHTML = html;
            last[id] = html;
          }
        });
        say("Figures as of " + data.updated + ", refreshed every " + every / 1000 + " s.");
        schedule();
      })
      .catch(function (error) {
        if (error.message === "signed out") {
          say("Your session ended: reload the page to log in again.");
          return;
        }
        say("Could not refresh (" + error.message + "); trying again.");
        schedule();
      });
  }

  document.addEventListener("visibilitychange", function () {
    if (!document.hidden) {
      refresh();
    }
  });
  schedule();
}());
