// One row per call in the live feed. A call can reach the page twice: rendered with the page while it
// was still running, then again from the live feed when it finished (or in the catch-up after connecting).
// Rows are newest first and carry the call's id, so the first row with an id is the current one.
(function () {
  function dedupe() {
    var seen = {};
    document.querySelectorAll("#feed-rows tr[id]").forEach(function (row) {
      if (seen[row.id]) {
        row.remove();
      } else {
        seen[row.id] = true;
      }
    });
  }
  document.addEventListener("htmx:sseMessage", dedupe);
  document.addEventListener("htmx:afterSettle", dedupe);
})();
