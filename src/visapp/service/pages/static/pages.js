// VIS pages: the one script. Every page works without it; it adds two things.
// 1. A page whose body has data-refresh (work goes on) fetches itself every N seconds and swaps in its
//    [data-live] parts; when the job's state changes, it reloads. A checkbox stops it (WCAG 2.2.2).
// 2. The upload form sends its file with a progress bar, then opens the job's page (or shows the error).
(function () {
  "use strict";

  function startUpdates() {
    var seconds = Number(document.body.dataset.refresh || 0);
    var box = document.getElementById("auto-update");
    if (!seconds || !box) { return; }
    box.parentElement.hidden = false;
    var timer = window.setInterval(function () {
      if (!box.checked) { return; }
      fetch(window.location.href, { credentials: "same-origin", headers: { "Accept": "text/html" } })
        .then(function (answer) { return answer.ok ? answer.text() : null; })
        .then(function (html) {
          if (html === null) { return; }
          var fresh = new DOMParser().parseFromString(html, "text/html");
          var status = document.getElementById("status");
          var freshStatus = fresh.getElementById("status");
          if (status && freshStatus && status.dataset.state !== freshStatus.dataset.state) {
            window.location.reload();
            return;
          }
          document.querySelectorAll("[data-live][id]").forEach(function (part) {
            var replacement = fresh.getElementById(part.id);
            if (replacement) { part.innerHTML = replacement.innerHTML; }
          });
          if (!fresh.body.dataset.refresh) { window.clearInterval(timer); box.parentElement.hidden = true; }
        })
        .catch(function () { /* the next round tries again */ });
    }, seconds * 1000);
  }

  function sendWithProgress(form) {
    var bar = document.getElementById("upload-progress");
    var status = document.getElementById("upload-status");
    var errors = document.getElementById("upload-error");
    var button = form.querySelector("button[type=submit]");
    form.addEventListener("submit", function (event) {
      if (!window.FormData || !window.XMLHttpRequest) { return; }
      event.preventDefault();
      var request = new XMLHttpRequest();
      request.open("POST", form.action);
      bar.parentElement.hidden = false;
      bar.value = 0;
      button.disabled = true;
      errors.innerHTML = "";
      status.textContent = "Sending the file…";
      request.upload.addEventListener("progress", function (sent) {
        if (!sent.lengthComputable) { return; }
        bar.value = Math.round(100 * sent.loaded / sent.total);
        bar.textContent = bar.value + "%";
        if (sent.loaded === sent.total) { status.textContent = "Sent. Checking the dataset: this takes a moment…"; }
      });
      request.addEventListener("load", function () {
        if (request.status < 400) { window.location.assign(request.responseURL); return; }
        var page = new DOMParser().parseFromString(request.responseText, "text/html");
        var alert = page.querySelector("[role=alert]");
        errors.innerHTML = "";
        var shown = document.createElement("div");
        shown.className = "alert";
        shown.setAttribute("role", "alert");
        var text = document.createElement("p");
        text.textContent = alert ? alert.textContent.trim() : "The upload was refused (" + request.status + ").";
        shown.appendChild(text);
        errors.appendChild(shown);
        status.textContent = "";
        bar.parentElement.hidden = true;
        button.disabled = false;
      });
      request.addEventListener("error", function () {
        status.textContent = "The connection was lost: check it and send the file again.";
        button.disabled = false;
      });
      request.send(new FormData(form));
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    startUpdates();
    var form = document.getElementById("upload-form");
    if (form) { sendWithProgress(form); }
  });
})();
