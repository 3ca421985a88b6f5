// Keyboard-first rating: keys answer the question in focus, else the next unanswered one.
// Loaded as a file under the Content-Security-Policy (script-src 'self'); no inline code.
(function () {
  "use strict";

  function ratingForm() {
    return document.querySelector("form.rating-form");
  }

  function visible(fieldset) {
    return !fieldset.hidden && !fieldset.disabled;
  }

  function questions(form) {
    return Array.from(form.querySelectorAll("fieldset[data-shortcuts]")).filter(visible);
  }

  function answered(fieldset) {
    return fieldset.querySelector("input[type=radio]:checked") !== null;
  }

  function focusQuestion(fieldset) {
    const radio =
      fieldset.querySelector("input[type=radio]:checked") ||
      fieldset.querySelector("input[type=radio]");
    if (radio) {
      radio.focus();
      fieldset.scrollIntoView({ block: "nearest" });
    }
  }

  // Severity only means something once a hallucination is flagged; hidden and disabled
  // otherwise, so it is neither asked for nor submitted (the server ignores it for "none").
  function syncSeverity(form) {
    form.querySelectorAll("fieldset[data-severity-for]").forEach(function (fieldset) {
      const chosen = form.querySelector(
        'input[name="' + fieldset.dataset.severityFor + '"]:checked'
      );
      const show = chosen !== null && chosen.value !== "none";
      fieldset.hidden = !show;
      fieldset.disabled = !show;
    });
  }

  function focusNext(form) {
    const next = questions(form).find(function (fieldset) {
      return !answered(fieldset);
    });
    if (next) {
      focusQuestion(next);
    } else {
      form.querySelector("button[type=submit]").focus();
    }
  }

  function answer(form, target, key) {
    const current = target.closest ? target.closest("fieldset[data-shortcuts]") : null;
    const candidates = [];
    if (current && visible(current)) candidates.push(current);
    questions(form).forEach(function (fieldset) {
      if (fieldset !== current && !answered(fieldset)) candidates.push(fieldset);
    });
    const preference = form.querySelector("fieldset[data-preference]");
    if (preference) candidates.push(preference);
    for (const fieldset of candidates) {
      const radio = fieldset.querySelector(
        'input[type=radio][data-key="' + CSS.escape(key) + '"]'
      );
      if (radio) {
        radio.checked = true;
        syncSeverity(form);
        focusNext(form);
        return true;
      }
    }
    return false;
  }

  document.addEventListener("keydown", function (event) {
    const form = ratingForm();
    if (!form || event.altKey || event.isComposing) return;
    const target = event.target;
    // Span marking (spans.js) owns the keys in a response's text and in its popover.
    if (event.defaultPrevented || (target.closest && target.closest("[data-span-ui]"))) return;
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      form.requestSubmit();
      return;
    }
    if (event.ctrlKey || event.metaKey) return;
    if (target.matches && target.matches("textarea, input[type=text], select")) return;
    if (event.key === "Enter") {
      if (target.matches && target.matches("a, button")) return;
      if (!form.contains(target) && target !== document.body) return;
      event.preventDefault();
      form.requestSubmit();
      return;
    }
    if (event.key.length === 1 && answer(form, target, event.key.toLowerCase())) {
      event.preventDefault();
    }
  });

  document.addEventListener("change", function (event) {
    const form = ratingForm();
    if (form && form.contains(event.target)) syncSeverity(form);
  });

  // On load the first unanswered question has focus; on an edit (all answered) the first
  // question does, so a changed score is one key press away.
  function start() {
    const form = ratingForm();
    if (!form) return;
    syncSeverity(form);
    const all = questions(form);
    if (all.length && all.every(answered)) {
      focusQuestion(all[0]);
    } else {
      focusNext(form);
    }
  }

  // With no history cache (historyCacheSize 0: rated items stay out of localStorage), Back
  // would fetch the item as an htmx request and get only the partial, losing the page around
  // it; load the whole page instead.
  document.addEventListener("htmx:historyCacheMiss", function (event) {
    event.preventDefault();
    window.location.reload();
  });

  // A failed submit (database restarting: 503; network gone) swaps nothing, so every answer
  // stays in the form; say so beside the button, so the rater sends the same form again.
  const RETRY_FALLBACK =
    "The server is briefly unavailable. Nothing you entered was lost: " +
    "submit again in a few seconds.";

  function retryNotice(form) {
    let notice = form.querySelector("[data-retry-notice]");
    if (!notice) {
      notice = document.createElement("p");
      notice.className = "error";
      notice.setAttribute("role", "alert");
      notice.dataset.retryNotice = "";
      form.querySelector("button[type=submit]").before(notice);
    }
    return notice;
  }

  function serverMessage(xhr) {
    // The 503 page carries the server's own words; read as text, never run or inserted as HTML.
    if (!xhr || xhr.status !== 503 || !xhr.responseText) return RETRY_FALLBACK;
    const page = new DOMParser().parseFromString(xhr.responseText, "text/html");
    const message = page.querySelector("main p");
    return message && message.textContent.trim() ? message.textContent.trim() : RETRY_FALLBACK;
  }

  function failedSubmit(event) {
    const form = ratingForm();
    if (!form || event.detail.elt !== form) return;
    const xhr = event.detail.xhr;
    if (event.type === "htmx:responseError" && xhr && xhr.status < 500) return;
    retryNotice(form).textContent = serverMessage(xhr);
  }

  document.addEventListener("htmx:responseError", failedSubmit);
  document.addEventListener("htmx:sendError", failedSubmit);
  document.addEventListener("htmx:beforeRequest", function (event) {
    const form = ratingForm();
    const notice = form && form.querySelector("[data-retry-notice]");
    if (notice && event.detail.elt === form) notice.remove();
  });

  document.addEventListener("DOMContentLoaded", start);
  document.addEventListener("htmx:afterSettle", start);
})();
