// omnigate console: progressive enhancement only; every page works without it.
// The open conversation's timeline follows new entries, and the conversation list new
// conversations and messages, through server-sent events. The server renders (and
// escapes) every entry and row with the page's own templates.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  if (!window.EventSource) {
    return;
  }
  var timeline = document.getElementById("timeline");
  if (timeline) {
    new EventSource(timeline.dataset.events).addEventListener("entry", function (event) {
      timeline.insertAdjacentHTML("beforeend", event.data);
    });
  }
  var rows = document.getElementById("conversation-rows");
  if (rows) {
    new EventSource(rows.dataset.events).addEventListener("row", function (event) {
      // A row replaces the one of its conversation, or goes on top when it is new.
      var parsed = document.createElement("tbody");
      parsed.innerHTML = event.data;
      var row = parsed.firstElementChild;
      if (!row) {
        return;
      }
      var old = document.getElementById(row.id);
      if (old) {
        old.replaceWith(row);
      } else {
        rows.insertBefore(row, rows.firstChild);
      }
    });
  }
});
