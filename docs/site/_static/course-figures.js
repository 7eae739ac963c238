/* Draw the course's plotly figures with the site's one copy of plotly.js.
 * Each figure is a <div class="course-plotly"> holding its JSON in a
 * <script type="application/json" class="course-plotly-data"> (see helpers/tooling/site.py). */
(function () {
  "use strict";
  function draw(box) {
    if (box.dataset.drawn) return;
    box.dataset.drawn = "1";
    var plot = box.querySelector(".course-plotly-plot");
    var source = box.querySelector(".course-plotly-data");
    if (!plot || !source || !window.Plotly) return;
    var figure = JSON.parse(source.textContent);
    var config = Object.assign({responsive: true, displaylogo: false}, figure.config || {});
    window.Plotly.newPlot(plot, figure.data || [], figure.layout || {}, config).then(function () {
      plot.style.minHeight = "";
    });
  }
  function drawAll() {
    document.querySelectorAll(".course-plotly").forEach(draw);
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", drawAll);
  else drawAll();
})();
