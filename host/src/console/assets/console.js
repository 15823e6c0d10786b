// omnigate console: progressive enhancement only; every page works without it.
// The open conversation's timeline follows new entries through server-sent events.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  var timeline = document.getElementById("timeline");
  if (!timeline || !window.EventSource) {
    return;
  }
  var source = new EventSource(timeline.dataset.events);
  source.addEventListener("entry", function (event) {
    // The server renders (and escapes) each entry with the page's own template.
    timeline.insertAdjacentHTML("beforeend", event.data);
  });
});
