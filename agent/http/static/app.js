// liver-agent admin page: confirm dialogs and auto-refresh of server-rendered fragments.
(function () {
  "use strict";

  function bindConfirms() {
    document.querySelectorAll("form[data-confirm]").forEach(function (form) {
      if (form.dataset.bound) {
        return;
      }
      form.dataset.bound = "1";
      form.addEventListener("submit", function (event) {
        if (!window.confirm(form.getAttribute("data-confirm"))) {
          event.preventDefault();
        }
      });
    });
  }
  bindConfirms();

  var target = document.querySelector("[data-refresh-url]");
  if (!target) {
    return;
  }
  var box = document.getElementById("auto-refresh");
  var key = "liver-agent:auto-refresh";
  if (box) {
    box.checked = window.localStorage.getItem(key) !== "off";
    box.addEventListener("change", function () {
      window.localStorage.setItem(key, box.checked ? "on" : "off");
    });
  }
  var every = 1000 * Number(target.getAttribute("data-refresh-seconds") || 5);

  function finished() {
    return target.querySelector("[data-final='true']") !== null;
  }

  function tick() {
    if (finished()) {
      return;
    }
    if ((box && !box.checked) || document.hidden) {
      window.setTimeout(tick, every);
      return;
    }
    window.fetch(target.getAttribute("data-refresh-url"), {
      credentials: "same-origin",
      headers: { "Accept": "text/html" }
    }).then(function (response) {
      if (response.status === 401) {
        window.location.reload();
        return null;
      }
      return response.ok ? response.text() : null;
    }).then(function (html) {
      if (typeof html === "string") {
        target.innerHTML = html;
        bindConfirms();
      }
    }).catch(function () {
      // the agent is restarting or unreachable: try again on the next tick
    }).finally(function () {
      window.setTimeout(tick, every);
    });
  }

  window.setTimeout(tick, every);
})();
