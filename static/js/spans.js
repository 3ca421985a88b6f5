// Span marking on the rating page. Each marked span is a row of form fields under its response
// (start, end and quote, hidden; category, harm and note, editable); the server checks and stores
// them with the judgment. Offsets are counted over the text nodes of the response's text
// element, whose text the server renders character for character from the display text, so
// they are the offsets the server stores. Without this script the same rows take a quote.
//
// Mouse: select text in a response, then pick a category in the popover. Keyboard: Shift+M (or
// Tab to a response's text) starts marking; Up/Down (or k/j) move between sentences,
// Shift+Up/Down (K/J) extend over the next ones, a category's digit tags the range (the popover
// opens preset), Enter confirms, Escape cancels. On a mark, Enter edits it and Delete or
// Backspace removes it. rating.js leaves every key inside [data-span-ui] to this file.
//
// Loaded as a file under the Content-Security-Policy (script-src 'self'); no inline code, and
// text is only ever inserted as text nodes.
(function () {
  "use strict";

  const state = new WeakMap(); // text element -> {text, sentences, anchor, focus, active}
  let popover = null; // the open popover: {element, text, row, start, end, restore}
  let pointerDownIn = null; // the text element a mouse press started in
  let pointerFocus = false; // focus came from the mouse: no sentence cursor

  function ratingForm() {
    return document.querySelector("form.rating-form");
  }

  function cardOf(node) {
    return node.closest(".response-card");
  }

  function textOf(node) {
    const card = cardOf(node);
    return card ? card.querySelector("[data-span-text]") : null;
  }

  function listOf(text) {
    return cardOf(text).querySelector("[data-span-list]");
  }

  function part(row, name) {
    return row.querySelector('[data-part="' + name + '"]');
  }

  function value(row, name) {
    const input = part(row, name);
    return input ? input.value : "";
  }

  function whole(raw) {
    return /^\d+$/.test(raw) ? Number(raw) : null;
  }

  function rows(list) {
    return Array.from(list.querySelectorAll("[data-span-row]"));
  }

  function categoryClass(key) {
    return "span-cat-" + (/^[a-z][a-z0-9_]*$/.test(key) ? key : "unknown");
  }

  function categoryTitle(key) {
    const form = ratingForm();
    const option = form && form.querySelector('select[data-part="category"] option[value="' +
      CSS.escape(key) + '"]');
    return option ? option.textContent : "No category";
  }

  // The rows of a response that mark a range of its text, with what a mark shows.
  function rangeSpans(text) {
    const length = state.get(text).text.length;
    return rows(listOf(text)).flatMap(function (row) {
      const start = whole(value(row, "start"));
      const end = whole(value(row, "end"));
      if (start === null || end === null || !(start < end && end <= length)) return [];
      const category = value(row, "category");
      return [{
        row: row,
        number: row.dataset.number,
        start: start,
        end: end,
        category: category,
        label: categoryTitle(category) + ", " + (value(row, "harm") || "no") + " harm",
      }];
    });
  }

  // --- Rendering: the text as sentences and marks, as spans/rendering.py does on the server --

  function render(text) {
    const st = state.get(text);
    const spans = rangeSpans(text);
    const cuts = new Set([0, st.text.length]);
    st.sentences.forEach(function (s) { cuts.add(s[0]); cuts.add(s[1]); });
    spans.forEach(function (s) { cuts.add(s.start); cuts.add(s.end); });
    const points = Array.from(cuts).sort(function (a, b) { return a - b; });
    const fragment = document.createDocumentFragment();
    let sentence = null;
    let open = -1;
    for (let i = 0; i + 1 < points.length; i++) {
      const left = points[i];
      const right = points[i + 1];
      const index = st.sentences.findIndex(function (s) { return s[0] <= left && left < s[1]; });
      if (index !== open) {
        sentence = null;
        if (index >= 0) {
          sentence = document.createElement("span");
          sentence.className = "sentence";
          sentence.dataset.start = st.sentences[index][0];
          sentence.dataset.end = st.sentences[index][1];
          sentence.dataset.index = index;
          fragment.appendChild(sentence);
        }
        open = index;
      }
      const piece = document.createTextNode(st.text.slice(left, right));
      const covering = spans.filter(function (s) { return s.start <= left && right <= s.end; });
      if (covering.length) {
        const mark = document.createElement("mark");
        const classes = new Set(["span-mark"]);
        covering.forEach(function (s) { classes.add(categoryClass(s.category)); });
        mark.className = Array.from(classes).join(" ");
        mark.dataset.rows = covering.map(function (s) { return s.number; }).join(" ");
        mark.dataset.start = left;
        mark.dataset.end = right;
        mark.tabIndex = 0;
        mark.setAttribute("role", "button");
        const label = covering.map(function (s) { return s.label; }).join("; ");
        mark.title = label;
        mark.setAttribute("aria-label", label + ". Enter edits, Delete removes.");
        mark.appendChild(piece);
        (sentence || fragment).appendChild(mark);
      } else {
        (sentence || fragment).appendChild(piece);
      }
    }
    text.replaceChildren(fragment);
    showCursor(text);
  }

  function syncList(list) {
    const none = list.querySelector("[data-span-none]");
    if (none) none.hidden = rows(list).length > 0;
    rows(list).forEach(function (row) {
      Array.from(row.classList).forEach(function (name) {
        if (name.startsWith("span-cat-")) row.classList.remove(name);
      });
      if (value(row, "category")) row.classList.add(categoryClass(value(row, "category")));
    });
  }

  function refresh(text) {
    render(text);
    syncList(listOf(text));
  }

  // --- Offsets ----------------------------------------------------------------------------

  // Characters of the text element's text before the point (node, offset): the lengths of the
  // text nodes before it, plus the offset inside its own text node.
  function offsetIn(text, node, offset) {
    const walker = document.createTreeWalker(text, NodeFilter.SHOW_TEXT);
    let count = 0;
    if (node.nodeType === Node.TEXT_NODE) {
      let current;
      while ((current = walker.nextNode())) {
        if (current === node) return count + offset;
        count += current.data.length;
      }
      return count;
    }
    const boundary = document.createRange();
    boundary.setStart(node, offset);
    let current;
    while ((current = walker.nextNode())) {
      if (boundary.comparePoint(current, current.data.length) > 0) break;
      count += current.data.length;
    }
    return count;
  }

  // A range without the whitespace at its edges (the server trims the same way).
  function trimmed(source, start, end) {
    while (start < end && /\s/.test(source[start])) start++;
    while (end > start && /\s/.test(source[end - 1])) end--;
    return start < end ? [start, end] : null;
  }

  function selectedRange(text) {
    const selection = window.getSelection();
    if (!selection || selection.rangeCount === 0 || selection.isCollapsed) return null;
    const range = selection.getRangeAt(0);
    if (!range.intersectsNode(text)) return null;
    const st = state.get(text);
    const start = text.contains(range.startContainer)
      ? offsetIn(text, range.startContainer, range.startOffset)
      : 0;
    const end = text.contains(range.endContainer)
      ? offsetIn(text, range.endContainer, range.endOffset)
      : st.text.length;
    const found = trimmed(st.text, start, end);
    return found ? { start: found[0], end: found[1], rect: range.getBoundingClientRect() } : null;
  }

  // --- The keyboard cursor: a run of sentences --------------------------------------------

  function cursorRange(text) {
    const st = state.get(text);
    if (!st.sentences.length) return null;
    const low = Math.min(st.anchor, st.focus);
    const high = Math.max(st.anchor, st.focus);
    return { start: st.sentences[low][0], end: st.sentences[high][1] };
  }

  function showCursor(text) {
    const st = state.get(text);
    const shown = st.active || (popover !== null && popover.text === text && popover.keyboard);
    const low = Math.min(st.anchor, st.focus);
    const high = Math.max(st.anchor, st.focus);
    text.querySelectorAll(".sentence").forEach(function (sentence) {
      const index = Number(sentence.dataset.index);
      const inside = shown && index >= low && index <= high;
      sentence.classList.toggle("span-cursor", inside);
      sentence.classList.toggle("span-cursor-focus", shown && index === st.focus);
    });
  }

  function startMarking(text) {
    const st = state.get(text);
    st.active = true;
    pointerFocus = false;
    if (document.activeElement !== text) text.focus({ preventScroll: true });
    showCursor(text);
    scrollToCursor(text);
  }

  function scrollToCursor(text) {
    const focused = text.querySelector(".sentence.span-cursor-focus");
    if (focused) focused.scrollIntoView({ block: "nearest" });
  }

  function move(text, step, extend) {
    const st = state.get(text);
    if (!st.sentences.length) return;
    const next = Math.max(0, Math.min(st.sentences.length - 1, st.focus + step));
    st.focus = next;
    if (!extend) st.anchor = next;
    st.active = true;
    showCursor(text);
    scrollToCursor(text);
  }

  function stopMarking(text) {
    const st = state.get(text);
    st.active = false;
    showCursor(text);
  }

  // --- The popover ------------------------------------------------------------------------

  function defaultHarm(element) {
    const selected = element.querySelector("select[data-span-harm] option[selected]");
    return selected ? selected.value : "";
  }

  function pressCategory(element, key) {
    let found = false;
    element.querySelectorAll("[data-category]").forEach(function (button) {
      const on = button.dataset.category === key;
      button.setAttribute("aria-pressed", on ? "true" : "false");
      found = found || on;
    });
    return found;
  }

  // What the chosen harm level means, from the option's title (the page's harm scale).
  function showHarmMeaning(element) {
    const harm = element.querySelector("select[data-span-harm]");
    const option = harm.options[harm.selectedIndex];
    element.querySelector("[data-span-harm-meaning]").textContent = option ? option.title : "";
  }

  function place(element, text, rect) {
    const item = element.offsetParent || document.body;
    const box = item.getBoundingClientRect();
    const anchor = rect && (rect.width || rect.height) ? rect : text.getBoundingClientRect();
    const width = element.offsetWidth;
    const left = Math.max(0, Math.min(anchor.left - box.left, box.width - width));
    element.style.left = left + "px";
    element.style.top = anchor.bottom - box.top + 6 + "px";
  }

  function openPopover(text, options) {
    closePopover(false);
    const form = ratingForm();
    const template = form && form.querySelector("template[data-span-popover]");
    if (!template) return;
    const element = template.content.firstElementChild.cloneNode(true);
    const source = state.get(text).text;
    const quote = source.slice(options.start, options.end);
    element.querySelector("[data-span-popover-quote]").textContent =
      quote.length > 160 ? quote.slice(0, 157) + "…" : quote;
    element.setAttribute("aria-label", options.row ? "Edit a span" : "Mark a span");
    pressCategory(element, options.category || "");
    const harm = element.querySelector("select[data-span-harm]");
    harm.value = options.harm || defaultHarm(element);
    showHarmMeaning(element);
    element.querySelector("[data-span-note]").value = options.note || "";
    element.querySelector("[data-span-delete]").hidden = !options.row;
    (text.closest("#rating-item") || document.body).appendChild(element);
    place(element, text, options.rect);
    popover = {
      element: element,
      text: text,
      row: options.row || null,
      start: options.start,
      end: options.end,
      keyboard: Boolean(options.keyboard),
      restore: options.restore || null,
    };
    showCursor(text);
    const pressed = element.querySelector('[data-category][aria-pressed="true"]');
    (pressed ? harm : element.querySelector("[data-category]") || harm).focus();
  }

  function closePopover(restoreFocus) {
    if (!popover) return;
    const closing = popover;
    popover = null;
    closing.element.remove();
    showCursor(closing.text);
    if (restoreFocus) {
      const target = closing.restore && closing.restore.isConnected ? closing.restore : null;
      if (closing.keyboard || target === closing.text) {
        startMarking(closing.text);
      } else if (target) {
        target.focus({ preventScroll: true });
      }
    }
  }

  function popoverError(message) {
    const error = popover.element.querySelector("[data-span-popover-error]");
    error.textContent = message;
    error.hidden = false;
  }

  function nextNumber(list) {
    return rows(list).reduce(function (high, row) {
      return Math.max(high, Number(row.dataset.number) || 0);
    }, 0) + 1;
  }

  function newRow(list, kind) {
    const template = list.querySelector('template[data-span-template="' + kind + '"]');
    const row = template.content.firstElementChild.cloneNode(true);
    const number = nextNumber(list);
    row.dataset.number = number;
    row.querySelectorAll("[name]").forEach(function (input) {
      input.name = input.name.replace("__N__", String(number));
    });
    list.querySelector("[data-span-rows]").appendChild(row);
    return row;
  }

  function confirmPopover() {
    const open = popover;
    const pressed = open.element.querySelector('[data-category][aria-pressed="true"]');
    if (!pressed) {
      popoverError("Choose a category.");
      return;
    }
    const category = pressed.dataset.category;
    const harm = open.element.querySelector("select[data-span-harm]").value;
    const note = open.element.querySelector("[data-span-note]").value;
    const list = listOf(open.text);
    let row = open.row;
    if (!row) {
      const twice = rangeSpans(open.text).some(function (s) {
        return s.start === open.start && s.end === open.end && s.category === category;
      });
      if (twice) {
        popoverError("This text is already marked with this category.");
        return;
      }
      if (rows(list).length >= Number(list.dataset.spanMax || Infinity)) {
        popoverError("No more spans can be marked on this response.");
        return;
      }
      row = newRow(list, "range");
      part(row, "start").value = String(open.start);
      part(row, "end").value = String(open.end);
      part(row, "quote").value = state.get(open.text).text.slice(open.start, open.end);
      row.querySelector("[data-span-quote]").textContent = part(row, "quote").value;
    }
    part(row, "category").value = category;
    part(row, "harm").value = harm;
    part(row, "note").value = note;
    const selection = window.getSelection();
    if (selection) selection.removeAllRanges();
    closePopover(true);
    refresh(open.text);
  }

  function removeRow(row, text) {
    row.remove();
    refresh(text);
  }

  // The span a mark piece belongs to: the shortest of those covering it, the newest on a tie.
  function rowOfMark(mark) {
    const list = listOf(textOf(mark));
    const numbers = (mark.dataset.rows || "").split(" ");
    let best = null;
    rows(list).forEach(function (row) {
      if (numbers.indexOf(row.dataset.number) < 0) return;
      const length = whole(value(row, "end")) - whole(value(row, "start"));
      if (!best || length <= best.length) best = { row: row, length: length };
    });
    return best ? best.row : null;
  }

  function editMark(mark, keyboard) {
    const row = rowOfMark(mark);
    if (!row) return;
    openPopover(textOf(mark), {
      row: row,
      start: whole(value(row, "start")),
      end: whole(value(row, "end")),
      category: value(row, "category"),
      harm: value(row, "harm"),
      note: value(row, "note"),
      rect: mark.getBoundingClientRect(),
      keyboard: keyboard,
      restore: textOf(mark),
    });
  }

  function markFromCursor(text, category) {
    const range = cursorRange(text);
    if (!range) return;
    const focused = text.querySelector(".sentence.span-cursor-focus");
    openPopover(text, {
      start: range.start,
      end: range.end,
      category: category,
      rect: focused ? focused.getBoundingClientRect() : null,
      keyboard: true,
      restore: text,
    });
  }

  // --- Keys -------------------------------------------------------------------------------

  function typing(target) {
    return target.matches && target.matches("textarea, input[type=text], input[type=number], select");
  }

  function categoryForKey(key) {
    const form = ratingForm();
    const template = form && form.querySelector("template[data-span-popover]");
    if (!template || !/^[0-9]$/.test(key)) return null;
    const button = template.content.querySelector('[data-key="' + key + '"]');
    return button ? button.dataset.category : null;
  }

  function popoverKey(event) {
    const target = event.target;
    if (event.key === "Escape") {
      closePopover(true);
    } else if (event.key === "Enter") {
      if (target.matches("[data-span-cancel]")) {
        closePopover(true);
      } else if (target.matches("[data-span-delete]")) {
        const open = popover;
        closePopover(true);
        removeRow(open.row, open.text);
      } else {
        if (target.matches("[data-category]")) pressCategory(popover.element, target.dataset.category);
        confirmPopover();
      }
    } else if (!typing(target) && /^[0-9]$/.test(event.key)) {
      const category = categoryForKey(event.key);
      if (!category) return false;
      pressCategory(popover.element, category);
      popover.element.querySelector("select[data-span-harm]").focus();
    } else if (!typing(target) && popover.row && (event.key === "Delete" || event.key === "Backspace")) {
      const open = popover;
      closePopover(true);
      removeRow(open.row, open.text);
    } else {
      return false;
    }
    return true;
  }

  function markingKey(event, text) {
    const target = event.target;
    const key = event.key;
    const mark = target.closest("mark.span-mark");
    if (key === "ArrowDown" || key === "j" || key === "J") {
      move(text, 1, event.shiftKey);
    } else if (key === "ArrowUp" || key === "k" || key === "K") {
      move(text, -1, event.shiftKey);
    } else if (key === "Escape") {
      stopMarking(text);
      const first = cardOf(text).querySelector("fieldset[data-shortcuts] input[type=radio]");
      if (first) first.focus();
    } else if (key === "Enter") {
      if (mark) {
        editMark(mark, true);
      } else {
        state.get(text).active = true;
        markFromCursor(text, null);
      }
    } else if (mark && (key === "Delete" || key === "Backspace")) {
      const row = rowOfMark(mark);
      if (row) removeRow(row, text);
      startMarking(text);
    } else if (categoryForKey(key)) {
      state.get(text).active = true;
      markFromCursor(text, categoryForKey(key));
    } else {
      return false;
    }
    return true;
  }

  window.addEventListener(
    "keydown",
    function (event) {
      if (event.isComposing || event.altKey || event.ctrlKey || event.metaKey) return;
      const target = event.target;
      if (!target.closest) return;
      pointerFocus = false;
      let handled = false;
      if (popover && popover.element.contains(target)) {
        handled = popoverKey(event);
      } else if (target.closest("[data-span-text]")) {
        handled = markingKey(event, target.closest("[data-span-text]"));
      } else if (event.key === "M" && event.shiftKey && !typing(target)) {
        const form = ratingForm();
        const card = target.closest(".response-card");
        const text = (card && card.querySelector("[data-span-text]")) ||
          (form && form.querySelector("[data-span-text]"));
        if (text && state.has(text)) {
          startMarking(text);
          handled = true;
        }
      }
      if (handled) {
        event.preventDefault();
        event.stopPropagation();
      }
    },
    true
  );

  // --- Mouse ------------------------------------------------------------------------------

  document.addEventListener("mousedown", function (event) {
    const target = event.target;
    if (popover && !popover.element.contains(target)) closePopover(false);
    pointerDownIn = target.closest ? target.closest("[data-span-text]") : null;
    if (pointerDownIn) pointerFocus = true;
  });

  document.addEventListener("mouseup", function (event) {
    const text = pointerDownIn;
    pointerDownIn = null;
    if (!text || !state.has(text) || (popover && popover.element.contains(event.target))) return;
    const found = selectedRange(text);
    if (found) {
      openPopover(text, {
        start: found.start,
        end: found.end,
        rect: found.rect,
        restore: null,
      });
      return;
    }
    const mark = event.target.closest && event.target.closest("mark.span-mark");
    if (mark && text.contains(mark)) editMark(mark, false);
  });

  document.addEventListener("click", function (event) {
    const target = event.target;
    if (!target.closest) return;
    if (popover && popover.element.contains(target)) {
      const button = target.closest("button");
      if (!button) return;
      if (button.matches("[data-category]")) {
        pressCategory(popover.element, button.dataset.category);
        popover.element.querySelector("[data-span-ok]").focus();
      } else if (button.matches("[data-span-ok]")) {
        confirmPopover();
      } else if (button.matches("[data-span-cancel]")) {
        closePopover(true);
      } else if (button.matches("[data-span-delete]")) {
        const open = popover;
        closePopover(true);
        removeRow(open.row, open.text);
      }
      return;
    }
    const remove = target.closest("[data-span-remove]");
    if (remove) {
      const text = textOf(remove);
      removeRow(remove.closest("[data-span-row]"), text);
      if (event.detail === 0) startMarking(text);
      return;
    }
    const omission = target.closest("[data-span-add-omission]");
    if (omission) {
      const list = omission.closest("[data-span-list]");
      const row = newRow(list, "omission");
      part(row, "category").value = omission.dataset.spanAddOmission;
      syncList(list);
      (part(row, "case_field") || part(row, "note")).focus();
    }
  });

  document.addEventListener("change", function (event) {
    if (popover && event.target.matches("select[data-span-harm]")) showHarmMeaning(popover.element);
    const row = event.target.closest && event.target.closest("[data-span-row]");
    if (row) refresh(textOf(row));
  });

  document.addEventListener("focusin", function (event) {
    const target = event.target;
    const text = target.matches && target.matches("[data-span-text]") ? target : null;
    if (text && state.has(text) && !pointerFocus) {
      state.get(text).active = true;
      showCursor(text);
    }
  });

  // Tabbing out of the popover closes it, as a click elsewhere does.
  document.addEventListener("focusout", function (event) {
    const next = event.relatedTarget;
    if (popover && popover.element.contains(event.target) && next && !popover.element.contains(next)) {
      closePopover(false);
    }
  });

  document.addEventListener("focusout", function (event) {
    const text = event.target.closest && event.target.closest("[data-span-text]");
    if (!text || !state.has(text)) return;
    const next = event.relatedTarget;
    if (next && text.contains(next)) return;
    state.get(text).active = false;
    showCursor(text);
  });

  // --- Start --------------------------------------------------------------------------------

  function start() {
    const form = ratingForm();
    if (!form || form.dataset.spansReady) return;
    const texts = form.querySelectorAll("[data-span-text]");
    if (!texts.length) return;
    form.dataset.spansReady = "true";
    form.classList.add("spans-js");
    // The blank rows are for quoting without JavaScript; here rows are added as spans are.
    form.querySelectorAll("[data-span-blank]").forEach(function (row) { row.remove(); });
    texts.forEach(function (text) {
      const seen = new Set();
      const sentences = [];
      text.querySelectorAll(".sentence").forEach(function (sentence) {
        const start = Number(sentence.dataset.start);
        if (seen.has(start)) return;
        seen.add(start);
        sentences.push([start, Number(sentence.dataset.end)]);
      });
      sentences.sort(function (a, b) { return a[0] - b[0]; });
      state.set(text, { text: text.textContent, sentences: sentences, anchor: 0, focus: 0, active: false });
      refresh(text);
    });
  }

  document.addEventListener("htmx:beforeSwap", function () { closePopover(false); });
  document.addEventListener("DOMContentLoaded", start);
  document.addEventListener("htmx:afterSettle", start);
})();
