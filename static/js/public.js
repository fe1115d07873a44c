// The public pages work without this file. With it:
// - times (<time data-local datetime="…">, written in the page's zone) are shown in the reader's zone,
//   with the date wherever it is another day there (a range's end, a promised update time);
// - a promised update time ([data-due]) that has passed reads as overdue, judged by the reader's clock
//   (the page may be a static file or a cached copy, written before the time passed);
// - a component group the reader opened or closed stays so when htmx refreshes the status part, and
//   keyboard focus stays on the same link or group (the refresh replaces them all; without this the
//   next Tab started again at the top of the page every 30 s);
// - a form that came back with errors puts focus on its error summary;
// - an uptime bar shows its words (which screen readers read from the list) above it on hover or tap.
(function () {
  "use strict";

  var STYLES = {
    datetime: { day: "numeric", month: "short", year: "numeric", hour: "2-digit", minute: "2-digit", hourCycle: "h23" },
    time: { hour: "2-digit", minute: "2-digit", hourCycle: "h23" },
  };

  function zonePart(locale, moment) {
    var parts = new Intl.DateTimeFormat(locale, { timeZoneName: "short" }).formatToParts(moment);
    for (var i = 0; i < parts.length; i++) {
      if (parts[i].type === "timeZoneName") {
        return parts[i].value;
      }
    }
    return "";
  }

  function zoneName(moment) {
    // en-GB names European zones (CET, BST), en-US American ones (EST, PDT); otherwise an offset.
    var name = zonePart("en-GB", moment);
    if (/^GMT[+-]/.test(name)) {
      name = zonePart("en-US", moment);
    }
    return name.replace(/^GMT(?=[+-])/, "UTC");
  }

  function sameDay(a, b) {
    return a.toDateString() === b.toDateString(); // in the reader's zone
  }

  // "end": a range's end, its date shown when it is not the start's day; "nearby": a time, its date
  // shown when it is not today.
  function styleOf(element, moment) {
    var style = element.getAttribute("data-local");
    if (style === "end") {
      var start = new Date(element.getAttribute("data-start"));
      return !isNaN(start.getTime()) && sameDay(start, moment) ? "time" : "datetime";
    }
    if (style === "nearby") {
      return sameDay(new Date(), moment) ? "time" : "datetime";
    }
    return style;
  }

  function writeLocal(element) {
    var moment = new Date(element.getAttribute("datetime"));
    var options = STYLES[styleOf(element, moment)];
    if (!options || isNaN(moment.getTime())) {
      return;
    }
    if (!element.hasAttribute("data-localised")) {
      element.title = element.textContent; // the page's own wording stays available on hover
      element.setAttribute("data-localised", "");
    }
    element.textContent = new Intl.DateTimeFormat("en-GB", options).format(moment) + " " + zoneName(moment);
  }

  function localise(root) {
    var elements = root.querySelectorAll("time[data-local]");
    for (var i = 0; i < elements.length; i++) {
      if (!elements[i].hasAttribute("data-localised")) {
        writeLocal(elements[i]);
      }
    }
    var notes = root.querySelectorAll("[data-zone-note]");
    var zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
    for (var j = 0; j < notes.length; j++) {
      notes[j].textContent = "Times are shown in your time zone" + (zone ? " (" + zone + ")." : ".");
    }
  }

  // Promised update times: "Next update by 03:09 UTC" until then, "Update overdue since 03:09 UTC" after.
  var dueTimer = null;

  function judgeDue() {
    var now = Date.now();
    var next = Infinity;
    var items = document.querySelectorAll("[data-due]");
    for (var i = 0; i < items.length; i++) {
      var item = items[i];
      var due = new Date(item.getAttribute("data-due")).getTime();
      var label = item.querySelector("[data-due-label]");
      if (isNaN(due) || !label) {
        continue;
      }
      var overdue = now > due;
      label.textContent = item.getAttribute(overdue ? "data-overdue" : "data-promise");
      item.classList.toggle("is-overdue", overdue);
      var time = item.querySelector("time[data-local]");
      if (time) {
        writeLocal(time); // "today" may have moved on since the page was written
      }
      if (!overdue) {
        next = Math.min(next, due);
      }
    }
    clearTimeout(dueTimer);
    if (items.length) {
      // Just after the next promised time, and at least every minute (a laptop waking from sleep).
      dueTimer = setTimeout(judgeDue, Math.max(250, Math.min(next - now + 250, 60000)));
    }
  }

  // Before a refresh: which groups does the reader have open, and were they opened by the server?
  var groupStates = {};

  function rememberGroups(root) {
    groupStates = {};
    var groups = root.querySelectorAll("details[id][data-default]");
    for (var i = 0; i < groups.length; i++) {
      groupStates[groups[i].id] = {
        open: groups[i].open,
        changedByReader: groups[i].open !== (groups[i].getAttribute("data-default") === "open"),
      };
    }
  }

  function restoreGroups(root) {
    var groups = root.querySelectorAll("details[id][data-default]");
    for (var i = 0; i < groups.length; i++) {
      var state = groupStates[groups[i].id];
      // A group the reader left alone follows the server (it opens when a component degrades).
      if (state && state.changedByReader) {
        groups[i].open = state.open;
      }
    }
  }

  // Before a refresh: which element inside the refreshed part has focus, described so that its new copy
  // can be found: its id, else the nearest ancestor with an id, its tag, link and text, and which of the
  // elements matching all that it is.
  var FOCUSABLE = "a[href], summary, button, input, select, textarea, [tabindex]";
  var focusKey = null;

  function describe(element, region) {
    var anchor = element.parentElement ? element.parentElement.closest("[id]") : null;
    if (anchor && !region.contains(anchor)) {
      anchor = region;
    }
    return {
      id: element.id || null,
      anchor: anchor ? anchor.id : null,
      tag: element.tagName,
      href: element.getAttribute("href"),
      text: (element.textContent || "").trim(),
    };
  }

  function matches(element, key, region) {
    var described = describe(element, region);
    return described.tag === key.tag && described.href === key.href && described.text === key.text && described.anchor === key.anchor;
  }

  function rememberFocus(region) {
    focusKey = null;
    var active = document.activeElement;
    if (!region || !active || active === document.body || !region.contains(active)) {
      return;
    }
    focusKey = describe(active, region);
    focusKey.region = region.id;
    var same = region.querySelectorAll(FOCUSABLE);
    focusKey.ordinal = 0;
    for (var i = 0; i < same.length && same[i] !== active; i++) {
      if (matches(same[i], focusKey, region)) {
        focusKey.ordinal++;
      }
    }
  }

  function restoreFocus() {
    var key = focusKey;
    focusKey = null;
    if (!key) {
      return;
    }
    var region = document.getElementById(key.region);
    var active = document.activeElement;
    if (!region || (active && active !== document.body && region.contains(active))) {
      return; // htmx already put it back (an element with an id), or the reader moved on
    }
    var target = key.id ? document.getElementById(key.id) : null;
    var candidates = region.querySelectorAll(FOCUSABLE);
    if (!target) {
      var seen = 0;
      for (var i = 0; i < candidates.length; i++) {
        if (matches(candidates[i], key, region)) {
          if (seen === key.ordinal) {
            target = candidates[i];
            break;
          }
          seen++;
        }
      }
    }
    if (!target) {
      // Its words changed (a group's status, say): the first of its kind in the same place.
      for (var j = 0; j < candidates.length && !target; j++) {
        var described = describe(candidates[j], region);
        if (described.tag === key.tag && described.href === key.href && described.anchor === key.anchor) {
          target = candidates[j];
        }
      }
    }
    if (!target) {
      // It is gone (an incident resolved, say): stay in the same part of the page, not at its top.
      target = (key.anchor && document.getElementById(key.anchor)) || region;
      if (!target.hasAttribute("tabindex") && !target.matches(FOCUSABLE)) {
        target.setAttribute("tabindex", "-1");
      }
    }
    target.focus({ preventScroll: true });
  }

  function focusErrorSummary() {
    var summary = document.querySelector("[data-error-summary]");
    if (summary) {
      summary.focus();
    }
  }

  var tip = null;
  var pointed = null;

  function showTip(bar) {
    if (!tip) {
      tip = document.createElement("div");
      tip.className = "bar-tip";
      tip.setAttribute("aria-hidden", "true"); // the words are already in the list
      document.body.appendChild(tip);
    }
    if (pointed) {
      pointed.classList.remove("is-pointed");
    }
    pointed = bar;
    bar.classList.add("is-pointed");
    tip.textContent = bar.textContent;
    tip.hidden = false;
    var box = bar.getBoundingClientRect();
    var width = tip.offsetWidth;
    var left = box.left + box.width / 2 - width / 2;
    left = Math.max(8, Math.min(left, document.documentElement.clientWidth - width - 8));
    tip.style.left = left + window.scrollX + "px";
    tip.style.top = box.top + window.scrollY - tip.offsetHeight - 8 + "px";
  }

  function hideTip() {
    if (tip) {
      tip.hidden = true;
    }
    if (pointed) {
      pointed.classList.remove("is-pointed");
      pointed = null;
    }
  }

  function barOf(target) {
    return target && target.closest ? target.closest(".bars li") : null;
  }

  document.addEventListener("mouseover", function (event) {
    var bar = barOf(event.target);
    if (bar) {
      showTip(bar);
    } else if (pointed) {
      hideTip();
    }
  });
  document.addEventListener("click", function (event) {
    var bar = barOf(event.target);
    if (bar) {
      showTip(bar); // a tap on a touch screen, where there is no hover
    } else {
      hideTip();
    }
  });
  window.addEventListener("scroll", hideTip, { passive: true });

  document.addEventListener("htmx:beforeSwap", function (event) {
    hideTip();
    rememberGroups(document);
    rememberFocus(event.detail && event.detail.target);
  });
  document.addEventListener("htmx:afterSettle", function () {
    restoreGroups(document);
    localise(document);
    judgeDue();
    restoreFocus();
  });

  function ready() {
    localise(document);
    judgeDue();
    focusErrorSummary();
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", ready);
  } else {
    ready();
  }
})();
