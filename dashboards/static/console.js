// The console's live parts, without dependencies: an EventSource tells the page that something changed,
// the page fetches its live regions again from the server (which reads the store), countdowns tick,
// and a new red alert beeps once sound was enabled by a click (browsers require one).
(function () {
  "use strict";
  var csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";
  var status = document.getElementById("live-status");
  if (status) status.hidden = false;   // only pages with live parts load this script and show the badge
  var soundButton = document.getElementById("sound");
  var audio = null;
  var knownRed = null;   // ids of red items seen so far; null until the first read
  var pending = false, running = false;

  function redIds() {
    var ids = {};
    document.querySelectorAll('[data-urgency="red"]').forEach(function (el) { ids[el.dataset.alertId] = true; });
    return ids;
  }

  function beep() {
    if (!audio) return;
    window.beeps = (window.beeps || 0) + 1;   // how many times it sounded (the browser test reads it)
    [0, 0.35, 0.7].forEach(function (at) {
      var osc = audio.createOscillator(), gain = audio.createGain();
      osc.frequency.value = 880; gain.gain.value = 0.25;
      osc.connect(gain); gain.connect(audio.destination);
      osc.start(audio.currentTime + at); osc.stop(audio.currentTime + at + 0.2);
    });
  }

  function noticeNewRed() {
    var now = redIds();
    if (knownRed !== null && Object.keys(now).some(function (id) { return !knownRed[id]; })) beep();
    knownRed = now;
  }

  // Read whole regions again: at (re)connection, so a page that was away catches up from the store.
  function refresh() {
    if (running) { pending = true; return; }
    running = true;
    var regions = document.querySelectorAll("[data-live]");
    Promise.all(Array.prototype.map.call(regions, function (region) {
      // Keep what the operator is typing: a region holding a focused, non-empty field waits for the next change.
      var active = document.activeElement;
      if (active && region.contains(active) && active.value) { pending = true; return null; }
      return fetch(region.dataset.live, { headers: { "Accept": "text/html" }, credentials: "same-origin" })
        .then(function (r) {
          if (r.status === 401 || r.redirected) { location.reload(); return null; }
          return r.ok ? r.text() : null;
        })
        .then(function (html) { if (html !== null) { region.innerHTML = html; } });
    })).catch(function () { pending = true; }).then(function () {
      running = false;
      tick(); noticeNewRed();
      if (pending) { pending = false; setTimeout(refresh, 250); }
    });
  }

  // One alert changed: the queue fetches that alert's card alone and puts it in its place (or takes it away);
  // an alert's own page reads itself again. The cost of an event does not grow with the queue.
  var cardsDue = {}, cardsBusy = false;

  function changed(alertId) {
    document.querySelectorAll("[data-live]").forEach(function (region) {
      if (region.dataset.cards !== undefined) { cardsDue[alertId] = true; }
      else if (region.dataset.alert === undefined || region.dataset.alert === String(alertId)) { refresh(); }
    });
    if (!cardsBusy) nextCard();
  }

  function nextCard() {
    var ids = Object.keys(cardsDue);
    if (!ids.length) { cardsBusy = false; return; }
    cardsBusy = true;
    var id = ids[0];
    delete cardsDue[id];
    fetch("/console/queue/" + id, { headers: { "Accept": "text/html" }, credentials: "same-origin" })
      .then(function (r) {
        if (r.status === 401 || r.redirected) { location.reload(); return null; }
        if (r.status === 204) return "";
        return r.ok ? r.text() : null;
      })
      .then(function (html) { if (html !== null) placeCard(id, html); })
      .catch(function () { cardsDue[id] = true; })
      .then(function () { setTimeout(nextCard, 0); });
  }

  function placeCard(id, html) {
    var list = document.querySelector("ol.queue");
    if (!list) return;
    var old = list.querySelector('li[data-alert-id="' + id + '"]');
    var active = document.activeElement;
    if (old && active && old.contains(active) && active.value) {   // the operator is typing a note here
      setTimeout(function () { changed(id); }, 1000);
      return;
    }
    if (old) old.remove();
    var holder = document.createElement("template");
    holder.innerHTML = html.trim();
    var card = holder.content.firstElementChild;
    var more = Number(list.dataset.more || 0);   // cards past the page the server drew ("show all" draws them)
    var after = card && Array.prototype.find.call(list.children, function (c) { return c.dataset.sort > card.dataset.sort; });
    if (more > 0 && (old || !after)) {
      // A card left the page, or one belongs past its end: the page and the count below it are read again.
      refresh();
      return;
    }
    if (card) list.insertBefore(card, after || null);
    if (Number(list.dataset.size) && list.children.length > Number(list.dataset.size)) refresh();   // it ran past the page
    var empty = document.querySelector(".empty");
    if (empty) empty.hidden = list.children.length > 0;
    tick(); noticeNewRed();
  }

  function fmt(s) {
    var m = Math.floor(s / 60), r = s % 60;
    return m + ":" + (r < 10 ? "0" : "") + r;
  }

  function tick() {
    var now = Date.now();
    document.querySelectorAll("[data-deadline]").forEach(function (el) {
      var left = Math.round((Number(el.dataset.deadline) - now) / 1000);
      el.classList.toggle("overdue", left < 0);
      el.textContent = left >= 0 ? "ack due in " + fmt(left) : "ack overdue by " + fmt(-left);
    });
  }

  function connect() {
    var source = new EventSource("/console/events");
    source.addEventListener("hello", function () {   // on first connect and every reconnect: catch up
      if (status) { status.textContent = "live"; status.className = "live-status on"; }
      refresh();
    });
    source.addEventListener("alert", function (ev) { changed(JSON.parse(ev.data).alert_id); });
    source.onerror = function () {
      if (status) { status.textContent = "reconnecting…"; status.className = "live-status off"; }
    };
  }

  document.addEventListener("submit", function (ev) {
    var form = ev.target;
    if (!form.hasAttribute("data-action")) return;
    ev.preventDefault();
    // Take and Acknowledge name their own route (formaction); Resolve is the form's. (The formAction property
    // would give the page's own address for a button without the attribute.)
    var own = ev.submitter && ev.submitter.getAttribute("formaction");
    var target = own ? new URL(own, location.href).href : form.action;
    var data = ev.submitter ? new FormData(form, ev.submitter) : new FormData(form);   // with the button's value
    fetch(target, { method: "POST", body: new URLSearchParams(data),
                         headers: { "X-CSRF-Token": csrf }, credentials: "same-origin" })
      .then(function (r) {
        if (!r.ok) return r.json().then(function (b) { alert(b.detail && b.detail.length ? (b.detail[0].msg || b.detail) : "Failed"); });
        if (target === form.action) form.reset();   // the change comes back as an event, which redraws what it touched
      })
      .catch(function () { alert("The server could not be reached; try again."); });
  });

  if (soundButton) {
    soundButton.addEventListener("click", function () {
      var Ctx = window.AudioContext || window.webkitAudioContext;
      if (!Ctx) { soundButton.textContent = "Sound not supported"; return; }
      audio = audio || new Ctx();
      audio.resume();
      soundButton.textContent = "Sound on for red alerts";
      soundButton.setAttribute("aria-pressed", "true");
      beep();
    });
  }

  knownRed = redIds();
  tick();
  setInterval(tick, 1000);
  connect();
})();
