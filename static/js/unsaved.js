// Keeps what people type on the staff pages (loaded by base.html; nothing happens on a page without the
// data attributes below).
//
// - data-keep-unsaved on an element that htmx swaps: text typed in its forms and not yet saved survives
//   the swap. Before htmx replaces the element, every changed field of its forms (other than the form
//   that made the request, which the server answers for) is noted by the form's action and the field's
//   name, and put back into the new form afterwards; a closed <details> around it is opened. The parts
//   an answer swaps out of band (a refusal on the incident page brings every part up to date) are kept
//   the same way. On the
//   post-mortem page, starring a line or adding an action item swaps the whole body: the sections being
//   written stay as they were, still unsaved.
// - data-unsaved-guard on a form, or any form inside data-keep-unsaved: leaving the page with unsaved
//   changes asks first (the browser's own "Leave site?" question). Submitting the form itself does not.
// - data-confirm-unsaved="question" on a link, or on a button that submits a form (the ordinary way, or
//   through htmx for an action that replaces other forms, such as Resolve): when another guarded form
//   has unsaved changes, following the link or pressing the button asks this question first, and does
//   nothing unless the answer is OK.
// - .unsaved-note inside a guarded form is shown while the form has unsaved changes.
// - data-report-unsaved on a form: its htmx request also carries `unsaved`, the data-unsaved-name of each
//   guarded form holding typed text not saved yet, so a refusal can say "save the summary first"
//   rather than "write the summary" (the post-mortem's Send for review).
//
// "Changed" means the field differs from what the server rendered (defaultValue, defaultChecked,
// defaultSelected), so text the server carried back (a form with errors) is not counted twice. Without
// JavaScript none of this runs, and every form still posts and redirects as before.
(function () {
  "use strict";

  var GUARDED = "form[data-unsaved-guard], [data-keep-unsaved] form";
  var leaving = false; // the person already said yes, or is submitting the form that holds the changes
  var submitted = null; // the form being submitted the ordinary way (its own changes are on their way)
  var kept = null; // changed fields noted before an htmx swap, put back after it

  function isField(element) {
    var type = (element.type || "").toLowerCase();
    return ["hidden", "submit", "button", "reset", "image", "file"].indexOf(type) === -1 && element.name;
  }

  function isChanged(field) {
    if (field.type === "checkbox" || field.type === "radio") {
      return field.checked !== field.defaultChecked;
    }
    if (field.tagName === "SELECT") {
      if (!field.multiple) {
        // With no option marked selected, the browser shows the first: that is the default too.
        var initial = 0;
        for (var j = 0; j < field.options.length; j++) {
          if (field.options[j].defaultSelected) {
            initial = j;
          }
        }
        return field.options.length > 0 && field.selectedIndex !== initial;
      }
      for (var i = 0; i < field.options.length; i++) {
        if (field.options[i].selected !== field.options[i].defaultSelected) {
          return true;
        }
      }
      return false;
    }
    if (field.tagName === "INPUT") {
      // The browser normalises some values (a datetime-local's seconds): compare like with like.
      var probe = document.createElement("input");
      probe.type = field.type;
      probe.value = field.defaultValue;
      return field.value !== probe.value;
    }
    return field.value !== field.defaultValue;
  }

  function changedFields(form) {
    var fields = [];
    for (var i = 0; i < form.elements.length; i++) {
      var field = form.elements[i];
      if (isField(field) && isChanged(field)) {
        fields.push(field);
      }
    }
    return fields;
  }

  function guardedForms() {
    return Array.prototype.slice.call(document.querySelectorAll(GUARDED));
  }

  function hasUnsaved(except) {
    return guardedForms().some(function (form) {
      return form !== submitted && form !== except && changedFields(form).length > 0;
    });
  }

  function showNotes() {
    guardedForms().forEach(function (form) {
      var unsaved = changedFields(form).length > 0;
      var notes = form.querySelectorAll(".unsaved-note");
      for (var i = 0; i < notes.length; i++) {
        notes[i].hidden = !unsaved;
      }
    });
  }

  function keyOf(form) {
    return form.getAttribute("hx-post") || form.getAttribute("action") || form.id || "";
  }

  // Note what was typed in the forms worth keeping inside `container`, other than `sourceForm`.
  function noteChanged(container, sourceForm) {
    kept = kept || [];
    var forms = container ? container.querySelectorAll("form") : [];
    for (var i = 0; i < forms.length; i++) {
      var form = forms[i];
      if (form === sourceForm || !form.closest("[data-keep-unsaved]")) {
        continue;
      }
      changedFields(form).forEach(function (field) {
        kept.push({
          form: keyOf(form),
          name: field.name,
          value: field.value,
          checked: field.checked,
          type: field.type,
        });
      });
    }
  }

  var swapSource = null; // the form whose request is being answered (the server answers for its fields)

  // Before htmx swaps an element holding forms worth keeping, note what was typed in them.
  document.addEventListener("htmx:beforeSwap", function (event) {
    // The element that made the request (htmx fires this event on the target, so detail.elt is that).
    var source = (event.detail.requestConfig && event.detail.requestConfig.elt) || event.detail.elt;
    swapSource = source && (source.tagName === "FORM" ? source : source.closest("form"));
    kept = [];
    noteChanged(event.detail.target, swapSource);
  });

  // The same for each part an answer swaps out of band (a refusal brings every part up to date).
  document.addEventListener("htmx:oobBeforeSwap", function (event) {
    noteChanged(event.detail.target, swapSource);
  });

  // After the swap, put it back into the new forms, and open any <details> that hides it.
  document.addEventListener("htmx:afterSwap", function () {
    swapSource = null;
    if (!kept || !kept.length) {
      kept = null;
      return;
    }
    var forms = document.querySelectorAll("[data-keep-unsaved] form");
    kept.forEach(function (saved) {
      for (var i = 0; i < forms.length; i++) {
        if (keyOf(forms[i]) !== saved.form) {
          continue;
        }
        var field = forms[i].elements.namedItem(saved.name);
        if (!field || field.length !== undefined && field.tagName !== "SELECT") {
          continue; // a radio group or a repeated name: not worth guessing
        }
        if (saved.type === "checkbox") {
          field.checked = saved.checked;
        } else {
          field.value = saved.value;
        }
        var details = field.closest("details");
        if (details) {
          details.open = true;
        }
      }
    });
    kept = null;
    showNotes();
  });

  document.addEventListener("htmx:configRequest", function (event) {
    var source = event.detail.elt;
    var form = source && (source.tagName === "FORM" ? source : source.closest("form"));
    if (!form || !form.hasAttribute("data-report-unsaved")) {
      return;
    }
    guardedForms().forEach(function (guarded) {
      var name = guarded.getAttribute("data-unsaved-name");
      var typed = changedFields(guarded).some(function (field) {
        return field.type !== "checkbox" && field.type !== "radio" && field.value.trim() !== "";
      });
      if (guarded !== form && name && typed) {
        event.detail.parameters.append("unsaved", name);
      }
    });
  });

  document.addEventListener("input", function () {
    submitted = null;
    showNotes();
  });
  document.addEventListener("change", showNotes);
  document.addEventListener("htmx:afterSettle", showNotes);

  // An ordinary submit sends the form's changes on: leaving for its answer need not ask about them.
  // (htmx cancels the submits it makes, before the event reaches the document.)
  document.addEventListener("submit", function (event) {
    if (!event.defaultPrevented) {
      submitted = event.target;
    }
  });

  document.addEventListener("click", function (event) {
    var link = event.target.closest && event.target.closest("a[data-confirm-unsaved], button[data-confirm-unsaved]");
    var own = link && link.form ? link.form : null; // a button's own form sends its text: not "unsaved"
    if (!link || !hasUnsaved(own)) {
      return;
    }
    if (window.confirm(link.getAttribute("data-confirm-unsaved"))) {
      if (!(own && own.hasAttribute("hx-post"))) {
        leaving = true; // asked already, and the page is left: the browser need not ask again
      }
    } else {
      event.preventDefault();
    }
  });

  window.addEventListener("beforeunload", function (event) {
    if (leaving || !hasUnsaved()) {
      return;
    }
    event.preventDefault();
    event.returnValue = ""; // older browsers need it set to ask
  });

  // Back from the browser's cache, the page starts over: ask again next time.
  window.addEventListener("pageshow", function () {
    leaving = false;
    submitted = null;
    showNotes();
  });
})();
