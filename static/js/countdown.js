// Ticks the response-clock countdowns every second between the server's htmx refreshes.
//
// Each running countdown carries data-due-at (when the target is reached) and data-warn-at (75% of
// it), both in UTC; data-breached marks a clock whose target was already missed. The server renders
// the same text, so without JavaScript the page still shows the time left when it was loaded.
(function () {
  "use strict";

  var LEVELS = ["ok", "warning", "breached"];
  var UNITS = [["d", 86400], ["h", 3600], ["min", 60], ["s", 1]];

  // The server's clock minus ours: the deadlines are the server's, the browser's clock may be off.
  var serverNow = Date.parse(document.documentElement.getAttribute("data-server-now") || "");
  var skew = isNaN(serverNow) ? 0 : serverNow - Date.now();

  // Same words as the server's `duration` filter: the two largest units, "2 h 30 min", "4 min 5 s".
  function duration(totalSeconds) {
    var total = Math.floor(Math.abs(totalSeconds));
    for (var i = 0; i < UNITS.length; i++) {
      var label = UNITS[i][0];
      var size = UNITS[i][1];
      if (total >= size || label === "s") {
        var text = Math.floor(total / size) + " " + label;
        if (i + 1 < UNITS.length) {
          var smaller = Math.floor((total % size) / UNITS[i + 1][1]);
          if (smaller) {
            text += " " + smaller + " " + UNITS[i + 1][0];
          }
        }
        return text;
      }
    }
    return "0 s";
  }

  function levelOf(element, now, remaining) {
    if (element.getAttribute("data-breached") === "true" || remaining <= 0) {
      return "breached";
    }
    var warnAt = Date.parse(element.getAttribute("data-warn-at") || "");
    return !isNaN(warnAt) && now >= warnAt ? "warning" : "ok";
  }

  function note(level, remaining) {
    if (remaining < 0) {
      return "overdue";
    }
    if (level === "breached") {
      return "left · target missed";
    }
    return level === "warning" ? "left · due soon" : "left";
  }

  function update(element, now) {
    var dueAt = Date.parse(element.getAttribute("data-due-at") || "");
    if (isNaN(dueAt)) {
      return;
    }
    var remaining = (dueAt - now) / 1000;
    var level = levelOf(element, now, remaining);
    for (var i = 0; i < LEVELS.length; i++) {
      element.classList.toggle("countdown--" + LEVELS[i], LEVELS[i] === level);
    }
    var time = element.querySelector(".countdown__time");
    var words = element.querySelector(".countdown__note");
    if (time) {
      time.textContent = duration(remaining);
    }
    if (words) {
      words.textContent = note(level, remaining);
    }
  }

  function tick() {
    var now = Date.now() + skew;
    var elements = document.querySelectorAll(".countdown[data-due-at]");
    for (var i = 0; i < elements.length; i++) {
      update(elements[i], now);
    }
  }

  tick();
  window.setInterval(tick, 1000);
  // Fresh fragments from htmx show the server's text at once; tick them without waiting a second.
  document.addEventListener("htmx:afterSettle", tick);
})();
