// Image viewer: scroll through the images of one series (wheel, arrow keys, slider, buttons; on phones swipe
// left/right and pinch to zoom). Images are JPEGs rendered by the server; each is fetched once and kept, so
// scrolling back costs nothing.
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
  var fitted = false;

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
    // The stage takes the height left below it in the window (the whole image is visible without scrolling
    // the page, at any window size), then the picture fills the stage keeping its proportions.
    var top = stage.getBoundingClientRect().top + window.pageYOffset;
    var spare = stage.parentNode.getBoundingClientRect().bottom - stage.getBoundingClientRect().bottom;
    stage.style.height = Math.max(200, Math.floor(window.innerHeight - top - spare - 8)) + "px";
    var scale = Math.min(stage.clientWidth / canvas.width, stage.clientHeight / canvas.height);
    canvas.style.width = Math.floor(canvas.width * scale) + "px";
    canvas.style.height = Math.floor(canvas.height * scale) + "px";
  }

  function draw(img) {
    if (!fitted || canvas.width !== img.naturalWidth || canvas.height !== img.naturalHeight) {
      canvas.width = img.naturalWidth;
      canvas.height = img.naturalHeight;
      fit();
      fitted = true;
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
  // Keys work as soon as the page is open (no click on the image first), but never while the user types in a
  // field or moves the slider or the contrast list, which handle their own keys.
  document.addEventListener("keydown", function (event) {
    var target = event.target;
    if (event.defaultPrevented || event.altKey || event.ctrlKey || event.metaKey) { return; }
    if (target && (target.isContentEditable || /^(INPUT|SELECT|TEXTAREA)$/.test(target.tagName))) { return; }
    var moves = { ArrowDown: 1, ArrowRight: 1, PageDown: 5, ArrowUp: -1, ArrowLeft: -1, PageUp: -5 };
    if (event.key in moves) { event.preventDefault(); show(current + moves[event.key]); }
    if (event.key === "Home") { event.preventDefault(); show(0); }
    if (event.key === "End") { event.preventDefault(); show(uids.length - 1); }
  });

  // Touch: a swipe to the left shows the next image, to the right the previous one; two fingers pinch to zoom
  // (then one finger moves the enlarged image); a double tap goes back to the whole image.
  var zoom = 1, panX = 0, panY = 0, gesture = null, lastTap = 0;
  function place() {
    canvas.style.transform = zoom === 1 ? "" : "translate(" + panX + "px, " + panY + "px) scale(" + zoom + ")";
    root.setAttribute("data-zoom", zoom.toFixed(2));
  }
  function spread(touches) {
    return Math.hypot(touches[0].clientX - touches[1].clientX, touches[0].clientY - touches[1].clientY);
  }
  stage.addEventListener("touchstart", function (event) {
    var t = event.touches;
    if (t.length === 2) {
      gesture = { kind: "pinch", spread: spread(t), zoom: zoom };
    } else if (t.length === 1) {
      gesture = { kind: zoom > 1 ? "pan" : "swipe", x: t[0].clientX, y: t[0].clientY, panX: panX, panY: panY };
    }
    event.preventDefault();
  }, { passive: false });
  stage.addEventListener("touchmove", function (event) {
    var t = event.touches;
    event.preventDefault();
    if (!gesture) { return; }
    if (gesture.kind === "pinch" && t.length === 2) {
      zoom = Math.max(1, Math.min(8, gesture.zoom * spread(t) / Math.max(1, gesture.spread)));
      if (zoom === 1) { panX = 0; panY = 0; }
      place();
    } else if (gesture.kind === "pan" && t.length === 1) {
      panX = gesture.panX + t[0].clientX - gesture.x;
      panY = gesture.panY + t[0].clientY - gesture.y;
      place();
    } else if (gesture.kind === "swipe" && t.length === 1) {
      gesture.dx = t[0].clientX - gesture.x;
      gesture.dy = t[0].clientY - gesture.y;
    }
  }, { passive: false });
  stage.addEventListener("touchend", function (event) {
    if (gesture && gesture.kind === "swipe" && event.touches.length === 0) {
      var dx = gesture.dx || 0, dy = gesture.dy || 0;
      if (Math.abs(dx) >= 30 && Math.abs(dx) > Math.abs(dy)) {
        show(current + (dx < 0 ? 1 : -1));
      } else if (Math.abs(dx) < 10 && Math.abs(dy) < 10) {
        var now = Date.now();
        if (now - lastTap < 350) { zoom = 1; panX = 0; panY = 0; place(); }
        lastTap = now;
      }
    }
    gesture = event.touches.length ? gesture : null;
  });
  window.addEventListener("resize", fit);
  show(0);
})();
