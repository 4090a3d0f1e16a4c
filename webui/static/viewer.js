// Image viewer: scroll through the images of one series (wheel, arrow keys, slider, buttons).
// Images are JPEGs rendered by the server; each is fetched once and kept, so scrolling back costs nothing.
(function () {
  "use strict";
  var root = document.getElementById("viewer");
  if (!root) { return; }
  var uids = JSON.parse(document.getElementById("viewer-data").textContent);
  var urlTemplate = root.getAttribute("data-image-url");
  var canvas = document.getElementById("canvas");
  var ctx = canvas.getContext("2d");
  var slider = document.getElementById("slider");
  var counter = document.getElementById("counter");
  var info = document.getElementById("window-info");
  var windowSelect = document.getElementById("window");
  var stage = document.getElementById("stage");
  var cache = {};
  var current = 0;

  function url(uid) {
    var u = urlTemplate.replace(/SOP\.jpg$/, encodeURIComponent(uid) + ".jpg");
    var w = windowSelect.value;
    if (w) {
      var parts = w.split("/");
      u += "?wc=" + parts[0] + "&ww=" + parts[1];
    }
    return u;
  }

  function load(index) {
    var key = windowSelect.value + "|" + index;
    if (!cache[key]) {
      var img = new Image();
      cache[key] = img;
      img.decoding = "async";
      img.src = url(uids[index]);
    }
    return cache[key];
  }

  function fit() {
    // Scale the picture to fill the stage, keeping its proportions (small images are enlarged).
    var scale = Math.min(stage.clientWidth / canvas.width, stage.clientHeight / canvas.height);
    canvas.style.width = Math.floor(canvas.width * scale) + "px";
    canvas.style.height = Math.floor(canvas.height * scale) + "px";
  }

  function draw(img) {
    if (canvas.width !== img.naturalWidth || canvas.height !== img.naturalHeight) {
      canvas.width = img.naturalWidth;
      canvas.height = img.naturalHeight;
      fit();
    }
    ctx.drawImage(img, 0, 0);
  }

  function show(index) {
    if (!uids.length) { counter.textContent = "No images"; return; }
    current = Math.max(0, Math.min(uids.length - 1, index));
    slider.value = String(current + 1);
    counter.textContent = "Image " + (current + 1) + " of " + uids.length;
    root.setAttribute("data-current", String(current + 1));
    var img = load(current);
    var shown = current;
    if (img.complete && img.naturalWidth) {
      draw(img);
      root.setAttribute("data-loaded", String(shown + 1));
    } else {
      img.onload = function () {
        if (shown === current) { draw(img); root.setAttribute("data-loaded", String(shown + 1)); }
      };
      img.onerror = function () { info.textContent = "This image could not be loaded."; };
    }
    info.textContent = windowSelect.value ? "Contrast " + windowSelect.options[windowSelect.selectedIndex].text : "";
    // Fetch the neighbours ahead of time, so scrolling stays smooth.
    for (var d = 1; d <= 3; d++) {
      if (current + d < uids.length) { load(current + d); }
    }
  }

  document.getElementById("prev").addEventListener("click", function () { show(current - 1); });
  document.getElementById("next").addEventListener("click", function () { show(current + 1); });
  slider.addEventListener("input", function () { show(parseInt(slider.value, 10) - 1); });
  windowSelect.addEventListener("change", function () { show(current); });
  stage.addEventListener("wheel", function (event) {
    event.preventDefault();
    show(current + (event.deltaY > 0 ? 1 : -1));
  }, { passive: false });
  stage.addEventListener("keydown", function (event) {
    var moves = { ArrowDown: 1, ArrowRight: 1, PageDown: 5, ArrowUp: -1, ArrowLeft: -1, PageUp: -5 };
    if (event.key in moves) { event.preventDefault(); show(current + moves[event.key]); }
    if (event.key === "Home") { event.preventDefault(); show(0); }
    if (event.key === "End") { event.preventDefault(); show(uids.length - 1); }
  });
  window.addEventListener("resize", fit);
  show(0);
})();
